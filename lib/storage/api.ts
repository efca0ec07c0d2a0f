/**
 * What a host's storage offers its users, the same on this host (./pools/host-storage.ts) and on
 * an LXD server (lib/drivers/remote/storage.ts): pools, and each pool's custom volumes.
 */
import type { StoragePoolUpdate } from './pools/pools';
import type { StoragePoolCreateOptions, StoragePoolInfo } from './pools/types';
import type { LongOptions } from '../core/abort';
import type { StorageVolumeCreateOptions, StorageVolumeInfo, StorageVolumeUpdate, VolumeExportOptions, VolumeSnapshotInfo } from './volumes/types';

/**
 * A host's storage pools (`host.storage.pools`), local or an LXD server's.
 *
 * @example
 * ```ts
 * async function poolNames(host: InstanceHost): Promise<string[]> {
 *   return (await host.storage.pools.list()).map((p) => p.name);
 * }
 * ```
 */
export interface HostStoragePools {
  /** Every pool, sorted by name. */
  list(): Promise<StoragePoolInfo[]>;
  /** The pool `name`; NotFound if there is none. */
  get(name: string): Promise<StoragePoolInfo>;
  /** A new pool; AlreadyExists if the name is taken. */
  create(name: string, options: StoragePoolCreateOptions): Promise<StoragePoolInfo>;
  /** Changes keys (null removes one) and the description. */
  update(name: string, update: StoragePoolUpdate): Promise<StoragePoolInfo>;
  /** Deletes a pool nothing is on (Busy otherwise). */
  delete(name: string): Promise<void>;
}

/**
 * A pool's custom volumes (`host.storage.pool(name).volumes`), local or an LXD server's.
 *
 * @example
 * ```ts
 * async function backup(volumes: HostStorageVolumes, name: string): Promise<string> {
 *   return (await volumes.snapshot(name)).name;
 * }
 * ```
 */
export interface HostStorageVolumes {
  create(name: string, options?: StorageVolumeCreateOptions): Promise<StorageVolumeInfo>;
  /** The volume `name`; NotFound if there is none. */
  get(name: string): Promise<StorageVolumeInfo>;
  /** Every volume of the pool, sorted by name. */
  list(): Promise<StorageVolumeInfo[]>;
  update(name: string, update: StorageVolumeUpdate): Promise<StorageVolumeInfo>;
  /** Renames a volume no instance names (Busy otherwise). */
  rename(name: string, newName: string): Promise<StorageVolumeInfo>;
  /** Deletes a volume no instance names (Busy otherwise), with its snapshots. */
  delete(name: string): Promise<void>;
  /** A snapshot named `snapshotName`, or LXD's next `snapN`. */
  snapshot(name: string, snapshotName?: string): Promise<VolumeSnapshotInfo>;
  /** The volume's snapshots, oldest first. */
  snapshots(name: string): Promise<VolumeSnapshotInfo[]>;
  /** Puts the snapshot's content back (Busy while a running instance has the volume). */
  restore(name: string, snapshotName: string): Promise<void>;
  deleteSnapshot(name: string, snapshotName: string): Promise<void>;
  /** Writes the volume, with its snapshots unless `volumeOnly`, to `file` in LXD's layout (`lxc storage volume export`). */
  export(name: string, file: string, options?: VolumeExportOptions): Promise<void>;
  /** A volume from an archive of `export` (or LXD's), named `name` (default: as exported); AlreadyExists for a name taken. */
  import(file: string, name?: string, options?: LongOptions): Promise<StorageVolumeInfo>;
}

/**
 * A host's storage (`host.storage`), local or an LXD server's.
 *
 * @example
 * ```ts
 * async function scratch(host: InstanceHost): Promise<void> {
 *   await host.storage.pool('default').volumes.create('scratch', { size: '1GiB' });
 * }
 * ```
 */
export interface HostStorageApi {
  readonly pools: HostStoragePools;
  /** A pool's handle: its custom volumes (the pool is looked up by each call). */
  pool(name: string): { readonly name: string; readonly volumes: HostStorageVolumes };
}
