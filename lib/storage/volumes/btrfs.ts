/**
 * Volumes on `btrfs` pools: each a subvolume of the pool's `custom/` (holding `data/` or a block
 * volume's `root.img`) named by `btrfs.json` in the volume's directory, written before the
 * subvolume is made; `size` on a filesystem volume is a qgroup limit. Snapshots are read-only
 * subvolume snapshots, a restore a writable snapshot of one swapped in by renaming the marks.
 * A subvolume no mark names (a killed create's) is deleted by the next Host.open.
 */
import { randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import * as path from 'node:path';

import { OperationFailed } from '../../core/errors';
import { readJson, writeJsonAtomic } from '../../core/fs';
import { processAlive } from '../../core/staging';
import { createSubvolume, deleteSubvolume, enableQuota, limitSubvolume, snapshotSubvolume } from '../pools/btrfs-fs';
import { dataName, sparseFile } from './dir';
import type { VolumeBackend, VolumeContentType } from './types';

const MARK = 'btrfs.json';
/** In a restore's staging directory: the mark the volume had before the swap. */
const REPLACED = 'replaced.json';
const exists = (p: string) => fs.lstat(p).then(() => true, () => false);

interface VolumeMark {
  format: 'lxq-btrfs-volume';
  version: 1;
  subvolume: string;
}

/** A subvolume id read from a mark: a plain name lxq made, never a path. */
function checkId(id: unknown): string {
  if (typeof id !== 'string' || !/^[0-9]+-[0-9a-f]{16}$/.test(id)) throw new OperationFailed(`a volume's ${MARK} names a subvolume ${JSON.stringify(id)} lxq did not make`);
  return id;
}

export class BtrfsVolumes implements VolumeBackend {
  constructor(
    /** The pool's `custom/` directory, the pool mounted. */
    private readonly root: string,
  ) {}

  async sizeRefusal(): Promise<string | undefined> {
    const why = await enableQuota(path.dirname(this.root));
    return why === undefined ? undefined : `btrfs qgroups cannot be enabled on this pool: ${why}`;
  }

  private async mark(dir: string): Promise<string> {
    const id = `${process.pid}-${randomBytes(8).toString('hex')}`;
    await writeJsonAtomic(path.join(dir, MARK), { format: 'lxq-btrfs-volume', version: 1, subvolume: id } satisfies VolumeMark);
    return path.join(this.root, id);
  }

  private async named(dir: string): Promise<string> {
    const mark = await readJson<VolumeMark>(path.join(dir, MARK)).catch(() => undefined);
    if (!mark) throw new OperationFailed(`${dir} names no btrfs subvolume (${MARK} is missing)`);
    return path.join(this.root, checkId(mark.subvolume));
  }

  async create(dir: string, contentType: VolumeContentType, bytes: number | undefined): Promise<void> {
    const sub = await this.mark(dir);
    await createSubvolume(sub);
    if (contentType === 'block') await sparseFile(path.join(sub, dataName('block')), bytes!, true);
    else await fs.mkdir(path.join(sub, 'data'), { mode: 0o755 });
    if (contentType === 'filesystem' && bytes !== undefined) await limitSubvolume(sub, bytes);
  }

  async dataPath(dir: string, contentType: VolumeContentType): Promise<string> {
    return path.join(await this.named(dir), dataName(contentType));
  }

  async resize(dir: string, contentType: VolumeContentType, bytes: number): Promise<void> {
    const sub = await this.named(dir);
    if (contentType === 'block') await sparseFile(path.join(sub, dataName('block')), bytes, false);
    else await limitSubvolume(sub, bytes);
  }

  async snapshot(dir: string, into: string): Promise<void> {
    const from = await this.named(dir);
    await snapshotSubvolume(from, await this.mark(into), true);
  }

  async stageRestore(snapshotDir: string, staging: string): Promise<void> {
    const from = await this.named(snapshotDir);
    await snapshotSubvolume(from, await this.mark(staging), false);
  }

  /** The marks swapped: the volume's names the staged subvolume, the staging's the old one (deleted with it). */
  async applyRestore(dir: string, staging: string): Promise<void> {
    const staged = path.join(staging, MARK);
    const replaced = path.join(staging, REPLACED);
    if (await exists(staged)) {
      if (!(await exists(replaced))) await fs.copyFile(path.join(dir, MARK), replaced);
      await fs.rename(staged, path.join(dir, MARK));
    }
    if (await exists(replaced)) await fs.rename(replaced, staged);
  }

  async remove(dir: string): Promise<void> {
    if (!(await exists(path.join(dir, MARK)))) {
      // A restore's staging directory whose process died between the swap's two renames: the
      // volume names the restored subvolume, only replaced.json the old one (while the staged
      // mark is still there, replaced.json names the volume's own: it is never taken then).
      const old = await readJson<VolumeMark>(path.join(dir, REPLACED)).catch(() => undefined);
      if (old) await deleteSubvolume(path.join(this.root, checkId(old.subvolume)));
      await fs.rm(path.join(dir, REPLACED), { force: true });
      return;
    }
    await deleteSubvolume(await this.named(dir));
    await fs.rm(path.join(dir, MARK), { force: true });
  }

  /** Subvolumes of dead makers that no volume or snapshot directory names. */
  async sweep(volumesDir: string): Promise<void> {
    const candidates = (await fs.readdir(this.root).catch(() => [] as string[])).filter((n) => !processAlive(Number(n.split('-')[0])));
    if (!candidates.length) return;
    const named = new Set<string>();
    const note = async (dir: string) => {
      const mark = await readJson<VolumeMark>(path.join(dir, MARK)).catch(() => undefined);
      if (mark) named.add(String(mark.subvolume));
    };
    for (const v of await fs.readdir(volumesDir).catch(() => [] as string[])) {
      await note(path.join(volumesDir, v));
      const snaps = path.join(volumesDir, v, 'snapshots');
      for (const s of await fs.readdir(snaps).catch(() => [] as string[])) await note(path.join(snaps, s));
    }
    for (const n of candidates) if (!named.has(n)) await deleteSubvolume(path.join(this.root, n));
  }
}
