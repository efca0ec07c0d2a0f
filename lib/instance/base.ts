/**
 * What both instance types share: the stored record, the per-instance operation queue, status
 * checks before any side effect, status events, and the stop policy (graceful, then forced).
 * A driver implements the `abstract` primitives only.
 */
import { EventEmitter } from 'eventemitter3';
import { promises as fs } from 'node:fs';
import * as path from 'node:path';

import { InstanceConfig, InstanceConfigPatch, InstanceType, patchConfig } from '../config/options';
import { InvalidArgument, InvalidState } from '../errors';
import { writeJsonAtomic } from '../util/fs';
import { Snapshots } from '../storage/snapshots';
import type { InstanceSnapshots, StorageDriver } from '../storage/types';
import type { InstanceFiles } from './files';
import type {
  Instance,
  InstanceConsole,
  InstanceEvents,
  InstanceRecord,
  InstanceState,
  InstanceStatus,
  StopOptions,
} from './instance';
import { checkExecTiming, collect, ExecOptions, ExecResult, InstanceProcess, SpawnOptions } from './process';

export const RECORD_FILE = 'lxq.json';
export const DEFAULT_STOP_TIMEOUT_MS = 10_000;

export abstract class BaseInstance extends EventEmitter<InstanceEvents> implements Instance {
  private queue: Promise<unknown> = Promise.resolve();
  private lastStatus: InstanceStatus | undefined;

  protected constructor(
    /** The instance's own directory under the host path. */
    readonly dir: string,
    protected record: InstanceRecord,
  ) {
    super();
  }

  get name(): string {
    return this.record.name;
  }
  get type(): InstanceType {
    return this.record.type;
  }
  get image(): string {
    return this.record.image;
  }
  get createdAt(): Date {
    return new Date(this.record.createdAt);
  }
  get config(): Readonly<InstanceConfig> {
    return this.record.config;
  }

  abstract readonly files: InstanceFiles;
  /** The instance's storage primitives (snapshot capture and restore), for lib/storage. */
  protected abstract readonly storage: StorageDriver;

  readonly snapshots: InstanceSnapshots = new Snapshots({
    name: () => this.name,
    type: () => this.type,
    dir: () => this.dir,
    record: () => this.record,
    driver: () => this.storage,
    serialized: (op) => this.serialized(op),
    status: () => this.status(),
    saveRecord: (r) => this.saveRecord(r),
    stop: () => this.stopNow(DEFAULT_STOP_TIMEOUT_MS, false),
    start: () => this.startNow(),
    emit: (event, payload) => void this.emit(event as 'snapshot-renamed', payload as { name: string; snapshot: string; previous: string }),
  });

  get console(): InstanceConsole {
    const file = this.consoleLogPath;
    return { path: file, log: () => fs.readFile(file, 'utf8').catch((e) => (e.code === 'ENOENT' ? '' : Promise.reject(e))) };
  }
  /** The host file the driver keeps the console output in. */
  protected abstract get consoleLogPath(): string;

  // ---- what a driver provides ----
  /**
   * Starts a command in the instance, refusing with InvalidState (`refusal`) unless it is
   * running: a driver that can check that on the way (the container's runner does) saves a
   * round trip on every exec.
   */
  protected abstract doSpawn(argv: string[], options: SpawnOptions): Promise<InstanceProcess>;
  protected abstract currentStatus(): Promise<InstanceStatus>;
  protected abstract doStart(): Promise<void>;
  /** Asks the instance to shut down; resolves true if it stopped within `timeoutMs`. */
  protected abstract doShutdown(timeoutMs: number): Promise<boolean>;
  protected abstract doKill(): Promise<void>;
  /** Resolves once the running instance is frozen (paused); refuses (`refusal`) unless it is running. */
  protected abstract doFreeze(): Promise<void>;
  /** Resolves once the frozen instance runs again; refuses (`refusal`) unless it is frozen. */
  protected abstract doUnfreeze(): Promise<void>;
  protected abstract doDelete(): Promise<void>;
  protected abstract doState(status: InstanceStatus): Promise<InstanceState>;
  /** Applies changed options: `live` says whether the instance is running now. */
  protected abstract applyConfig(next: InstanceConfig, previous: InstanceConfig, live: boolean): Promise<void>;

  // ---- the interface ----
  async status(): Promise<InstanceStatus> {
    return this.observe(await this.currentStatus());
  }

  state(): Promise<InstanceState> {
    return this.serialized(async () => {
      const s = await this.doState(await this.currentStatus());
      this.observe(s.status);
      return s;
    });
  }

  start(): Promise<void> {
    return this.serialized(() => this.startNow());
  }

  private async startNow(): Promise<void> {
    await this.require('start', ['stopped']);
    this.transition('starting');
    try {
      await this.doStart();
    } finally {
      await this.status();
    }
  }

  stop(options: StopOptions = {}): Promise<void> {
    const timeout = options.timeout ?? DEFAULT_STOP_TIMEOUT_MS;
    if (!Number.isFinite(timeout) || timeout < 0) {
      return Promise.reject(new InvalidArgument(`stop timeout must be a non-negative number of ms, got ${timeout}`));
    }
    return this.serialized(() => this.stopNow(timeout, options.force === true));
  }

  restart(options: StopOptions = {}): Promise<void> {
    return this.stop(options).then(() => this.start());
  }

  freeze(): Promise<void> {
    return this.serialized(async () => {
      await this.doFreeze(); // resolves once frozen: no need to ask again
      this.observe('frozen');
    });
  }

  unfreeze(): Promise<void> {
    return this.serialized(async () => {
      await this.doUnfreeze();
      this.observe('running');
    });
  }

  delete(options: { force?: boolean } = {}): Promise<void> {
    return this.serialized(async () => {
      const status = await this.currentStatus();
      if (status !== 'stopped') {
        if (!options.force) {
          throw new InvalidState(`cannot delete ${this.name}: it is ${status}; stop it first or pass { force: true }`, status);
        }
        await this.stopNow(0, true);
      }
      await this.doDelete();
      this.removeAllListeners();
    });
  }

  /**
   * Commands do not queue behind each other, but they do wait for a start, stop or freeze of
   * this instance already under way: a container's monitor answers nobody while it starts.
   */
  async spawn(argv: string[], options: SpawnOptions = {}): Promise<InstanceProcess> {
    await this.queue;
    return this.doSpawn(argv, options ?? {});
  }

  async exec(argv: string[], options: ExecOptions = {}): Promise<ExecResult> {
    checkExecTiming(options ?? {});
    const proc = await this.spawn(argv, options);
    return collect(proc, options ?? {}, `${JSON.stringify(argv[0])} in ${this.name}`);
  }

  update(patch: InstanceConfigPatch): Promise<void> {
    return this.serialized(async () => {
      const next = patchConfig(this.type, this.record.config, patch);
      const previous = this.record.config;
      const live = (await this.currentStatus()) !== 'stopped';
      await this.applyConfig(next, previous, live);
      await this.saveRecord({ ...this.record, config: next });
    });
  }

  // ---- shared machinery ----

  /** Runs operations on this instance one at a time, in call order. */
  protected serialized<T>(op: () => Promise<T>): Promise<T> {
    const run = this.queue.then(op, op);
    this.queue = run.catch(() => undefined);
    return run;
  }

  protected async require(op: string, allowed: InstanceStatus[]): Promise<InstanceStatus> {
    const status = this.observe(await this.currentStatus());
    if (!allowed.includes(status)) throw this.refusal(op, status, allowed);
    return status;
  }

  /** The error for an operation the instance's status does not allow. */
  protected refusal(op: string, status: InstanceStatus, allowed: InstanceStatus[]): InvalidState {
    return new InvalidState(`cannot ${op} ${this.name}: it is ${status} (needs ${allowed.join(' or ')})`, status);
  }

  private async stopNow(timeoutMs: number, force: boolean): Promise<void> {
    const status = this.observe(await this.currentStatus());
    if (status === 'stopped') return;
    this.transition('stopping');
    try {
      // A frozen instance cannot shut itself down; thaw it first (LXD does the same).
      if (!force && status === 'frozen') await this.doUnfreeze();
      const stopped = !force && timeoutMs > 0 && status !== 'error' && (await this.doShutdown(timeoutMs));
      if (!stopped) await this.doKill();
    } finally {
      await this.status();
    }
  }

  protected async saveRecord(record: InstanceRecord): Promise<void> {
    await writeJsonAtomic(path.join(this.dir, RECORD_FILE), record);
    this.record = record;
  }

  /** Records a status seen now and emits `status` if it changed. */
  protected observe(status: InstanceStatus): InstanceStatus {
    if (this.lastStatus !== undefined && status !== this.lastStatus) {
      const previous = this.lastStatus;
      this.lastStatus = status;
      this.emit('status', { name: this.name, status, previous });
    }
    this.lastStatus = status;
    return status;
  }

  /** A transitional status lxq itself enters (starting, stopping). */
  protected transition(status: InstanceStatus): void {
    this.observe(status);
  }
}
