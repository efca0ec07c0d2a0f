/**
 * What the storage layer (snapshots, copy, rename, export and import) shares with the instance
 * drivers: the public shapes, and the small primitives each driver provides.
 */
import type { InstanceConfig, InstanceType } from '../config/options';
import type { Devices } from '../devices/declarations';
import type { LongOptions } from '../core/abort';
import type { InstanceRecord, InstanceStatus } from '../instance/instance';
import type { PoolDriver } from './pools/types';

/**
 * Options of `snapshots.create`: stateful or not, a description, an expiry.
 *
 * @example
 * ```ts
 * await vm.snapshots.create('live', { stateful: true, description: 'with its RAM', expiresAt: new Date(Date.now() + 86_400_000) });
 * ```
 */
export interface SnapshotCreateOptions extends LongOptions {
  /**
   * Keep the running state too (a VM's RAM and devices; a container's processes through CRIU).
   * Default: true for a running VM, false otherwise.
   */
  stateful?: boolean;
  /**
   * When the snapshot may be pruned (it is, the next time the instance's snapshots are touched, or by the scheduler).
   * Default: the instance's `snapshots.expiry` from now; null: never (lxc's --no-expiry).
   */
  expiresAt?: Date | string | null;
  description?: string;
}

/**
 * Options of `snapshots.restore`.
 *
 * @example
 * ```ts
 * await vm.snapshots.restore('live', { stateful: false }); // the disk only
 * ```
 */
export interface SnapshotRestoreOptions extends LongOptions {
  /** Default true: a stateful snapshot resumes the instance where it was. false: its disk or files only. */
  stateful?: boolean;
}

/**
 * A snapshot as `snapshots.list()` and `get()` report it.
 *
 * @example
 * ```ts
 * for (const s of await c.snapshots.list()) console.log(s.name, s.createdAt, s.stateful, s.size);
 * ```
 */
export interface SnapshotInfo {
  name: string;
  createdAt: Date;
  stateful: boolean;
  expiresAt: Date | null;
  description: string;
  /** Bytes it occupies on disk (a container's copy of its files; a VM's saved state). */
  size: number;
  /** The instance as it was when the snapshot was made: what restore brings back. */
  record: SnapshotRecord;
}

/**
 * What a snapshot keeps of its instance besides its files or disk: the type, image, options and
 * devices that `restore` brings back.
 *
 * @example
 * ```ts
 * const { record } = await c.snapshots.get('before-upgrade');
 * console.log(record.image, record.config['limits.memory'], Object.keys(record.devices ?? {}));
 * ```
 */
export interface SnapshotRecord {
  type: InstanceType;
  image: string;
  /** What the image said about running the instance, copied at create. */
  imageMeta: Record<string, unknown>;
  /** The options as stored (strings). */
  config: InstanceConfig;
  devices?: Devices;
}

/**
 * An instance's snapshots: create, list, get, restore, rename, delete.
 *
 * @example
 * ```ts
 * await c.snapshots.create('before-upgrade');
 * await c.snapshots.restore('before-upgrade');
 * console.log((await c.snapshots.list()).map((s) => s.name));
 * ```
 */
export interface InstanceSnapshots {
  /** Makes a snapshot (default names snap0, snap1… as LXD); a running container is frozen for the copy. */
  create(name?: string, options?: SnapshotCreateOptions): Promise<SnapshotInfo>;
  /** Every snapshot, oldest first. */
  list(): Promise<SnapshotInfo[]>;
  get(name: string): Promise<SnapshotInfo>;
  /** Brings back the snapshot's files or disk and record (a running instance ends running). */
  restore(name: string, options?: SnapshotRestoreOptions): Promise<void>;
  rename(from: string, to: string): Promise<void>;
  delete(name: string, options?: SnapshotDeleteOptions): Promise<void>;
}

/**
 * Options of `snapshots.delete`: a signal (an abort before the snapshot's data is removed keeps it whole).
 *
 * @example
 * ```ts
 * await c.snapshots.delete('old', { signal: AbortSignal.timeout(60_000) });
 * ```
 */
export interface SnapshotDeleteOptions {
  signal?: AbortSignal;
}

/** A snapshot as stored in `<instance>/snapshots/<name>/snapshot.json` (its name is its directory's). */
export interface StoredSnapshot {
  format: 'lxq-snapshot';
  version: 1;
  createdAt: string;
  stateful: boolean;
  expiresAt: string | null;
  description: string;
  /** The driver's own reference (a VM's internal qcow2 snapshot tag). */
  tag: string;
  record: InstanceRecord;
}

/** A snapshot as a driver sees it: where it is and what it stores. */
export interface SnapshotRef {
  name: string;
  dir: string;
  meta: StoredSnapshot;
}

/**
 * What each instance type provides. Every call is made by the storage layer inside the
 * instance's operation queue (one at a time) with the status it just read.
 */
export interface StorageDriver {
  /**
   * Fills `into` (an empty directory) with what a snapshot keeps beside the record, consistent:
   * a running container is frozen for the copy.
   */
  capture(into: string, options: { stateful: boolean; status: InstanceStatus; tag: string }): Promise<void>;
  /** Refuses a restore this type cannot do in this status, before any side effect. */
  checkRestore?(snapshot: SnapshotRef, status: InstanceStatus): Promise<void>;
  /** Restores without a stop where the type can (a running VM's stateful snapshot); false: the ordinary way. */
  restoreLive?(snapshot: SnapshotRef, status: InstanceStatus): Promise<boolean>;
  /** Removes driver-side data of a snapshot (a VM's internal snapshot), before its directory goes. */
  discard?(snapshot: SnapshotRef, status: InstanceStatus): Promise<void>;
  /** Removes what the driver keeps outside `dir` for the instance or snapshot whose directory `dir` is (a btrfs subvolume); the caller removes `dir`. */
  removeData?(dir: string): Promise<void>;
  /** Work done before a restore commits, while the instance may still run (a container's copy of the snapshot's files). */
  stageRestore(snapshot: SnapshotRef, staging: string): Promise<void>;
  /**
   * Fills `into` (an empty directory, the future instance directory) with an independent copy of
   * the instance's data, or of `snapshot`'s; with `snapshots`, the instance's snapshots too.
   */
  copyTo(into: string, options: CopyToOptions): Promise<void>;
  /** The driver of the pool named `pool` (NotFound if there is none): where a copy or move across pools goes. */
  poolNamed(pool: string | undefined): Promise<PoolDriver>;
  /**
   * Fills `into` (an empty directory, the future image directory) with an image of the stopped
   * instance, or of `snapshot` (any status), in the image store's layout; returns the image's meta.
   */
  publishTo(into: string, options: { status: InstanceStatus; snapshot?: SnapshotRef }): Promise<Record<string, unknown>>;
  /** Puts the staged data in place of the instance's, the instance stopped; idempotent (run again after a crash). */
  applyRestore(snapshot: SnapshotRef, staging: string, record: InstanceRecord): Promise<void>;
  /**
   * Runs `write` on a directory in an export's layout (the root filesystem or disk, and
   * `snapshots/`), where the instance's own directory is not (a container on an overlay pool).
   */
  withExportTree?<T>(snapshots: boolean, write: (dir: string) => Promise<T>): Promise<T>;
}

export interface CopyToOptions {
  status: InstanceStatus;
  snapshot?: SnapshotRef;
  snapshots: boolean;
  /** A VM's disk without a backing file (containers' copies are always full). */
  flatten: boolean;
  /** A copy read once and removed by the caller (a running VM's disk for an export): plain files, on no pool. */
  scratch?: boolean;
  /** The pool the copy goes on when it is not the instance's own (a copy or move across pools: a flattened tree, the disk copied whole). */
  target?: PoolDriver;
  /** A move: the copy keeps the instance's identity (its machine id is not emptied). */
  keepIdentity?: boolean;
  /**
   * A copy of a container with an id range of its own (security.idmap.isolated): the copy's
   * range, allocated when the copy begins; its trees (snapshots' too) are shifted into it.
   */
  ownRange?: () => Promise<{ base: number; size: number }>;
}

/**
 * A snapshot was made, restored or deleted (`snapshot-created`, `-restored`, `-deleted` on the instance).
 *
 * @example
 * ```ts
 * c.on('snapshot-created', (e: SnapshotEvent) => console.log(e.name, e.snapshot));
 * ```
 */
export interface SnapshotEvent {
  name: string;
  snapshot: string;
}
/**
 * A snapshot was renamed (`snapshot-renamed` on the instance): from `previous` to `snapshot`.
 *
 * @example
 * ```ts
 * c.on('snapshot-renamed', (e: SnapshotRenamedEvent) => console.log(e.previous, '->', e.snapshot));
 * ```
 */
export interface SnapshotRenamedEvent extends SnapshotEvent {
  previous: string;
}

/**
 * Options of `host.copy`: a snapshot as the source, options and devices changed on the way, snapshots left behind, a flattened VM disk.
 *
 * @example
 * ```ts
 * await host.copy('web1', 'web2', { snapshot: 'clean', instanceOnly: true, config: { 'user.role': 'staging' } });
 * ```
 */
export interface CopyOptions extends LongOptions {
  /** Copy this snapshot of the source rather than its current state. */
  snapshot?: string;
  /** Options set on the copy (over the source's). */
  config?: Record<string, string | number | boolean | null>;
  /** Devices of the copy (over the source's; `null` removes one). NICs get new MAC addresses. */
  devices?: Record<string, unknown>;
  /**
   * Leave the source's snapshots behind (default: they are copied too, as LXD does). A VM's copy
   * that is flattened or made while it runs has one state of the disk only, never its snapshots.
   */
  instanceOnly?: boolean;
  /** A VM's disk as a standalone qcow2, without the image's as backing file (containers: always full copies). */
  flatten?: boolean;
  /** The copy is ephemeral (deleted when it stops); as `lxc copy`, a copy is not unless asked, whatever its source. */
  ephemeral?: boolean;
  /** The storage pool of the copy's root disk (`lxc copy -s`; default: the source's). On another pool the tree is copied whole, flattened. */
  pool?: string;
}

/**
 * Options of `instance.move` (LXD's `lxc move`, on one host): another storage pool for its root
 * disk (`-s`), a new name, or both. The instance must be stopped (as LXD, a running instance is
 * not moved between pools); its snapshots go with it, and its identity (MAC addresses, machine
 * id) stays. Made whole beside it and swapped in by renames: an abort or a killed process
 * leaves the instance as it was.
 *
 * @example
 * ```ts
 * await c.move({ pool: 'fast' });               // lxc move c1 -s fast
 * await c.move({ pool: 'default', name: 'c2' }); // and renamed
 * ```
 */
export interface MoveOptions extends LongOptions {
  pool?: string;
  name?: string;
}

