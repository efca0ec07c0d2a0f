/**
 * What every instance does the same way, whether lxq runs it (lib/instance/base.ts, which the
 * container and VM drivers extend) or an LXD server does (lib/drivers/remote/instance.ts): the
 * contract's checks and policies, written once.
 *
 * A superclass rather than a set of functions: the checks need the instance's status, its queue
 * and its events together (a status read before a change, emitted if it moved; one operation at a
 * time; stop gracefully, then by force). Each side gives the primitives that differ (how the
 * status is read, how the instance starts, shuts down, is killed, renamed, has its devices
 * changed) and two hooks for lxq's bookkeeping of lifecycle events: `reported` (the local host's
 * journal, after the change) and `asOwn` (LXD's own events, marked as this process's).
 */
import { EventEmitter } from 'eventemitter3';

import type { InstanceConfig, InstanceConfigPatch, InstanceType } from '../config/options';
import { checkAborted, currentSignal, detached, longOperation, unlessAborted } from '../core/abort';
import { Aborted, Busy, InvalidState, NotFound, PermissionDenied, Timeout } from '../core/errors';
import { refuseUnknownKeys } from '../core/keys';
import { SerialQueue } from '../core/serial';
import type { DeviceConfig, DeviceInput, DevicePatch, Devices } from '../devices/declarations';
import type { LifecycleAction, LifecycleDetail } from '../events/lifecycle';
import type { InstanceSnapshots, MoveOptions } from '../storage/types';
import type { InstanceFiles } from './files';
import {
  checkMove,
  checkStart,
  checkStopTimeout,
  checkWaitForAddress,
  type DeviceState,
  type DriverState,
  type ExportOptions,
  type Instance,
  type InstanceConsole,
  type InstanceEvents,
  type InstanceState,
  type InstanceStatus,
  type StartOptions,
  type StopOptions,
  type WaitForAddressOptions,
} from './instance';
import { checkStats, type InstanceStats, type InstanceUsage, NO_DETAIL, type StatsOptions, statsLoop, type UsageDetail } from './metrics';
import { baseDeviceState, checkDeviceName, withDevice, withoutDevice, withPatchedDevice } from './device-edits';
import { validateName } from './names';
import { checkExecOptions, collect, type ExecOptions, type ExecResult, type InstanceProcess, SPAWN_OPTION_KEYS, type SpawnOptions } from './process';
import { waitFor, type WaitSpec } from './wait';


export type AddressFamily = 'inet' | 'inet6';
/** How long `[Symbol.asyncDispose]` lets an instance shut down before it is killed. */
export const DISPOSE_GRACE_MS = 2_000;

// Node has had Symbol.asyncDispose since 20.4 (as Symbol.for('nodejs.asyncDispose')): the same symbol, for an older 20.
if (!Symbol.asyncDispose) Object.defineProperty(Symbol, 'asyncDispose', { value: Symbol.for('nodejs.asyncDispose') });
/** How a stop ended: a clean shutdown, or a forced one. */
export type StopOutcome = 'instance-shutdown' | 'instance-stopped';

/** Whether `address` is of `family` (IPv6 addresses, and only they, hold a ':'). */
export function ofFamily(address: string, family: AddressFamily): boolean {
  return (family === 'inet') === !address.includes(':');
}

export abstract class CommonInstance extends EventEmitter<InstanceEvents> implements Instance {
  /** Lifecycle operations on this instance, one at a time, in call order (see serialized). */
  private readonly operations = new SerialQueue();
  private lastStatus: InstanceStatus | undefined;

  abstract readonly name: string;
  abstract readonly type: InstanceType;
  abstract readonly image: string;
  abstract readonly createdAt: Date;
  abstract readonly config: Readonly<InstanceConfig>;
  abstract readonly devices: Readonly<Devices>;
  abstract readonly profiles: readonly string[];
  abstract readonly expandedConfig: Readonly<InstanceConfig>;
  abstract readonly expandedDevices: Readonly<Devices>;
  abstract readonly ephemeral: boolean;
  abstract readonly files: InstanceFiles;
  abstract readonly console: InstanceConsole;
  abstract readonly snapshots: InstanceSnapshots;
  abstract freeze(): Promise<void>;
  abstract unfreeze(): Promise<void>;
  abstract delete(options?: { force?: boolean }): Promise<void>;
  abstract update(patch: InstanceConfigPatch): Promise<void>;
  abstract setProfiles(names: readonly string[]): Promise<void>;
  abstract export(file: string, options?: ExportOptions): Promise<void>;

  // ---- what each side provides ----
  protected abstract currentStatus(): Promise<InstanceStatus>;
  /** Starts the stopped instance (its status was checked). */
  protected abstract doStart(): Promise<void>;
  /** Asks the instance to shut down; resolves true if it stopped within `timeoutMs`. */
  protected abstract doShutdown(timeoutMs: number): Promise<boolean>;
  protected abstract doKill(): Promise<void>;
  /**
   * Resolves once the frozen instance runs again; `from` 'freezing' thaws one whose freeze stopped
   * midway (its process killed while the cgroup read FREEZING).
   */
  protected abstract doUnfreeze(from?: 'frozen' | 'freezing'): Promise<void>;
  /**
   * Starts a command in the instance, refusing with InvalidState (`refusal`) unless it is
   * running: a driver that can check that on the way (the container's runner does) saves a
   * round trip on every exec.
   */
  protected abstract doSpawn(argv: string[], options: SpawnOptions): Promise<InstanceProcess>;
  /** The state without its device list (state() adds it). */
  protected abstract readState(): Promise<DriverState>;
  /** Renames the stopped instance to `newName` (checked, and not its name now). */
  protected abstract moveTo(newName: string): Promise<void>;
  /** Moves the stopped instance's root disk to `pool` (inside serialized()); false if it is on it already. */
  protected abstract moveToPool(pool: string): Promise<boolean>;
  /**
   * Replaces the devices by `change(devices)`, given the devices as they are now (it throws to
   * refuse): checked against the host, applied to a running instance, kept for the next starts.
   */
  protected abstract changeDevices(change: (devices: Readonly<Devices>) => Devices): Promise<void>;
  /**
   * A search for an address of `family`, called once per poll of waitForAddress until it finds
   * one; it may keep what it learnt between polls.
   */
  protected abstract addressSearch(family: AddressFamily): () => Promise<string | undefined>;
  /** How often waitForAddress looks. */
  protected abstract readonly addressPollMs: number;

  // ---- hooks (by default, nothing) ----
  /** Runs one queued operation: the local base holds the instance's lock file around it, for other processes. */
  protected exclusive<T>(op: () => Promise<T>): Promise<T> {
    return op();
  }
  /** Reports a change this instance went through (the local host's journal); a failure to report never fails the change. */
  protected async reported(_action: LifecycleAction, _detail?: LifecycleDetail): Promise<void> {}
  /** Runs `op`, whose lifecycle events of `actions` are this process's (an LXD server reports them itself). */
  protected asOwn<T>(_actions: LifecycleAction[], op: () => Promise<T>): Promise<T> {
    return op();
  }
  /** What must be ready before the instance runs (the local base's proxy devices listen first). */
  protected async beforeStart(): Promise<void> {}
  /** Why the instance may not start (the local base: security.protection.start); an LXD server refuses by itself. */
  protected startProtection(): Error | undefined {
    return undefined;
  }
  /** Undoes beforeStart after a failed start: the instance's directory is left as it was found. */
  protected async startFailed(): Promise<void> {}
  /** Usage figures beyond state() (CPU time per CPU and mode, memory's breakdown, disk I/O) of the running instance. */
  protected async usageDetail(_state: InstanceState): Promise<UsageDetail> {
    return NO_DETAIL;
  }
  /**
   * After a `stop()` (inside serialized()): an ephemeral instance is deleted here (the local
   * base); an LXD server deletes its own.
   */
  protected async stopped(): Promise<void> {}
  /** `updateDevice('root', patch)` where the driver changes its root disk itself (inside serialized()). */
  protected updateRootDisk?(patch: DevicePatch): Promise<void>;

  // ---- the queue and the status ----

  /** @internal Resolves once the lifecycle operations queued on this instance so far are done (for the host's events). */
  get idle(): Promise<void> {
    return this.operations.idle;
  }

  /** Runs operations on this instance one at a time, in call order (see exclusive). */
  protected serialized<T>(op: () => Promise<T>): Promise<T> {
    // An operation aborted while it waited for its turn does nothing.
    return this.operations.run(() => this.exclusive(() => (checkAborted(), op())));
  }

  async status(): Promise<InstanceStatus> {
    return this.observe(await this.currentStatus());
  }

  /** Records a status seen now and emits `status` if it changed. */
  protected observe(status: InstanceStatus): InstanceStatus {
    const previous = this.lastStatus;
    this.lastStatus = status;
    if (previous !== undefined && previous !== status) this.emit('status', { name: this.name, status, previous });
    return status;
  }

  /** The status last seen (undefined before the first read). */
  protected get observedStatus(): InstanceStatus | undefined {
    return this.lastStatus;
  }

  /** A transitional status lxq itself enters (starting, stopping). */
  protected transition(status: InstanceStatus): void {
    this.observe(status);
  }

  /** The status now, if `op` is allowed in it; else InvalidState (see refusal). */
  protected async require(op: string, allowed: InstanceStatus[]): Promise<InstanceStatus> {
    const status = this.observe(await this.currentStatus());
    if (!allowed.includes(status)) throw this.refusal(op, status, allowed);
    return status;
  }

  /** The error for an operation the instance's status does not allow. */
  protected refusal(op: string, status: InstanceStatus, allowed: InstanceStatus[]): InvalidState {
    return new InvalidState(`cannot ${op} ${this.name}: it is ${status} (needs ${allowed.join(' or ')})`, status);
  }

  /** The error for a delete without `force` of an instance that is not stopped. */
  protected deleteRefusal(status: InstanceStatus): InvalidState {
    return new InvalidState(`cannot delete ${this.name}: it is ${status}; stop it first or pass { force: true }`, status);
  }

  state(): Promise<InstanceState> {
    return this.serialized(async () => {
      const s = await this.readState();
      this.observe(s.status);
      const expandedDevices = { ...this.expandedDevices };
      const devices = Object.entries(expandedDevices)
        .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
        .map(([name, d]) => this.deviceState(name, d, s.status));
      await this.liveDevices(devices, expandedDevices, s).catch(() => undefined); // what cannot be read (stopping meanwhile) is left out
      return { ...s, devices, ephemeral: this.ephemeral, profiles: [...this.profiles], expandedConfig: { ...this.expandedConfig }, expandedDevices };
    });
  }

  /** See Instance.stats (lib/instance/metrics.ts). */
  stats(options?: StatsOptions): AsyncIterable<InstanceStats> {
    return statsLoop(() => this.usage(), checkStats(options));
  }

  /** @internal The state and what the driver reads beyond it, for stats() and the host's metrics. */
  async usage(): Promise<InstanceUsage> {
    const state = await this.state();
    // A detail that cannot be read (the instance stopping meanwhile: its cgroups gone) is left out.
    return { state, detail: state.pid === null ? NO_DETAIL : await this.usageDetail(state).catch(() => NO_DETAIL) };
  }

  /** What state() says of a device; drivers add what they know (QEMU ids, a container's hot-plugged nodes). */
  protected deviceState(name: string, d: DeviceConfig, _status?: InstanceStatus): DeviceState {
    return baseDeviceState(name, d);
  }

  /** Adds each device's live status to `states` (in place), read where the truth is: see DeviceState. */
  protected async liveDevices(_states: DeviceState[], _devices: Devices, _s: DriverState): Promise<void> {}

  // ---- lifecycle ----

  async start(options?: StartOptions): Promise<void> {
    const wait = checkStart(options);
    const signal = options?.signal;
    await longOperation(`starting ${this.name}`, options, async () => {
      await this.serialized(async () => {
        await this.startNow();
        await this.reported('instance-started');
      });
      if (wait === undefined) return;
      const spec = signal === undefined ? wait : typeof wait === 'string' ? { for: wait, signal } : { ...wait, signal: wait.signal ? AbortSignal.any([wait.signal, signal]) : signal };
      await this.wait(spec).catch(async (e) => {
        // An aborted start leaves the instance stopped, even once it ran (outside the aborted scope).
        if (signal?.aborted) await detached(() => this.stop({ force: true })).catch(() => undefined);
        throw e;
      });
    });
  }

  /** See Instance.wait (lib/instance/wait.ts). */
  wait(spec: WaitSpec): Promise<void> {
    return waitFor(this, spec);
  }

  stop(options: StopOptions = {}): Promise<void> {
    let timeout: number;
    try {
      timeout = checkStopTimeout('stop', options ?? {});
    } catch (e) {
      return Promise.reject(e);
    }
    return longOperation(`stopping ${this.name}`, options, () =>
      this.serialized(async () => {
        const how = await this.stopNow(timeout, options?.force === true);
        if (how) await this.reported(how);
        await this.stopped(); // stopped, even by an abort: an ephemeral instance goes
        this.checkStopAborted(how);
      }),
    );
  }

  /** After a stop: Aborted if the caller's abort cut its clean shutdown short (the instance is then stopped, by force). */
  private checkStopAborted(how: string | undefined): void {
    if (how === 'instance-stopped' && currentSignal()?.aborted) throw new Aborted(`stopping ${this.name} was aborted: its clean shutdown was cut short and it was stopped by force`);
  }

  /**
   * `await using c = await host.launch(…)`: at the end of the scope the instance is stopped (a
   * shutdown of DISPOSE_GRACE_MS, then killed) and deleted; nothing is thrown if it is gone already.
   */
  async [Symbol.asyncDispose](): Promise<void> {
    const gone = (e: unknown) => (e instanceof NotFound ? undefined : Promise.reject(e));
    await this.stop({ timeout: DISPOSE_GRACE_MS }).catch(gone);
    await this.delete({ force: true }).catch(gone);
  }

  restart(options: StopOptions = {}): Promise<void> {
    let timeout: number;
    try {
      timeout = checkStopTimeout('restart', options ?? {});
    } catch (e) {
      return Promise.reject(e);
    }
    return longOperation(`restarting ${this.name}`, options, () => this.serialized(async () => {
      const refused = this.startProtection(); // before the stop: a refused restart leaves it running
      if (refused) throw refused;
      const how = await this.stopNow(timeout, options?.force === true);
      try {
        this.checkStopAborted(how);
        await this.startNow();
      } catch (e) {
        if (how) await this.reported(how);
        throw e;
      }
      await this.reported('instance-restarted');
    }));
  }

  /** Starts the stopped instance (inside serialized()). */
  protected async startNow(): Promise<void> {
    const refused = this.startProtection();
    if (refused) throw refused;
    await this.require('start', ['stopped']);
    await this.beforeStart();
    this.transition('starting');
    try {
      await this.asOwn(['instance-started'], async () => {
        await this.doStart();
        // Aborted while it started (liblxc's or QEMU's start is not cut short): it is stopped again.
        if (currentSignal()?.aborted) {
          await this.doKill();
          checkAborted();
        }
      });
    } catch (e) {
      await this.startFailed();
      throw e;
    } finally {
      // Read only to emit the status reached: a failure to read it is not the start's.
      await this.status().catch(() => undefined);
    }
  }

  /**
   * Stops the instance (inside serialized()): a clean shutdown for `timeoutMs` unless `force`,
   * then a forced stop. Says how it ended (undefined: it was stopped already).
   */
  protected async stopNow(timeoutMs: number, force: boolean): Promise<StopOutcome | undefined> {
    const status = this.observe(await this.currentStatus());
    if (status === 'stopped') return undefined;
    this.transition('stopping');
    try {
      return await this.asOwn(['instance-stopped', 'instance-shutdown', 'instance-resumed'], async () => {
        // A frozen instance cannot shut itself down; thaw it first (LXD does the same).
        if (!force && status === 'frozen') await this.doUnfreeze();
        // An abort cuts the clean shutdown short: the instance is stopped by force (see checkStopAborted).
        const stopped = !force && timeoutMs > 0 && status !== 'error' && (await unlessAborted(this.doShutdown(timeoutMs), () => false));
        if (!stopped) await this.doKill();
        return stopped ? 'instance-shutdown' : 'instance-stopped';
      });
    } finally {
      // Read only to emit the status reached: a failure to read it is not the stop's.
      await this.status().catch(() => undefined);
    }
  }

  /** Renames a stopped instance (a running one is refused with Busy). */
  rename(newName: string): Promise<void> {
    try {
      validateName(newName);
    } catch (e) {
      return Promise.reject(e);
    }
    return this.serialized(async () => {
      const status = this.observe(await this.currentStatus());
      if (status !== 'stopped') throw new Busy(`cannot rename ${this.name}: it is ${status}; stop it first`);
      const previous = this.name;
      if (newName === previous) return;
      await this.moveTo(newName);
      this.emit('renamed', { name: newName, previous });
      await this.reported('instance-renamed', { previous });
    });
  }

  /** LXD's `lxc move` on one host: another pool for its root disk, a new name, or both (see MoveOptions). */
  move(options: MoveOptions): Promise<void> {
    try {
      checkMove(options);
    } catch (e) {
      return Promise.reject(e);
    }
    return longOperation(`moving ${this.name}`, options, () =>
      this.serialized(async () => {
        const status = this.observe(await this.currentStatus());
        // As LXD: an instance moves between pools only when stopped (a rename likewise).
        if (status !== 'stopped') throw new Busy(`cannot move ${this.name}: it is ${status}; stop it first`);
        if (options.pool !== undefined && (await this.moveToPool(options.pool))) await this.reported('instance-updated');
        const previous = this.name;
        if (options.name === undefined || options.name === previous) return;
        await this.moveTo(options.name);
        this.emit('renamed', { name: options.name, previous });
        await this.reported('instance-renamed', { previous });
      }),
    );
  }

  // ---- commands ----

  async spawn(argv: string[], options: SpawnOptions = {}): Promise<InstanceProcess> {
    refuseUnknownKeys('spawn', options, SPAWN_OPTION_KEYS);
    return this.startProcess(argv, options ?? {});
  }

  async exec(argv: string[], options: ExecOptions = {}): Promise<ExecResult> {
    checkExecOptions(options ?? {});
    const proc = await this.startProcess(argv, options ?? {});
    return collect(proc, options ?? {}, `${JSON.stringify(argv[0])} in ${this.name}`);
  }

  /**
   * Commands do not queue behind each other, but they do wait for a start, stop or freeze of
   * this instance already under way: a container's monitor answers nobody while it starts.
   */
  private async startProcess(argv: string[], options: SpawnOptions): Promise<InstanceProcess> {
    await this.idle;
    return this.doSpawn(argv, options);
  }

  // ---- addresses ----

  async waitForAddress(options: WaitForAddressOptions = {}): Promise<string> {
    const { family, timeout } = checkWaitForAddress(options);
    await this.require('wait for an address of', ['running', 'starting']);
    const deadline = Date.now() + timeout;
    const search = this.addressSearch(family);
    for (;;) {
      if (options?.signal?.aborted) throw new Aborted(`waiting for an address of ${this.name} was aborted`);
      const address = await search();
      if (address) return address;
      if (Date.now() >= deadline) throw new Timeout(`${this.name} had no ${family === 'inet' ? 'IPv4' : 'IPv6'} address within ${timeout} ms`);
      await new Promise((r) => setTimeout(r, this.addressPollMs));
    }
  }

  // ---- devices ----

  addDevice(name: string, device: DeviceInput): Promise<void> {
    return this.serialized(async () => {
      checkDeviceName(name);
      await this.changeDevices((devices) => withDevice(this, devices, name, device));
    });
  }

  removeDevice(name: string): Promise<void> {
    return this.serialized(async () => {
      checkDeviceName(name);
      await this.changeDevices((devices) => withoutDevice(this, devices, name));
    });
  }

  updateDevice(name: string, patch: DevicePatch): Promise<void> {
    return this.serialized(async () => {
      checkDeviceName(name);
      // The root disk is not among the devices (its pool and size are the record's own).
      if (name === 'root' && !(name in this.devices) && this.updateRootDisk) return this.updateRootDisk(patch);
      await this.changeDevices((devices) => withPatchedDevice(this, devices, name, patch));
    });
  }
}

/** LXD's security.protection.* on a local instance: the operation refused while the key is true (an LXD server refuses by itself). */
export function protection(i: { name: string; expandedConfig: Readonly<Record<string, string>> }, key: string, op: string): PermissionDenied | undefined {
  if (i.expandedConfig[key] === 'true') return new PermissionDenied(`cannot ${op} ${i.name}: it is protected by ${key}=true (unset it first)`);
}
