/**
 * The `btrfs` pool driver (LXD's): on a btrfs directory the host already has (`source`) or on a
 * loop file the pool makes in its own directory (`size`, LXD's loop pools), mounted at
 * `<pool>/mnt` and mounted again by the first Host.open after a reboot.
 *
 * In the pool's filesystem: `images/<key>/rootfs` is an image's tree shifted for one id map, a
 * read-only subvolume made once (as the overlay pool's shifted copies); `roots/<id>` are the
 * subvolumes of instances (writable snapshots of an image's), of their snapshots (read-only
 * snapshots) and of copies (writable snapshots): each instant, sharing every extent. A VM's
 * `roots/<id>` holds its `disk.qcow2` (see prepareDisk).
 *
 * An instance's, snapshot's or staged directory names its subvolume in `btrfs.json`, written
 * before the subvolume is made: a subvolume no such file names (its process killed, its
 * directory removed by a generic clean-up) is deleted by the next Host.open (`sweep`). The
 * instance's `rootfs/` is a bind mount of its subvolume's `rootfs/`, made when needed as an
 * overlay pool's mount is.
 */
import { randomBytes } from 'node:crypto';
import { promises as fs, type Stats, statSync } from 'node:fs';
import * as path from 'node:path';

import { InvalidArgument, OperationFailed } from '../../core/errors';
import { readJson, writeJsonAtomic } from '../../core/fs';
import { FileLock } from '../../core/lock';
import { clearStaging, isStaging, processAlive, stagingPath } from '../../core/staging';
import { parseSize } from '../../core/units';
import { resetMachineId } from '../move';
import { copyTree, copyTreeShifted, remapTreeWith } from '../tree';
import {
  bindMount,
  createSubvolume,
  deleteSubvolume,
  enableQuota,
  limitSubvolume,
  makeLoopFile,
  mountedAt,
  mountLoopFile,
  onBtrfs,
  releaseLoopDevicesUnder,
  setReadOnly,
  snapshotSubvolume,
} from './btrfs-fs';
import { imageKey } from './dir';
import { unmountUnder } from './mounts';
import type { AdoptOptions, IdRange, PoolDriver, RootImage } from './types';

/** What names a directory's subvolume. */
export const BTRFS_MARK = 'btrfs.json';
const LOOP_FILE = 'btrfs.img';
/** In an image's subvolume: the path of the image tree it copies. */
const IMAGE_SOURCE = 'source';
const MOUNT_DIR = 'mnt';
const KEYS = ['source', 'size'];
/** mkfs.btrfs's floor is about 109 MiB; a pool smaller than this holds no image anyway. */
export const MIN_LOOP_BYTES = 128 * 2 ** 20;
/** LXD's smallest default loop file; sparse, so it costs what is written. */
const DEFAULT_LOOP_BYTES = 5 * 2 ** 30;

interface BtrfsMark {
  format: 'lxq-btrfs';
  version: 1;
  /** The subvolume's name in the pool's `roots/`. */
  subvolume: string;
}

const exists = (p: string) => fs.lstat(p).then(() => true, () => false);

/** A pool's `size` key: a size of at least MIN_LOOP_BYTES. */
function loopBytes(config: Record<string, string>): number {
  if (config.size === undefined) return DEFAULT_LOOP_BYTES;
  let bytes: number;
  try {
    bytes = parseSize(config.size);
  } catch (e) {
    throw new InvalidArgument(`"size": ${(e as Error).message}`);
  }
  if (bytes < MIN_LOOP_BYTES) throw new InvalidArgument(`"size" ${JSON.stringify(config.size)} is too small for a btrfs loop pool; the smallest is 128MiB`);
  return bytes;
}

/** Refuses what cannot make a btrfs pool, naming the key; reads the host, changes nothing. */
function checkBtrfsConfig(config: Record<string, string>): void {
  for (const key of Object.keys(config)) {
    if (!KEYS.includes(key)) throw new InvalidArgument(`unknown key "${key}" for a btrfs pool; known: ${KEYS.map((k) => `"${k}"`).join(', ')}`);
  }
  if (config.source === undefined) {
    loopBytes(config);
    return;
  }
  if (config.size !== undefined) throw new InvalidArgument('"size" is the size of the loop file a btrfs pool makes; a pool on "source" has its filesystem\'s size (give one of them)');
  const source = config.source;
  if (!path.isAbsolute(source)) throw new InvalidArgument(`"source" must be an absolute path, got ${JSON.stringify(source)}`);
  let st: Stats;
  try {
    st = statSync(source);
  } catch {
    throw new InvalidArgument(`"source" ${JSON.stringify(source)} does not exist; give a directory on a btrfs filesystem, or leave "source" out for a loop file`);
  }
  if (st.isFile()) throw new InvalidArgument(`"source" ${JSON.stringify(source)} is a file that exists; lxq makes a btrfs pool's loop file itself (give "size", not "source")`);
  if (!st.isDirectory()) throw new InvalidArgument(`"source" ${JSON.stringify(source)} is not a directory`);
  if (!onBtrfs(source)) throw new InvalidArgument(`"source" ${JSON.stringify(source)} is not on a btrfs filesystem`);
}

export class BtrfsPool implements PoolDriver {
  readonly name = 'btrfs' as const;

  constructor(
    /** The pool's own directory (`<host>/storage-pools/<name>`). */
    private readonly poolDir: string,
    /** Its keys as stored (for checkConfig: those of the pool being made or changed). */
    private readonly config: Record<string, string>,
  ) {}

  /** Where the pool's filesystem is seen: `source`, or the loop file's mount. */
  private get root(): string {
    return this.config.source ?? path.join(this.poolDir, MOUNT_DIR);
  }

  private subvolume(id: string): string {
    return path.join(this.root, 'roots', id);
  }

  checkConfig(config: Record<string, string>): void {
    checkBtrfsConfig(config);
    // A pool's filesystem is made once: another source or loop size would be another pool.
    for (const key of KEYS) {
      if (config[key] !== this.config[key]) throw new InvalidArgument(`"${key}" of a btrfs pool is fixed when it is made (${JSON.stringify(this.config[key] ?? null)}); make another pool`);
    }
  }

  async setupPool(staging: string): Promise<void> {
    if (this.config.source !== undefined) return;
    await makeLoopFile(path.join(staging, LOOP_FILE), loopBytes(this.config));
    await fs.mkdir(path.join(staging, MOUNT_DIR), { mode: 0o711 });
  }

  /** The loop file mounted (once, whichever process of the host gets there first) and the pool's folders made. */
  private async ready(): Promise<void> {
    if (this.config.source === undefined && !(await mountedAt(this.root))) {
      const lock = new FileLock(path.join(this.poolDir, LOOP_FILE), `the loop file of pool ${path.basename(this.poolDir)}`);
      try {
        await lock.hold(async () => {
          if (!(await mountedAt(this.root))) await mountLoopFile(path.join(this.poolDir, LOOP_FILE), this.root);
        });
      } finally {
        await lock.close();
      }
    }
    for (const d of ['images', 'roots']) await fs.mkdir(path.join(this.root, d), { mode: 0o711 }).catch((e) => (e.code === 'EEXIST' ? undefined : Promise.reject(e)));
  }

  async openPool(instancesDir: string): Promise<void> {
    // Only when unmounted (after a reboot, or a kill within a mount): a losetup process at every Host.open otherwise.
    if (this.config.source === undefined && !(await mountedAt(this.root))) await releaseLoopDevicesUnder(this.poolDir);
    await this.ready();
    await this.sweep(instancesDir);
  }

  async destroyPool(dir: string): Promise<void> {
    if (this.config.source !== undefined) {
      // lxq's subvolumes go; the directory was the user's and stays.
      for (const d of ['images', 'roots']) {
        const top = path.join(this.config.source, d);
        for (const n of await fs.readdir(top).catch(() => [] as string[])) await deleteSubvolume(path.join(top, n));
        await fs.rmdir(top).catch(() => undefined);
      }
      return;
    }
    // Nothing is in use (the pool has no instance): the unmount releases the loop device (autoclear).
    await unmountUnder(dir);
    await releaseLoopDevicesUnder(dir);
  }

  async createRoot(dir: string, image: RootImage, ids: IdRange | null): Promise<void> {
    await this.ready();
    const from = await this.image(image.rootfs, ids);
    const id = await this.mark(dir);
    await snapshotSubvolume(from, this.subvolume(id), false);
    await fs.mkdir(path.join(dir, 'rootfs'), { mode: 0o755 });
  }

  async attachRoot(dir: string): Promise<void> {
    const rootfs = path.join(dir, 'rootfs');
    if (await mountedAt(rootfs)) return;
    await this.ready();
    await fs.mkdir(rootfs, { mode: 0o755 }).catch((e) => (e.code === 'EEXIST' ? undefined : Promise.reject(e)));
    await bindMount(path.join(this.subvolume(await this.named(dir)), 'rootfs'), rootfs, false).catch((e) => {
      throw new OperationFailed(`cannot mount the root of ${path.basename(dir)}: ${(e as Error).message}`, {}, { cause: e });
    });
  }

  async detachRoot(dir: string): Promise<void> {
    await unmountUnder(dir);
  }

  async captureRoot(dir: string, into: string): Promise<void> {
    await this.ready();
    const from = this.subvolume(await this.named(dir));
    await snapshotSubvolume(from, this.subvolume(await this.mark(into)), true);
  }

  async copyRoot(dir: string, into: string, snapshotDir?: string): Promise<void> {
    await this.ready();
    const from = this.subvolume(await this.named(snapshotDir ?? dir));
    const to = this.subvolume(await this.mark(into));
    await snapshotSubvolume(from, to, false);
    await resetMachineId(path.join(to, 'rootfs'));
    await fs.mkdir(path.join(into, 'rootfs'), { mode: 0o755 });
  }

  /** A tree from another pool copied into a fresh subvolume (read-only for a snapshot, as captureRoot makes them). */
  async adoptTree(into: string, rootfs: string, options: AdoptOptions): Promise<void> {
    await this.ready();
    const sub = this.subvolume(await this.mark(into));
    await createSubvolume(sub);
    await copyTree(rootfs, path.join(sub, 'rootfs'));
    if (options.ids) await remapTreeWith(path.join(sub, 'rootfs'), options.ids);
    if (options.fresh) await resetMachineId(path.join(sub, 'rootfs'));
    if (options.snapshot) await setReadOnly(sub, true);
    else await fs.mkdir(path.join(into, 'rootfs'), { mode: 0o755 });
  }

  async stageRestore(snapshotDir: string, staging: string): Promise<void> {
    await this.ready();
    await snapshotSubvolume(this.subvolume(await this.named(snapshotDir)), this.subvolume(await this.mark(staging)), false);
  }

  /**
   * The root comes off, the staged subvolume's name replaces the instance's (the old one's kept
   * in the staging directory until it is deleted), and the root is mounted again. Re-done after a
   * crash from whichever step it stopped at.
   */
  async applyRestore(dir: string, staging: string): Promise<void> {
    const staged = path.join(staging, BTRFS_MARK);
    const replaced = path.join(staging, 'replaced.json');
    if (await exists(staged)) {
      await this.detachRoot(dir);
      if (!(await exists(replaced))) await fs.copyFile(path.join(dir, BTRFS_MARK), replaced);
      await fs.rename(staged, path.join(dir, BTRFS_MARK));
    }
    const old = await readJson<BtrfsMark>(replaced).catch(() => undefined);
    if (old) await deleteSubvolume(this.subvolume(old.subvolume));
    await this.attachRoot(dir);
  }

  async withView<T>(dir: string, scratch: string, snapshotDir: string | undefined, read: (rootfs: string) => Promise<T>): Promise<T> {
    if (!snapshotDir) {
      await this.attachRoot(dir);
      return read(path.join(dir, 'rootfs'));
    }
    await this.ready();
    const view = path.join(scratch, 'rootfs');
    await fs.mkdir(view, { recursive: true, mode: 0o755 });
    await bindMount(path.join(this.subvolume(await this.named(snapshotDir)), 'rootfs'), view, true);
    try {
      return await read(view);
    } finally {
      await unmountUnder(scratch);
    }
  }

  async removeRoot(dir: string): Promise<void> {
    const mark = await readJson<BtrfsMark>(path.join(dir, BTRFS_MARK)).catch(() => undefined);
    if (!mark) return;
    await this.ready();
    await unmountUnder(dir);
    await deleteSubvolume(this.subvolume(checkId(mark.subvolume)));
    await fs.rm(path.join(dir, BTRFS_MARK), { force: true });
  }

  /** The image's subvolumes (one per id map): each container is a snapshot of its own, and the image store found none using it. */
  async releaseImage(imageRootfs: string): Promise<void> {
    await this.ready();
    const images = path.join(this.root, 'images');
    const key = imageKey(imageRootfs);
    for (const n of await fs.readdir(images).catch(() => [] as string[])) if (n.startsWith(`${key}-`)) await deleteSubvolume(path.join(images, n));
  }

  /**
   * A VM's disk (a qcow2 overlay over its image's disk, which stays in the image store) in a
   * subvolume of its own, `<dir>/<file>` an absolute link to it (the VM's code reads and writes
   * the disk through it). Its internal qcow2 snapshots are inside it: a copy of the subvolume
   * (instant) takes them along.
   */
  async prepareDisk(dir: string, file: string): Promise<void> {
    await this.ready();
    const sub = this.subvolume(await this.mark(dir));
    await createSubvolume(sub);
    await fs.symlink(path.join(sub, file), path.join(dir, file));
  }

  async copyDisk(dir: string, into: string, file: string): Promise<void> {
    await this.ready();
    const from = this.subvolume(await this.named(dir));
    const to = this.subvolume(await this.mark(into));
    await snapshotSubvolume(from, to, false);
    await fs.symlink(path.join(to, file), path.join(into, file));
  }

  /** qgroups turned on (once; btrfs keeps them on) where btrfs lets it: its reason otherwise. */
  async rootLimitRefusal(): Promise<string | undefined> {
    await this.ready();
    const why = await enableQuota(this.root);
    return why === undefined ? undefined : `btrfs qgroups cannot be enabled on pool ${path.basename(this.poolDir)}: ${why}`;
  }

  /** A qgroup limit on what the subvolume refers to (its own and shared extents, as `df` inside would count). */
  async limitRoot(dir: string, bytes: number): Promise<void> {
    await this.ready();
    await limitSubvolume(this.subvolume(await this.named(dir)), bytes);
  }

  /** Where custom volumes' subvolumes are (lib/storage/volumes/btrfs.ts), the pool mounted first. */
  async customRoot(): Promise<string> {
    await this.ready();
    const dir = path.join(this.root, 'custom');
    await fs.mkdir(dir, { mode: 0o711 }).catch((e) => (e.code === 'EEXIST' ? undefined : Promise.reject(e)));
    return dir;
  }

  /** Writes `dir`'s mark naming a fresh subvolume id (before the subvolume exists: the sweep never takes one being made). */
  private async mark(dir: string): Promise<string> {
    const id = `${process.pid}-${randomBytes(8).toString('hex')}`;
    const mark: BtrfsMark = { format: 'lxq-btrfs', version: 1, subvolume: id };
    await writeJsonAtomic(path.join(dir, BTRFS_MARK), mark);
    return id;
  }

  private async named(dir: string): Promise<string> {
    const mark = await readJson<BtrfsMark>(path.join(dir, BTRFS_MARK)).catch(() => undefined);
    if (!mark) throw new OperationFailed(`${dir} names no btrfs subvolume (${BTRFS_MARK} is missing)`);
    return checkId(mark.subvolume);
  }

  /** The pool's read-only subvolume of the image's tree shifted for `ids`, made once per image and map. */
  private async image(imageRootfs: string, ids: IdRange | null): Promise<string> {
    const key = `${imageKey(imageRootfs)}-${ids?.base ?? 0}-${ids?.size ?? 0}`;
    const images = path.join(this.root, 'images');
    const made = path.join(images, key);
    if (await exists(made)) return made;
    const staging = stagingPath(images, 'image');
    await createSubvolume(staging);
    try {
      await copyTreeShifted(imageRootfs, path.join(staging, 'rootfs'), ids?.base ?? 0);
      // Which tree it copies: a Host.open deletes it once that tree is gone from the store (deleted through another host).
      await fs.writeFile(path.join(staging, IMAGE_SOURCE), imageRootfs);
      await setReadOnly(staging, true);
      // A read-only subvolume can still be renamed in its (writable) parent.
      await fs.rename(staging, made).catch((e) => {
        if (e.code !== 'EEXIST' && e.code !== 'ENOTEMPTY') throw e; // another process made it first: theirs is the same
      });
    } finally {
      await deleteSubvolume(staging);
    }
    return made;
  }

  /**
   * Deletes the subvolumes no directory of the host names: those of a killed create, copy,
   * snapshot or restore, and of directories removed without their driver. Conservative: a
   * subvolume whose maker lives is kept; a mark that vanishes while read (a rename) ends the
   * sweep without deleting anything.
   */
  private async sweep(instancesDir: string): Promise<void> {
    const images = path.join(this.root, 'images');
    for (const n of await fs.readdir(images).catch(() => [] as string[])) {
      if (isStaging(n) && !processAlive(Number(n.split('-')[2]))) await deleteSubvolume(path.join(images, n));
    }
    await clearStaging(images).catch(() => undefined);
    for (const n of await fs.readdir(images).catch(() => [] as string[])) {
      const source = await fs.readFile(path.join(images, n, IMAGE_SOURCE), 'utf8').catch(() => undefined);
      if (source !== undefined && !(await exists(source))) await deleteSubvolume(path.join(images, n));
    }
    const roots = path.join(this.root, 'roots');
    const candidates = (await fs.readdir(roots).catch(() => [] as string[])).filter((n) => !processAlive(Number(n.split('-')[0])));
    if (!candidates.length) return;
    const named = await namedSubvolumes(instancesDir);
    if (!named) return;
    for (const n of candidates) if (!named.has(n)) await deleteSubvolume(path.join(roots, n));
  }
}

/** A subvolume id read from a mark (a file an archive may have brought): a plain name, never a path. */
function checkId(id: unknown): string {
  if (typeof id !== 'string' || !/^[0-9]+-[0-9a-f]{16}$/.test(id)) throw new OperationFailed(`a ${BTRFS_MARK} names a subvolume ${JSON.stringify(id)} lxq did not make`);
  return id;
}

/** A container's trees (mounted, or the container's own files): never where a mark is. */
const TREES = ['rootfs', 'upper', 'work'];

/** Every subvolume id named by a mark at depth 1 to 3 below `instancesDir`; undefined if one vanished while read. */
async function namedSubvolumes(instancesDir: string): Promise<Set<string> | undefined> {
  const named = new Set<string>();
  const walk = async (dir: string, depth: number): Promise<boolean> => {
    const entries = await fs.readdir(dir, { withFileTypes: true }).catch((e) => (e.code === 'ENOENT' ? undefined : Promise.reject(e)));
    if (!entries) return false;
    for (const e of entries) {
      if (e.name === BTRFS_MARK) {
        const mark = await readJson<BtrfsMark>(path.join(dir, e.name)).catch((err) => (err.code === 'ENOENT' ? null : undefined));
        if (mark === null) return false;
        if (mark) named.add(String(mark.subvolume));
      } else if (e.isDirectory() && depth < 3 && !TREES.includes(e.name) && !(await walk(path.join(dir, e.name), depth + 1))) {
        return false;
      }
    }
    return true;
  };
  return (await walk(instancesDir, 0)) ? named : undefined;
}
