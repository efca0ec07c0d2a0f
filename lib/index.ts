export { Host, DEFAULT_HOST_PATH } from './host';
export type { HostOptions, ImportOptions, LaunchOptions } from './host';
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
export type { ConsoleStream } from './console/console';
export type { InstanceFiles, FileStat, DirEntry, FileType, WriteOptions } from './instance/files';
export { ContainerInstance } from './container/container';
export { VmInstance } from './vm/vm';
export type { VmState } from './vm/vm';
export { ImageStore } from './images/store';
export type { Image, ImageInfo, ImageProgress, EnsureOptions, BuildOptions, PublishOptions } from './images/store';
export { OPTIONS, describeOptions } from './config/options';
export type { OptionSpec, OptionKey, InstanceConfig, InstanceConfigInput, InstanceConfigPatch, InstanceType, Condition } from './config/options';
export * from './errors';
export { LIFECYCLE_ACTIONS } from './events/lifecycle';
export type { LifecycleAction, LifecycleEvent, EventsOptions } from './events/lifecycle';
export type { InstanceSnapshots, SnapshotInfo, SnapshotCreateOptions, SnapshotRestoreOptions, SnapshotEvent, SnapshotRenamedEvent, CopyOptions } from './storage/types';
export * from './remote';
