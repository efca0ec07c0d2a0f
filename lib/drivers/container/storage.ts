/**
 * The container's storage: its root tree, on the storage pool its record names (lib/storage/pools:
 * a full shifted copy on `dir`, an upper directory over the image on `overlay`), captured for
 * snapshots and copies (frozen while running), restored, and flattened for publish.
 */
import { promises as fs } from 'node:fs';
import * as path from 'node:path';

import type { InstanceRecord, InstanceStatus } from '../../instance/instance';
import { InvalidArgument } from '../../core/errors';
import { exists, readJson, writeJsonAtomic } from '../../core/fs';
import { stagingPath } from '../../core/staging';
import { SNAPSHOT_META } from '../../storage/archive';
import { resetMachineId } from '../../storage/move';
import { DirPool } from '../../storage/pools/dir';
import { unmountUnder } from '../../storage/pools/mounts';
import type { IdRange, PoolDriver, RootImage } from '../../storage/pools/types';
import { copyTree, copyTreeUnshifted, type IdMapper, remapTreeWith } from '../../storage/tree';
import type { CopyToOptions, SnapshotRef, StorageDriver } from '../../storage/types';
import type { IdMap } from './host-facts';
import { lowerIds, sameIds, translateIds } from './idmap';
import { run } from '../../core/run';

export interface ContainerStorageHooks {
  dir(): string;
  /** Freezes the running container for `operation`, recorded so that a thaw follows even if this process dies (BaseInstance.freezeFor). */
  freeze(operation: string): Promise<void>;
  unfreeze(): Promise<void>;
  /** Writes the liblxc config derived from `record` for this container. */
  writeConfig(record: InstanceRecord): Promise<void>;
  record(): InstanceRecord;
  /** The id map a rootfs made under `record` is shifted by (null: privileged, not shifted). */
  idmap(record: InstanceRecord): IdRange | null;
  /** The whole map the container runs with under `record` (raw.idmap's lines punched in). */
  fullIdmap(record: InstanceRecord): IdMap | null;
  /** The driver of the pool the record names (absent: every container is on a dir pool). */
  pool?(record: InstanceRecord): Promise<PoolDriver>;
}

/** The xattr naming the raw.idmap lines a container's tree is laid out for. */
const RAW_LAYOUT = 'trusted.lxq.raw_idmap';
/** The raw.idmap lines a shift is moving the tree to, while it runs (a killed shift is finished at the next alignRoot). */
const RAW_PENDING = 'trusted.lxq.raw_idmap_next';
const readRaw = (tree: string, name: string): Promise<IdMap['raw'] | undefined> =>
  run('getfattr', ['--only-values', '--absolute-names', '-n', name, '--', tree]).then((v) => JSON.parse(v) as IdMap['raw'], () => undefined);
const writeRaw = (tree: string, name: string, raw: IdMap['raw']): Promise<unknown> =>
  run('setfattr', ['-n', name, '-v', `0x${Buffer.from(JSON.stringify(raw ?? [])).toString('hex')}`, '--', tree]);
/** In the container's directory while its tree may be laid out for raw lines (the xattr is read only then). */
const RAW_MARK = 'raw-idmap.laid';

/** What a pool keeps of a snapshot's tree in its directory (copied by the pool, not as files). */
const SNAPSHOT_TREES = ['rootfs', 'upper', 'btrfs.json'];

/** The instance's snapshots by name (staging entries left out). */
async function snapshotNames(dir: string): Promise<string[]> {
  return (await fs.readdir(path.join(dir, 'snapshots')).catch(() => [] as string[])).filter((n) => !n.startsWith('.')).sort();
}

export class ContainerStorage implements StorageDriver {
  constructor(private readonly hooks: ContainerStorageHooks) {}

  private pool(): Promise<PoolDriver> {
    return this.poolOf(this.hooks.record());
  }

  private async poolOf(record: InstanceRecord): Promise<PoolDriver> {
    return this.hooks.pool ? this.hooks.pool(record) : new DirPool();
  }

  poolNamed(pool: string | undefined): Promise<PoolDriver> {
    return this.poolOf({ ...this.hooks.record(), pool });
  }

  /** Fills `staging` (the future instance directory) with a root tree of `image` on the record's pool. */
  async createRoot(staging: string, image: RootImage, record: InstanceRecord): Promise<void> {
    const pool = await this.poolOf(record);
    await pool.createRoot(staging, image, this.hooks.idmap(record));
    if (record.rootSize) await pool.limitRoot(staging, record.rootSize);
  }

  /** Makes `<dir>/rootfs` the container's whole tree (an overlay is mounted); called before anything reads or starts it. */
  async attachRoot(): Promise<void> {
    await (await this.pool()).attachRoot(this.hooks.dir());
  }

  /** Leaves nothing mounted below the instance's directory (before it is removed). */
  async detachRoot(): Promise<void> {
    await (await this.pool()).detachRoot(this.hooks.dir());
  }

  async capture(into: string, options: { status: InstanceStatus }, operation = 'snapshot'): Promise<void> {
    const pool = await this.pool();
    // A running container is frozen for the copy, so the copy is of one moment, never torn.
    const freeze = options.status === 'running';
    if (freeze) await this.hooks.freeze(operation);
    try {
      await pool.captureRoot(this.hooks.dir(), into);
    } finally {
      if (freeze) await this.hooks.unfreeze();
    }
  }

  async copyTo(into: string, options: CopyToOptions): Promise<void> {
    // An isolated container's copy is shifted as it is written: through the flattened path, onto its own pool if no other.
    const record = options.snapshot?.meta.record ?? this.hooks.record();
    const from = record.idmap && options.ownRange ? this.hooks.fullIdmap(record) : null;
    if (from && options.ownRange) {
      const range = await options.ownRange();
      return this.copyAcross(options.target ?? (await this.pool()), into, { ...options, ids: translateIds(from, { ...from, ...range }), range });
    }
    if (options.target) return this.copyAcross(options.target, into, options);
    const pool = await this.pool();
    const dir = this.hooks.dir();
    if (options.snapshot) {
      await pool.copyRoot(dir, into, options.snapshot.dir);
    } else {
      const freeze = options.status === 'running';
      if (freeze) await this.hooks.freeze('copy');
      try {
        await pool.copyRoot(dir, into);
      } finally {
        if (freeze) await this.hooks.unfreeze();
      }
    }
    // A snapshot of a subvolume has no limit of its own: the copy is given its source's.
    const rootSize = this.hooks.record().rootSize;
    if (rootSize) await pool.limitRoot(into, rootSize);
    if (options.snapshots) await this.copySnapshots(pool, dir, into);
  }

  /**
   * A copy on another pool (`target`): the instance's tree (or one snapshot's) read through a
   * flattened view and written whole by the target pool, each snapshot's likewise.
   */
  private async copyAcross(target: PoolDriver, into: string, options: CopyToOptions & { ids?: IdMapper; range?: IdRange }): Promise<void> {
    const pool = await this.pool();
    const dir = this.hooks.dir();
    const { ids, range, keepIdentity } = options;
    const adopt = (from: string | undefined, to: string, snapshot: boolean) =>
      this.withScratch((scratch) => pool.withView(dir, scratch, from, (rootfs) => target.adoptTree(to, rootfs, { snapshot, fresh: keepIdentity !== true && !snapshot, ...(ids ? { ids } : {}) })));
    const freeze = !options.snapshot && options.status === 'running';
    if (freeze) await this.hooks.freeze('copy');
    try {
      await adopt(options.snapshot?.dir, into, false);
    } finally {
      if (freeze) await this.hooks.unfreeze();
    }
    const rootSize = this.hooks.record().rootSize;
    if (rootSize) await target.limitRoot(into, rootSize);
    if (!options.snapshots) return;
    for (const name of await snapshotNames(dir)) {
      const from = path.join(dir, 'snapshots', name);
      const to = path.join(into, 'snapshots', name);
      await this.copySnapshotFiles(from, to);
      await adopt(from, to, true);
      if (range) await this.pointSnapshotAt(to, range);
    }
  }

  /** Runs `use` on a scratch directory of the instance's (removed after, nothing left mounted in it). */
  private async withScratch<T>(use: (scratch: string) => Promise<T>): Promise<T> {
    const scratch = stagingPath(this.hooks.dir(), 'view');
    await fs.mkdir(scratch, { mode: 0o700 });
    try {
      return await use(scratch);
    } finally {
      await unmountUnder(scratch);
      await fs.rm(scratch, { recursive: true, force: true });
    }
  }

  /** A copied snapshot's record names the range its tree was shifted into. */
  private async pointSnapshotAt(snapshotDir: string, range: IdRange): Promise<void> {
    const file = path.join(snapshotDir, SNAPSHOT_META);
    const meta = await readJson<{ record: InstanceRecord }>(file);
    await writeJsonAtomic(file, { ...meta, record: { ...meta.record, idmap: range } });
  }

  /** A snapshot's own files (its record), without the tree its pool keeps. */
  private async copySnapshotFiles(from: string, to: string): Promise<void> {
    await fs.mkdir(to, { recursive: true, mode: 0o711 });
    for (const entry of await fs.readdir(from)) {
      if (!SNAPSHOT_TREES.includes(entry) && !entry.startsWith('.')) await copyTree(path.join(from, entry), path.join(to, entry));
    }
  }

  /** Each snapshot's files, and its tree through the pool (a btrfs snapshot's subvolume is outside its directory: each copy gets its own). */
  private async copySnapshots(pool: PoolDriver, dir: string, into: string): Promise<void> {
    for (const name of await snapshotNames(dir)) {
      const from = path.join(dir, 'snapshots', name);
      const to = path.join(into, 'snapshots', name);
      await this.copySnapshotFiles(from, to);
      await pool.captureRoot(from, to);
    }
  }

  /**
   * raw.idmap as LXD's: the stopped container's own tree is shifted in place from the map it was
   * laid out for to `map` when they differ, so that its files keep their inside owners. The
   * tree's raw lines are kept in a trusted.* xattr of its top (the container cannot see it; a
   * snapshot, copy or restore carries it with the tree; absent: none, as create shifts). Its root
   * on a dir or btrfs pool; on an overlay pool its upper directory, and the image's lower layer
   * (shared, never changed) is seen through the new map (PoolDriver.alignLower). A shift cut short is finished at the next call: a file already
   * moved is left alone, its new host id being unmapped in the old map. Refused while `protect`
   * (security.protection.shift) when a shift is needed.
   */
  async alignRoot(map: IdMap, protect: boolean): Promise<void> {
    // Reading the xattr costs a process (tens of ms under load): not at the start of a container that has never had raw lines.
    const mark = path.join(this.hooks.dir(), RAW_MARK);
    if (!map.raw?.length && !(await exists(mark))) return;
    const pool = await this.pool();
    const dir = this.hooks.dir();
    const overlay = pool.name === 'overlay';
    if (!overlay) await pool.attachRoot(dir);
    const tree = path.join(dir, overlay ? 'upper' : 'rootfs');
    let was: IdMap = { base: map.base, size: map.size, raw: (await readRaw(tree, RAW_LAYOUT)) ?? [] };
    // A shift killed midway is finished first, into the map it was going to: its moved files are in neither map otherwise.
    const pending = await readRaw(tree, RAW_PENDING);
    let shifted = false;
    for (const to of pending ? [{ ...was, raw: pending }, map] : [map]) {
      if (sameIds(was, to)) continue;
      if (protect) throw new InvalidArgument(`the root of ${path.basename(dir)} would have to be shifted for its raw.idmap, and security.protection.shift is true`);
      if (overlay) await pool.detachRoot(dir); // overlayfs is not to see its upper layer change under it
      await writeRaw(tree, RAW_PENDING, to.raw ?? []);
      await remapTreeWith(tree, translateIds(was, to));
      await writeRaw(tree, RAW_LAYOUT, to.raw ?? []);
      [was, shifted] = [to, true];
    }
    if (pending || shifted) await run('setfattr', ['-x', RAW_PENDING, '--', tree]);
    // The image's files under the overlay are seen through the whole map too (mounted again if the view changed).
    await pool.alignLower?.(dir, lowerIds(map));
    if (overlay) await pool.attachRoot(dir);
    if (map.raw?.length) await fs.writeFile(mark, '');
    else await fs.rm(mark, { force: true });
  }

  /** Removes what the pool keeps outside the instance's directory for it and its snapshots (subvolumes), before the directory goes. */
  async removeData(dir: string): Promise<void> {
    const pool = await this.pool();
    for (const name of await snapshotNames(dir)) await pool.removeRoot(path.join(dir, 'snapshots', name));
    await pool.removeRoot(dir);
  }

  /** An image's `rootfs/`, its ids back to the image's own (0-based), its machine id emptied for the instances made of it. */
  async publishTo(into: string, options: { snapshot?: SnapshotRef }): Promise<Record<string, unknown>> {
    const record = options.snapshot?.meta.record ?? this.hooks.record();
    const pool = await this.pool();
    await this.withScratch((scratch) => pool.withView(this.hooks.dir(), scratch, options.snapshot?.dir, (rootfs) => copyTreeUnshifted(rootfs, path.join(into, 'rootfs'), this.hooks.idmap(record as InstanceRecord))));
    await resetMachineId(path.join(into, 'rootfs'));
    return structuredClone(record.imageMeta);
  }

  /**
   * Runs `write` on a directory in an export's layout (`rootfs/`, and `snapshots/<name>/` with
   * `snapshot.json` and `rootfs/` when `snapshots`): the instance's own on a dir pool; on an
   * overlay pool, read-only flattened views of the instance and of each snapshot (an upper
   * directory means nothing without its image).
   */
  async withExportTree<T>(snapshots: boolean, write: (dir: string) => Promise<T>): Promise<T> {
    const pool = await this.pool();
    const dir = this.hooks.dir();
    if (pool.name === 'dir') return write(dir);
    const tree = stagingPath(dir, 'export-tree');
    await fs.mkdir(tree, { mode: 0o700 });
    try {
      const names = snapshots ? await snapshotNames(dir) : [];
      // One view per snapshot, each mounted inside the next call: all of them are there when tar reads.
      const mountFrom = async (i: number): Promise<T> => {
        if (i === names.length) return pool.withView(dir, tree, dir, () => write(tree));
        const snapshotTree = path.join(tree, 'snapshots', names[i]);
        await fs.mkdir(snapshotTree, { recursive: true, mode: 0o700 });
        await fs.copyFile(path.join(dir, 'snapshots', names[i], 'snapshot.json'), path.join(snapshotTree, 'snapshot.json'));
        return pool.withView(dir, snapshotTree, path.join(dir, 'snapshots', names[i]), () => mountFrom(i + 1));
      };
      return await mountFrom(0);
    } finally {
      await unmountUnder(tree);
      await fs.rm(tree, { recursive: true, force: true });
    }
  }

  async stageRestore(snapshot: SnapshotRef, staging: string): Promise<void> {
    await (await this.pool()).stageRestore(snapshot.dir, staging);
  }

  async applyRestore(_snapshot: SnapshotRef, staging: string, record: InstanceRecord): Promise<void> {
    const pool = await this.pool();
    await pool.applyRestore(this.hooks.dir(), staging);
    if (record.rootSize) await pool.limitRoot(this.hooks.dir(), record.rootSize);
    await this.hooks.writeConfig(record);
  }
}
