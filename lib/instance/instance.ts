/**
 * The one interface both instance types implement. A container (liblxc) and a VM (QEMU) are
 * driven through the same calls; what a type cannot do is refused with NotSupported, naming
 * the condition, never done silently differently.
 */
import type { EventEmitter } from 'eventemitter3';

import type { InstanceConfig, InstanceConfigInput, InstanceConfigPatch, InstanceType } from '../config/options';
import type { InstanceSnapshots, SnapshotEvent, SnapshotRenamedEvent } from '../storage/types';
import type { InstanceFiles } from './files';
import type { ExecOptions, ExecResult, InstanceProcess, SpawnOptions } from './process';

export type { InstanceType };

/** Lifecycle status, as LXD names it (lower case). */
export type InstanceStatus = 'stopped' | 'starting' | 'running' | 'stopping' | 'freezing' | 'frozen' | 'error';

export interface InstanceState {
  status: InstanceStatus;
  /** The init process (container) or the QEMU process (VM); null when stopped. */
  pid: number | null;
  cpu: { usageNs: number };
  memory: { usageBytes: number; limitBytes: number | null };
  processes: number;
  network: { addresses: string[] };
}

export interface StopOptions {
  /** Milliseconds to wait for a graceful shutdown before forcing it. Default 10 000. */
  timeout?: number;
  /** Kill at once, without asking the instance to shut down. */
  force?: boolean;
}

export interface StatusEvent {
  name: string;
  status: InstanceStatus;
  previous: InstanceStatus;
}

/** Events every instance emits; listen with `instance.on('status', …)`. */
export interface InstanceEvents {
  status: (event: StatusEvent) => void;
  'snapshot-created': (event: SnapshotEvent) => void;
  'snapshot-restored': (event: SnapshotEvent) => void;
  'snapshot-deleted': (event: SnapshotEvent) => void;
  'snapshot-renamed': (event: SnapshotRenamedEvent) => void;
}

/** What lxq keeps about an instance (its `lxq.json`), written atomically. */
export interface InstanceRecord {
  version: 1;
  name: string;
  type: InstanceType;
  image: string;
  /** What the image said about running it, copied at create so the image can later go. */
  imageMeta: Record<string, unknown>;
  config: InstanceConfig;
  createdAt: string;
}

export interface CreateOptions {
  /** Default 'container'. */
  type?: InstanceType;
  /** An image name from the host's image store, such as 'busybox' or 'vm/default'. */
  image: string;
  config?: InstanceConfigInput;
}

export interface Instance extends EventEmitter<InstanceEvents> {
  readonly name: string;
  readonly type: InstanceType;
  readonly image: string;
  readonly createdAt: Date;
  /** The options as stored (strings). */
  readonly config: Readonly<InstanceConfig>;

  start(): Promise<void>;
  /** Graceful, then forced after `timeout`; `{ force: true }` kills at once. */
  stop(options?: StopOptions): Promise<void>;
  restart(options?: StopOptions): Promise<void>;
  freeze(): Promise<void>;
  unfreeze(): Promise<void>;
  /** Removes the instance and everything it stored. It must be stopped unless `force` is set. */
  delete(options?: { force?: boolean }): Promise<void>;
  /** The status alone: cheaper than `state()`. */
  status(): Promise<InstanceStatus>;
  state(): Promise<InstanceState>;
  /** Changes options: validated first, applied live where the option allows it, else at the next start. */
  update(config: InstanceConfigPatch): Promise<void>;

  /** Runs a command to completion; output of any size is collected as Buffers. */
  exec(argv: string[], options?: ExecOptions): Promise<ExecResult>;
  /** Starts a command with streaming stdin/stdout/stderr. */
  spawn(argv: string[], options?: SpawnOptions): Promise<InstanceProcess>;
  /** Files inside the instance, resolved inside its own root (running or stopped). */
  readonly files: InstanceFiles;
  /** What the instance's init or kernel printed on its console, and where that log is kept. */
  readonly console: InstanceConsole;
  /** Snapshots of the instance's files or disk and record (see lib/storage). */
  readonly snapshots: InstanceSnapshots;
}

export interface InstanceConsole {
  /** The console log file on the host. */
  readonly path: string;
  /** The log's content so far ('' before the first start). */
  log(): Promise<string>;
}
