/**
 * Storage pools (LXD's `storage pools`): where instances' root filesystems live and how they are
 * made. Each driver is one file of this folder behind `PoolDriver`, as Incus's storage/drivers;
 * nothing here knows an instance type's driver: a container driver asks a pool for a root tree
 * and is handed the directories it needs.
 */
import type { IdExtent } from '../../native/sys';
import type { IdMapper } from '../tree';

export type { IdExtent };

/**
 * The pool drivers of this version: `dir` (a full copy of the image per container), `overlay`
 * (the image kept once, each container's changes in an upper layer) and `btrfs` (subvolumes and
 * their snapshots, on a btrfs directory or a loop file the pool makes).
 *
 * @example
 * ```ts
 * const driver: PoolDriverName = 'overlay';
 * await host.storage.pools.create('fast', { driver });
 * ```
 */
export type PoolDriverName = 'dir' | 'overlay' | 'btrfs';

/**
 * A pool as `host.storage.pools` reports it.
 *
 * @example
 * ```ts
 * const pool = await host.storage.pools.get('default');
 * console.log(pool.driver, pool.usedBy); // "overlay", [ "web1", "db1" ]
 * ```
 */
export interface StoragePoolInfo {
  name: string;
  /** A PoolDriverName on this host; an LXD server's pool may have its own (zfs, lvm, ceph…). */
  driver: PoolDriverName | (string & NonNullable<unknown>);
  description: string;
  /** The pool's keys (LXD's names): a btrfs pool's `source` or `size`; none for dir and overlay pools in this version. */
  config: Record<string, string>;
  /** The instances whose root disk is on this pool, by name. */
  usedBy: string[];
  createdAt: Date;
}

/**
 * Options of `host.storage.pools.create`.
 *
 * @example
 * ```ts
 * await host.storage.pools.create('fast', { driver: 'overlay', description: 'copy-on-write roots' });
 * ```
 */
export interface StoragePoolCreateOptions {
  /** On an LXD server, one of its drivers instead (`overlay` is lxq's own). */
  driver: PoolDriverName | (string & NonNullable<unknown>);
  config?: Record<string, string>;
  description?: string;
}

/** A pool as stored in `<host>/storage-pools/<name>/pool.json`. */
export interface StoredPool {
  format: 'lxq-storage-pool';
  version: 1;
  name: string;
  driver: PoolDriverName;
  description: string;
  config: Record<string, string>;
  createdAt: string;
}

/**
 * An instance's root disk as LXD writes it: on `pool`, at "/". `host.create(name, { pool })` says the same.
 *
 * @example
 * ```ts
 * await host.create('web1', { image: 'debian/12', devices: { root: { type: 'disk', path: '/', pool: 'fast' } } });
 * ```
 */
export interface RootDiskDevice {
  type: 'disk';
  path: '/';
  pool: string;
  /** A container's: the most its root may hold (LXD's size syntax, e.g. "2GiB"), a qgroup limit on a btrfs pool, refused by the others. A VM's: its disk's size, on every pool (at least the image's). */
  size?: string;
  /** A container's: I/O limits (LXD's disk `limits.read`, `limits.write`, `limits.max`) on the block device under its root, kept in its record and set at each start. */
  'limits.read'?: string;
  'limits.write'?: string;
  'limits.max'?: string;
}

/** The uids and gids a container's root tree is seen with: 0..size-1 inside are base.. on the host. */
export interface IdRange {
  base: number;
  size: number;
}

/** A container's whole map (its range, raw.idmap's extents punched in), as a lower layer shared with its image is seen through. */
export interface LowerIds extends IdRange {
  uid: IdExtent[];
  gid: IdExtent[];
}

/** How adoptTree makes its copy. */
export interface AdoptOptions {
  snapshot: boolean;
  fresh: boolean;
  ids?: IdMapper;
}

/** The image a root tree is made of: its unshifted `rootfs/` in the image store (never modified). */
export interface RootImage {
  rootfs: string;
}

/**
 * What a pool driver does with a container's root tree. `dir` is an instance's directory: the
 * tree appears at `<dir>/rootfs` (liblxc's `lxc.rootfs.path`), whatever the driver keeps beside
 * it; a snapshot's directory holds what `capture` put there.
 */
export interface PoolDriver {
  readonly name: PoolDriverName;
  /** Refuses a key the driver does not take (InvalidArgument) or cannot honour here (NotSupported), naming it. */
  checkConfig(config: Record<string, string>): void;
  /** Fills `staging` (the pool's directory before it appears) with what the pool is made of (a formatted loop file); nothing outside it. */
  setupPool(staging: string): Promise<void>;
  /** After the pool appears and at every Host.open: makes it usable (a loop file mounted again after a reboot) and deletes what no directory of `instancesDir` names (a killed process's). */
  openPool(instancesDir: string): Promise<void>;
  /** Releases what the pool holds outside plain files (its mount, its loop device, its subvolumes on a `source`); `dir` is where its directory now is (renamed out of the list), removed by the caller. */
  destroyPool(dir: string): Promise<void>;
  /** Removes what the driver keeps outside `dir` for the tree of an instance or snapshot whose directory `dir` is (a subvolume); the caller removes `dir`. */
  removeRoot(dir: string): Promise<void>;
  /** Whether `size` on a root disk can be enforced on this pool: undefined if so, else why not (said in a NotSupported). */
  rootLimitRefusal(): Promise<string | undefined>;
  /** Limits what the root of the instance whose directory is `dir` may hold to `bytes` (rootLimitRefusal said it can). */
  limitRoot(dir: string, bytes: number): Promise<void>;
  /** Fills `dir` (a staging directory, not yet the instance's) with a root tree of `image` for a container seen through `ids` (null: privileged). */
  createRoot(dir: string, image: RootImage, ids: IdRange | null): Promise<void>;
  /** Makes `<dir>/rootfs` show the whole tree (a no-op where it always does); safe to call again. */
  attachRoot(dir: string): Promise<void>;
  /** Undoes attachRoot (nothing is left mounted below `dir`). */
  detachRoot(dir: string): Promise<void>;
  /** Copies what a snapshot keeps of the tree into `into` (the caller freezes a running container). */
  captureRoot(dir: string, into: string): Promise<void>;
  /** Fills `into` (a future instance directory) with an independent tree: the instance's, or that of the snapshot in `snapshotDir`. */
  copyRoot(dir: string, into: string, snapshotDir?: string): Promise<void>;
  /**
   * Fills `into` (a future instance's or snapshot's directory, of an instance this pool's
   * adoptTree filled) with a tree whose content is a copy of the whole tree `rootfs`, ids as they
   * are: a copy or move from another pool, flattened. `fresh`: a copy (its machine id emptied).
   * `ids`: the copy's host ids moved to another map of the container's (remapTreeWith).
   */
  adoptTree(into: string, rootfs: string, options: AdoptOptions): Promise<void>;
  /** Copies what the snapshot in `snapshotDir` keeps into `staging`, ready for applyRestore. */
  stageRestore(snapshotDir: string, staging: string): Promise<void>;
  /** Puts the staged tree in place of the instance's (stopped); idempotent, run again after a crash. */
  applyRestore(dir: string, staging: string): Promise<void>;
  /**
   * Runs `read` on a read-only whole view of the tree, or of the snapshot in `snapshotDir`
   * (publish, export): a path under `scratch` (an empty directory the caller removes) or the
   * instance's own rootfs.
   */
  withView<T>(dir: string, scratch: string, snapshotDir: string | undefined, read: (rootfs: string) => Promise<T>): Promise<T>;
  /**
   * Makes `<dir>/<file>` (a VM's disk, not yet written) a path the disk can be written at: on
   * btrfs a link into a fresh subvolume named by `dir`'s mark; nothing on a pool of plain
   * directories (the disk is a file of `dir`). Removed with removeRoot.
   */
  prepareDisk(dir: string, file: string): Promise<void>;
  /** Removes what the pool keeps of the image tree `imageRootfs` (shifted copies, subvolumes); the image store deletes it and no instance uses it. */
  releaseImage(imageRootfs: string): Promise<void>;
  /**
   * Where the tree's lower part is shared with its image (an overlay's lower layer), makes the
   * stopped container whose directory is `dir` see it through `ids` (raw.idmap changed), so that
   * its image's files keep their inside owners; the tree's own part is the caller's to shift.
   * Absent: the whole tree is the container's own.
   */
  alignLower?(dir: string, ids: LowerIds): Promise<void>;
  /** Copies the stopped VM's disk `<dir>/<file>` (its internal snapshots with it) to `<into>/<file>`: a subvolume snapshot on btrfs. */
  copyDisk(dir: string, into: string, file: string): Promise<void>;
}
