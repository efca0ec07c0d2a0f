export { Host, DEFAULT_HOST_PATH } from './host/host';
export type { HostOptions, ImportOptions, LaunchOptions } from './host/host';
export type { WaitFor, WaitOptions, WaitSpec } from './instance/wait';
export type { ImportTrust } from './instance/foreign';
export type {
  Instance,
  InstanceState,
  InstanceStatus,
  InstanceEvents,
  StatusEvent,
  StopOptions,
  StartOptions,
  ExportOptions,
  CreateOptions,
  InstanceRecord,
  InstanceConsole,
} from './instance/instance';
export type { ExecOptions, ExecResult, SpawnOptions, InstanceProcess, ExitStatus } from './instance/process';
export type { ConsoleStream } from './instance/console';
export type { InstanceFiles, FileStat, DirEntry, FileType, WriteOptions } from './instance/files';
export { ContainerInstance } from './drivers/container/container';
export { VmInstance } from './drivers/vm/vm';
export type { VmState } from './drivers/vm/vm';
export { ImageStore } from './images/store';
export type { Image, ImageInfo, ImageProgress, EnsureOptions, BuildOptions, PublishOptions } from './images/store';
export { OPTIONS, describeOptions } from './config/options';
export type { OptionSpec, OptionKey, InstanceConfig, InstanceConfigInput, InstanceConfigPatch, InstanceType, Condition } from './config/options';
export * from './core/errors';
export { LIFECYCLE_ACTIONS } from './events/lifecycle';
export type { LifecycleAction, LifecycleEvent, EventsOptions } from './events/lifecycle';
export type { InstanceSnapshots, SnapshotInfo, SnapshotCreateOptions, SnapshotRestoreOptions, SnapshotEvent, SnapshotRenamedEvent, CopyOptions } from './storage/types';
export * from './drivers/remote';
