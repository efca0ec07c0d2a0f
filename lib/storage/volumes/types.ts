/**
 * Custom storage volumes (LXD's `lxc storage volume`): filesystems or block disks kept on a pool
 * apart from any instance, attached to instances with a disk device `{ type: 'disk', pool,
 * source: volume, path }`, and outliving them.
 */
import type { LongOptions } from '../../core/abort';

/**
 * What a volume holds: a directory tree (mounted into containers, shared into VMs with virtiofs)
 * or a block disk (a raw image file, given to VMs as a virtio-blk disk).
 *
 * @example
 * ```ts
 * const contentType: VolumeContentType = 'filesystem';
 * await host.storage.pool('default').volumes.create('data', { contentType });
 * ```
 */
export type VolumeContentType = 'filesystem' | 'block';

/**
 * A custom volume as `pool.volumes` reports it.
 *
 * @example
 * ```ts
 * const v = await host.storage.pool('default').volumes.get('data');
 * console.log(v.name, v.contentType, v.usedBy); // "data" "filesystem" [ "web1" ]
 * ```
 */
export interface StorageVolumeInfo {
  name: string;
  pool: string;
  contentType: VolumeContentType;
  description: string;
  /** LXD's volume keys set on it: `size`, `security.shared`. */
  config: Record<string, string>;
  /** The instances whose devices name this volume, by name. */
  usedBy: string[];
  createdAt: Date;
}

/**
 * Options of `pool.volumes.create` (LXD's `lxc storage volume create POOL NAME [size=…] [--type=block]`).
 *
 * @example
 * ```ts
 * await host.storage.pool('default').volumes.create('disk1', { contentType: 'block', size: '1GiB' });
 * ```
 */
export interface StorageVolumeCreateOptions {
  /** The most it holds (LXD's size syntax): a block volume's disk size (default 10GiB, sparse); on a btrfs pool a filesystem volume's qgroup limit. */
  size?: string;
  /** Default 'filesystem'. */
  contentType?: VolumeContentType;
  /** LXD's volume keys: `security.shared` ("true": may be attached to several running instances at once). */
  config?: Record<string, string>;
  description?: string;
}

/**
 * What `pool.volumes.update` changes: keys (a `null` value removes one) and the description.
 *
 * @example
 * ```ts
 * await host.storage.pool('default').volumes.update('data', { config: { 'security.shared': 'true' } });
 * ```
 */
export interface StorageVolumeUpdate {
  config?: Record<string, string | null>;
  description?: string;
}

/**
 * A snapshot of a custom volume.
 *
 * @example
 * ```ts
 * for (const s of await host.storage.pool('default').volumes.snapshots('data')) console.log(s.name, s.createdAt);
 * ```
 */
export interface VolumeSnapshotInfo {
  name: string;
  volume: string;
  createdAt: Date;
}

/** A volume as stored in `<pool>/volumes/<name>/volume.json`. */
export interface StoredVolume {
  format: 'lxq-storage-volume';
  version: 1;
  contentType: VolumeContentType;
  description: string;
  config: Record<string, string>;
  createdAt: string;
}

/** A volume snapshot as stored in `<volume>/snapshots/<name>/snapshot.json`. */
export interface StoredVolumeSnapshot {
  format: 'lxq-storage-volume-snapshot';
  version: 1;
  createdAt: string;
}

/**
 * How a pool driver keeps volumes' data. `dir` is the volume's (or snapshot's, or a staging)
 * directory in the pool's `volumes/`; what the driver keeps may be in it or elsewhere (a btrfs
 * subvolume it names).
 */
export interface VolumeBackend {
  /** Why `size` on a filesystem volume cannot be enforced here, or undefined if it can. */
  sizeRefusal(): Promise<string | undefined>;
  /** Makes the data in `dir` (a staging directory): an empty tree, or a sparse block file of `bytes`; `limit` caps a filesystem. */
  create(dir: string, contentType: VolumeContentType, bytes: number | undefined): Promise<void>;
  /** The host path of the data: the tree's directory, or the block file. */
  dataPath(dir: string, contentType: VolumeContentType): Promise<string>;
  /** Grows a block file to `bytes`, or sets a filesystem's limit. */
  resize(dir: string, contentType: VolumeContentType, bytes: number): Promise<void>;
  /** Fills `into` (a staging directory) with a read-only copy of the data in `dir`. */
  snapshot(dir: string, into: string, contentType: VolumeContentType): Promise<void>;
  /** Fills `staging` with a writable copy of the snapshot in `snapshotDir`. */
  stageRestore(snapshotDir: string, staging: string, contentType: VolumeContentType): Promise<void>;
  /** Swaps the staged data in place of `dir`'s; the old data is left in `staging` (removed by the caller, through `remove`). */
  applyRestore(dir: string, staging: string, contentType: VolumeContentType): Promise<void>;
  /** Releases what the driver keeps outside `dir` (a subvolume); the caller removes `dir`. */
  remove(dir: string): Promise<void>;
  /** Host.open: deletes what no volume's or snapshot's directory names (a killed create's subvolume). */
  sweep(volumesDir: string): Promise<void>;
}

/** What instances' devices need of custom volumes (a disk device with `pool`): given to drivers by the host. */
export interface VolumeResolver {
  /** The host path of a volume's data and its content type (NotFound naming the volume or pool). */
  resolve(pool: string, volume: string): Promise<{ path: string; contentType: VolumeContentType }>;
  /** Busy unless the volume is `security.shared` or no instance but `instance` that names it is running. */
  checkFree(pool: string, volume: string, instance: string): Promise<void>;
}

/**
 * Options of `volumes.export` (LXD's `lxc storage volume export`): the snapshots are written too
 * unless `volumeOnly`; an AbortSignal and a progress callback as every long operation.
 *
 * @example
 * ```ts
 * await host.storage.pool('default').volumes.export('data', '/srv/data.tar.zst', { volumeOnly: true });
 * ```
 */
export interface VolumeExportOptions extends LongOptions {
  volumeOnly?: boolean;
}
