/**
 * `lxq`: the public API. Everything a public signature names is exported here, and nothing of a
 * driver's own: the drivers' classes stay inside, behind the `Instance` interface (and
 * `VirtualMachine` for what only a VM has).
 */

// The local host, and what its calls take.
export { Host, DEFAULT_HOST_PATH } from './host/host';
export type { HostOptions, ImportOptions, LaunchOptions } from './host/host';
export type { AutostartReport, ShutdownReport } from './host/autostart';
export type { ImportTrust } from './instance/foreign';
export type { InstanceHost } from './instance/host';
export type { Profiles } from './host/profiles';
export type { HostProfiles, ProfileChange, ProfileInput, ProfileRecord } from './instance/profiles';

// The instance contract, shared by containers, VMs and LXD's instances.
export type {
  Instance,
  InstanceState,
  InstanceStatus,
  InstanceEvents,
  StatusEvent,
  RenamedEvent,
  CopiedEvent,
  StopOptions,
  StartOptions,
  ExportOptions,
  CreateOptions,
  InstanceConsole,
  NetworkInterface,
  DeviceState,
  NicLiveState,
  MountState,
  BlockState,
  ProxyLiveState,
  WaitForAddressOptions,
} from './instance/instance';
export type { WaitFor, WaitOptions, WaitSpec } from './instance/wait';
export type { ExecOptions, ExecResult, SpawnOptions, InstanceProcess, ExitStatus } from './instance/process';
export type { ConsoleStream } from './instance/console';
export type { ConsoleFollowOptions, ConsoleLogOptions } from './instance/console-log';
export type { InstanceStats, StatsOptions, Rated } from './instance/metrics';
export type { InstanceFiles, FileStat, DirEntry, FileType, WriteOptions, OwnerOptions, TreeOptions, PullTreeOptions } from './instance/files';
export type { VirtualMachine, VmState } from './drivers/vm/vm';

// Options and devices.
export { OPTIONS, describeOptions } from './config/options';
export type { OptionSpec, OptionKey, ConfigValue, InstanceConfig, InstanceConfigInput, InstanceConfigPatch, InstanceType, Condition } from './config/options';
export { DEVICE_TYPES } from './devices/declarations';
export type { DeviceType, DeviceKeyInput, DeviceInput, DeviceConfig, DevicePatch, Devices, DevicesInput } from './devices/declarations';

// Snapshots, copies and exports.
export type {
  InstanceSnapshots,
  SnapshotInfo,
  SnapshotRecord,
  SnapshotCreateOptions,
  SnapshotRestoreOptions,
  SnapshotDeleteOptions,
  SnapshotEvent,
  SnapshotRenamedEvent,
  CopyOptions,
  MoveOptions,
} from './storage/types';

// Storage pools.
export type { HostStorageApi, HostStoragePools, HostStorageVolumes } from './storage/api';
export type { HostStorage, StoragePool } from './storage/pools/host-storage';
export type { StoragePools, StoragePoolUpdate } from './storage/pools/pools';
export type { PoolDriverName, RootDiskDevice, StoragePoolCreateOptions, StoragePoolInfo } from './storage/pools/types';
// Custom volumes.
export type { StorageVolumes } from './storage/volumes/volumes';
export type { StorageVolumeCreateOptions, StorageVolumeInfo, StorageVolumeUpdate, VolumeContentType, VolumeExportOptions, VolumeSnapshotInfo } from './storage/volumes/types';

// Images.
export type { ImageStore } from './images/store';
export type { Image, ImageInfo, ImageProgress, ImageStoreEvents, EnsureOptions, BuildOptions, PublishOptions, ImageImportOptions } from './images/types';
// Cancellation and progress of the long operations.
export type { Progress, LongOptions } from './core/abort';

// Networks.
export type { Networks, Network } from './network/networks';
export { NETWORK_KEYS } from './network/keys';
export type { NetworkKey, NetworkConfig, NetworkConfigInput } from './network/keys';
export type { Lease } from './network/dnsmasq';

// Host-wide lifecycle events.
export { LIFECYCLE_ACTIONS, PROFILE_ACTIONS, STORAGE_ACTIONS } from './events/lifecycle';
export type { LifecycleAction, LifecycleEvent, ProfileEvent, StorageAction, StorageEvent } from './events/lifecycle';
export type { EventsOptions, LifecycleIterator } from './events/iterator';

// Errors.
export * from './core/errors';

// An LXD server or cluster.
export { RemoteHost } from './drivers/remote/host';
export type { ClusterMember, ConnectOptions, RemoteCopyOptions, RemoteCreateOptions, RemoteLaunchOptions } from './drivers/remote/host';
export type { RemoteInstance } from './drivers/remote/instance';
export type { RemoteImages, CopyImageOptions, RemoteImageInfo } from './drivers/remote/images';
export type { RemoteProfiles } from './drivers/remote/profiles';
export type { RemoteStorage, RemoteStoragePools, RemoteStorageVolumes } from './drivers/remote/storage';
export { LxdClient, DEFAULT_SOCKET } from './drivers/remote/client';
export type { LxdEndpoint, LxdErrorDetails, LxdResponse, RequestOptions } from './drivers/remote/client';
