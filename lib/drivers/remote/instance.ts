/**
 * An instance on an LXD server, behind lxq's `Instance` interface: lifecycle through PUT
 * …/state, state() from …/state, options and devices through PUT of the instance with
 * If-Match (retried on a concurrent change), commands through the exec websockets
 * (lib/drivers/remote/exec.ts), files through the files API (files.ts), snapshots through …/snapshots
 * (snapshots.ts). The same status checks, errors and `status` events as the local drivers.
 */
import { EventEmitter } from 'eventemitter3';

import { type InstanceConfig, type InstanceConfigPatch, findOption, patchConfig } from '../../config/options';
import { parseMemory } from '../../core/units';
import type { DeviceConfig, DeviceInput, DevicePatch, Devices } from '../../devices/declarations';
import { withHwaddrs } from '../../devices/nic';
import { checkPaths, devicePath, normalizeDevice, patchDevice, validateDeviceName } from '../../devices/validate';
import { Aborted, AlreadyExists, Busy, InvalidArgument, InvalidState, LxqError, NotFound, NotSupported, OperationFailed, Timeout } from '../../core/errors';
import { IMPLIED, type LifecycleAction } from '../../events/lifecycle';
import type { InstanceFiles } from '../../instance/files';
import {
  type DeviceState,
  type Instance,
  type InstanceConsole,
  type InstanceEvents,
  type InstanceRecord,
  type InstanceState,
  type InstanceStatus,
  type InstanceType,
  type NetworkInterface,
  checkStopTimeout,
  checkWaitForAddress,
  reportedAddresses,
  type StopOptions,
  type WaitForAddressOptions,
  checkStart,
  type StartOptions,
  type ExportOptions,
} from '../../instance/instance';
import { waitFor, type WaitSpec } from '../../instance/wait';
import { checkExecOptions, checkSpawn, collect, type ExecOptions, type ExecResult, type InstanceProcess, instanceEnvironment, SPAWN_OPTION_KEYS, type SpawnOptions, checkPty } from '../../instance/process';
import type { InstanceSnapshots } from '../../storage/types';
import { refuseUnknownKeys } from '../../core/keys';
import type { LxdClient } from './client';
import { ConsoleHub } from '../../instance/console';
import { remoteConsole } from './console';
import { type RemoteSockets, remoteSpawn } from './exec';
import { RemoteFiles } from './files';
import { RemoteSnapshots } from './snapshots';

/** Names LXD accepts for instances and cluster members. */
export const LXD_NAME = /^[a-zA-Z][a-zA-Z0-9-]{0,62}$/;
/** LXD's instance names: letters, digits and '-', starting with a letter, at most 63 characters. */
export function checkName(name: string): void {
  if (typeof name !== 'string' || !LXD_NAME.test(name) || name.endsWith('-'))
    throw new InvalidArgument(`instance name ${JSON.stringify(name)}: LXD accepts letters, digits and '-', starting with a letter, at most 63 characters`);
}

const STATUS: Record<string, InstanceStatus> = {
  Running: 'running', Stopped: 'stopped', Frozen: 'frozen', Error: 'error', Starting: 'starting', Stopping: 'stopping', Freezing: 'freezing',
};
export const lxdStatus = (s: string): InstanceStatus => STATUS[s] ?? 'error';
export const lxdType = (t: string): InstanceType => (t === 'virtual-machine' ? 'vm' : 'container');
/** LXD's name of an lxq instance type. */
export const lxdTypeName = (t: InstanceType): string => (t === 'vm' ? 'virtual-machine' : 'container');

/** lxq options LXD has no equivalent of. */
const NOT_ON_LXD = ['vm.accel'];
/** How often waitForAddress asks for the instance's state. */
const ADDRESS_POLL_MS = 250;
/** Attempts of an update whose If-Match lost against a concurrent change. */
const UPDATE_ATTEMPTS = 5;

/** What the RemoteHost gives each instance it holds. */
export interface RemoteInstanceHooks {
  /** Marks the lifecycle events of `actions` on `name` as this process's own until `done()`. */
  expect(name: string, actions: LifecycleAction[]): () => void;
  /** The instance is gone, or now has another name. */
  deleted(instance: RemoteInstance): void;
  renamed(instance: RemoteInstance, previous: string): void;
  /** The host's part in commands and consoles: their ends, and closing their websockets with the host. */
  sockets: RemoteSockets;
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- LXD's JSON: its fields are read where they are used
type LxdInstance = Record<string, any>;

export class RemoteInstance extends EventEmitter<InstanceEvents> implements Instance {
  private queue: Promise<unknown> = Promise.resolve();
  private lastStatus: InstanceStatus | undefined;
  private meta: LxdInstance;
  private etag: string | undefined;

  readonly files: InstanceFiles;
  readonly snapshots: InstanceSnapshots;
  private readonly consoleHub = new ConsoleHub(
    async () => {
      await this.require('attach to the console of', ['running']);
      return remoteConsole(this.client, this.path, this.hooks.sockets);
    },
    () => new NotSupported(`the console of ${this.name} has no window size`),
  );

  constructor(
    private readonly client: LxdClient,
    meta: LxdInstance,
    private readonly hooks: RemoteInstanceHooks,
    etag?: string,
  ) {
    super();
    this.meta = meta;
    this.etag = etag;
    this.lastStatus = lxdStatus(meta.status);
    this.files = new RemoteFiles(client, () => ({ path: this.path, name: this.name }));
    this.snapshots = new RemoteSnapshots({
      client,
      path: () => this.path,
      name: () => this.name,
      record: (m) => this.recordOf(m),
      serialized: (op) => this.serialized(op),
      refresh: async () => void this.observe(await this.currentStatus()),
      emit: (event, payload) => void this.emit(event as 'snapshot-renamed', payload as { name: string; snapshot: string; previous: string }),
    });
  }

  get name(): string {
    return this.meta.name;
  }
  get type(): InstanceType {
    return lxdType(this.meta.type);
  }
  /** The image it was made from, as LXD recorded it. */
  get image(): string {
    return this.meta.config?.['image.description'] ?? this.meta.config?.['volatile.base_image'] ?? '';
  }
  get createdAt(): Date {
    return new Date(this.meta.created_at);
  }
  /** The cluster member it runs on ('' or 'none' when the server is not clustered). */
  get location(): string | undefined {
    return this.meta.location || undefined;
  }
  /** lxq's options among the instance's LXD config (LXD's own volatile.* and image.* keys are left out). */
  get config(): Readonly<InstanceConfig> {
    return lxqConfig(this.meta.config ?? {});
  }
  /** The instance's own devices (not its profiles'), in LXD's form, which is lxq's. */
  get devices(): Readonly<Devices> {
    return (this.meta.devices ?? {}) as Devices;
  }

  private get path(): string {
    return `/1.0/instances/${encodeURIComponent(this.name)}`;
  }

  get console(): InstanceConsole {
    return {
      path: `${this.client.where}:${this.path}/console`,
      log: async () => {
        const r = await this.client.request('GET', this.client.url(`${this.path}/console`), undefined, { binary: true }).catch((e) => {
          if (e instanceof NotFound) return undefined; // never started: no log yet
          throw e;
        });
        return r?.raw?.toString('utf8') ?? '';
      },
      attach: () => this.consoleHub.attach(),
    };
  }

  // ---- status ----

  /** Reads the instance again (config, devices, status, ETag). */
  private async refresh(): Promise<LxdInstance> {
    const r = await this.client.request('GET', this.client.url(this.path)).catch((e) => {
      if (e instanceof NotFound) throw new NotFound(`no instance named "${this.name}" on the LXD server at ${this.client.where}`);
      throw e;
    });
    this.meta = r.metadata;
    this.etag = r.etag;
    return this.meta;
  }

  private async currentStatus(): Promise<InstanceStatus> {
    return lxdStatus((await this.refresh()).status);
  }

  async status(): Promise<InstanceStatus> {
    return this.observe(await this.currentStatus());
  }

  /** Records a status seen now and emits `status` if it changed. */
  private observe(status: InstanceStatus): InstanceStatus {
    const previous = this.lastStatus;
    this.lastStatus = status;
    if (previous !== undefined && previous !== status) this.emit('status', { name: this.name, status, previous });
    return status;
  }

  /**
   * A lifecycle event another client caused (lib/drivers/remote/events.ts): the status it implies, or
   * for a change of config or devices, a fresh read.
   */
  observeExternal(action: LifecycleAction): void {
    const implied = IMPLIED[action];
    if (implied !== undefined) this.observe(implied);
    else if (action === 'instance-updated') void this.serialized(() => this.refresh()).catch(() => undefined);
  }

  /** The host read this instance again (get, list). */
  adopt(meta: LxdInstance, etag?: string): void {
    this.meta = meta;
    this.etag = etag ?? this.etag;
    this.observe(lxdStatus(meta.status));
  }

  /** Another client renamed it: follow the new name. */
  async renamedElsewhere(name: string): Promise<void> {
    const previous = this.name;
    this.meta = { ...this.meta, name };
    this.emit('renamed', { name, previous });
    this.hooks.renamed(this, previous);
  }

  /** After the events websocket came back: what changed while it was away. */
  resync(): Promise<void> {
    return this.serialized(async () => void this.observe(await this.currentStatus())).catch(() => undefined);
  }

  private async require(op: string, allowed: InstanceStatus[]): Promise<InstanceStatus> {
    const status = this.observe(await this.currentStatus());
    if (!allowed.includes(status)) throw this.refusal(op, status, allowed);
    return status;
  }

  private refusal(op: string, status: InstanceStatus, allowed: InstanceStatus[]): InvalidState {
    return new InvalidState(`cannot ${op} ${this.name}: it is ${status} (needs ${allowed.join(' or ')})`, status);
  }

  /** Runs operations on this instance one at a time, in call order. */
  private serialized<T>(op: () => Promise<T>): Promise<T> {
    const run = this.queue.then(op, op);
    this.queue = run.catch(() => undefined);
    return run;
  }

  /** Runs `op` with the lifecycle events of `actions` counted as this process's own. */
  private async ours<T>(actions: LifecycleAction[], op: () => Promise<T>): Promise<T> {
    const done = this.hooks.expect(this.name, actions);
    try {
      return await op();
    } finally {
      done();
    }
  }

  private setState(body: Record<string, unknown>): Promise<unknown> {
    return this.client.call('PUT', this.client.url(`${this.path}/state`), body);
  }

  // ---- lifecycle ----

  async start(options?: StartOptions): Promise<void> {
    const wait = checkStart(options);
    await this.serialized(() => this.startNow());
    if (wait !== undefined) await this.wait(wait);
  }

  /** See Instance.wait (lib/instance/wait.ts: one implementation for every driver). */
  wait(spec: WaitSpec): Promise<void> {
    return waitFor(this, spec);
  }

  private async startNow(): Promise<void> {
    await this.require('start', ['stopped']);
    this.observe('starting');
    try {
      await this.ours(['instance-started'], () => this.setState({ action: 'start', timeout: 30 }));
    } finally {
      await this.status().catch(() => undefined);
    }
  }

  stop(options: StopOptions = {}): Promise<void> {
    let timeout: number;
    try {
      timeout = checkStopTimeout('stop', options ?? {});
    } catch (e) {
      return Promise.reject(e);
    }
    return this.serialized(() => this.stopNow(timeout, options?.force === true));
  }

  restart(options: StopOptions = {}): Promise<void> {
    let timeout: number;
    try {
      timeout = checkStopTimeout('restart', options ?? {});
    } catch (e) {
      return Promise.reject(e);
    }
    return this.serialized(async () => {
      await this.stopNow(timeout, options?.force === true);
      await this.startNow();
    });
  }

  /** As locally: a clean shutdown for `timeoutMs` (LXD counts whole seconds), then a forced stop. */
  private async stopNow(timeoutMs: number, force: boolean): Promise<void> {
    const status = this.observe(await this.currentStatus());
    if (status === 'stopped') return;
    this.observe('stopping');
    try {
      await this.ours(['instance-stopped', 'instance-shutdown', 'instance-resumed'], async () => {
        if (!force && status === 'frozen') await this.setState({ action: 'unfreeze' });
        if (!force && timeoutMs > 0 && status !== 'error') {
          try {
            await this.setState({ action: 'stop', force: false, timeout: Math.max(1, Math.ceil(timeoutMs / 1000)) });
            return;
          } catch (e) {
            if (!(e instanceof LxqError) || e instanceof NotFound) throw e;
            if ((await this.currentStatus()) === 'stopped') return;
          }
        }
        // The clean shutdown may end between that status read and this forced stop: not a failure.
        await this.setState({ action: 'stop', force: true }).catch(async (e) => ((await this.currentStatus()) === 'stopped' ? undefined : Promise.reject(e)));
      });
    } finally {
      await this.status().catch(() => undefined);
    }
  }

  freeze(): Promise<void> {
    return this.serialized(async () => {
      await this.require('freeze', ['running']);
      await this.ours(['instance-paused'], () => this.setState({ action: 'freeze' }));
      this.observe('frozen');
    });
  }

  unfreeze(): Promise<void> {
    return this.serialized(async () => {
      await this.require('unfreeze', ['frozen']);
      await this.ours(['instance-resumed'], () => this.setState({ action: 'unfreeze' }));
      this.observe('running');
    });
  }

  delete(options: { force?: boolean } = {}): Promise<void> {
    return this.serialized(async () => {
      const remove = () => this.ours(['instance-deleted'], () => this.client.call('DELETE', this.client.url(this.path)));
      if (options?.force) {
        if ((await this.currentStatus()) !== 'stopped') await this.stopNow(0, true);
        await remove();
      } else {
        // The server refuses an instance that is not stopped itself: no status read first (one
        // request less), the status asked only to word the refusal as the local drivers do.
        await remove().catch(async (e) => {
          if (!(e instanceof InvalidState)) throw e;
          const status = await this.currentStatus();
          throw new InvalidState(`cannot delete ${this.name}: it is ${status}; stop it first or pass { force: true }`, status);
        });
      }
      this.hooks.deleted(this);
      this.removeAllListeners();
    });
  }

  rename(newName: string): Promise<void> {
    try {
      checkName(newName);
    } catch (e) {
      return Promise.reject(e);
    }
    return this.serialized(async () => {
      const status = this.observe(await this.currentStatus());
      if (status !== 'stopped') throw new Busy(`cannot rename ${this.name}: it is ${status}; stop it first`);
      const previous = this.name;
      if (newName === previous) return;
      const taken = await this.client.request('GET', this.client.url(`/1.0/instances/${newName}`)).then(() => true, (e) => (e instanceof NotFound ? false : Promise.reject(e)));
      if (taken) throw new AlreadyExists(`an instance named "${newName}" already exists on the LXD server at ${this.client.where}`);
      await this.ours(['instance-renamed'], () => this.client.call('POST', this.client.url(this.path), { name: newName }));
      this.meta = { ...this.meta, name: newName };
      await this.refresh();
      this.hooks.renamed(this, previous);
      this.emit('renamed', { name: newName, previous });
    });
  }

  export(_file: string, _options?: ExportOptions): Promise<void> {
    return Promise.reject(new NotSupported(`export of ${this.name}: an instance on an LXD server is exported by LXD itself (lxc export, /1.0/instances/<name>/backups), not to lxq's format`));
  }

  // ---- state ----

  state(): Promise<InstanceState> {
    return this.serialized(async () => {
      const m = (await this.client.request('GET', this.client.url(`${this.path}/state`))).metadata;
      // eslint-disable-next-line @typescript-eslint/no-explicit-any -- LXD's JSON: its fields are read where they are used
      const interfaces: NetworkInterface[] = Object.entries<any>(m.network ?? {}).map(([name, n]) => ({
        name,
        hwaddr: n.hwaddr ?? '',
        mtu: n.mtu ?? 0,
        // eslint-disable-next-line @typescript-eslint/no-explicit-any -- LXD's JSON: its fields are read where they are used
        addresses: (n.addresses ?? []).map((a: any) => ({ family: a.family === 'inet6' ? 'inet6' : 'inet', address: a.address, prefix: Number(a.netmask) })),
        counters: {
          bytesReceived: n.counters?.bytes_received ?? 0,
          bytesSent: n.counters?.bytes_sent ?? 0,
          packetsReceived: n.counters?.packets_received ?? 0,
          packetsSent: n.counters?.packets_sent ?? 0,
        },
      }));
      const status = this.observe(lxdStatus(m.status));
      const devices: DeviceState[] = Object.entries(this.devices)
        .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
        .map(([name, d]) => ({ name, type: d.type, ...(d.source !== undefined ? { source: d.source } : {}), ...(devicePath(d) !== undefined ? { path: devicePath(d) } : {}) }));
      return {
        status,
        pid: m.pid > 0 ? m.pid : null,
        cpu: { usageNs: m.cpu?.usage ?? 0 },
        memory: { usageBytes: lxdMemoryUsage(status, m.memory?.usage), limitBytes: this.memoryLimit() },
        processes: m.processes > 0 ? m.processes : 0,
        network: { addresses: reportedAddresses(interfaces), interfaces },
        devices,
      };
    });
  }

  /** LXD's state does not say the limit: `limits.memory` when it is a size (a percentage is of the server's memory, unknown here). */
  private memoryLimit(): number | null {
    const v = this.config['limits.memory'];
    if (!v || v.endsWith('%')) return null;
    try {
      return parseMemory(v, 0);
    } catch {
      return null;
    }
  }

  async waitForAddress(options: WaitForAddressOptions = {}): Promise<string> {
    const { family, timeout } = checkWaitForAddress(options);
    await this.require('wait for an address of', ['running', 'starting']);
    const deadline = Date.now() + timeout;
    const isFamily = (a: string) => (family === 'inet') === !a.includes(':');
    for (;;) {
      if (options?.signal?.aborted) throw new Aborted(`waiting for an address of ${this.name} was aborted`);
      const own = (await this.state()).network.addresses.find(isFamily);
      if (own) return own;
      if (Date.now() >= deadline) throw new Timeout(`${this.name} had no ${family === 'inet' ? 'IPv4' : 'IPv6'} address within ${timeout} ms`);
      await new Promise((r) => setTimeout(r, ADDRESS_POLL_MS));
    }
  }

  // ---- options and devices ----

  /**
   * Changes the instance on the server: `change` gets the current LXD object and returns the
   * new one; the PUT carries If-Match, and a concurrent change by another client makes it read
   * the instance again and apply `change` to that.
   */
  private async put(change: (m: LxdInstance) => LxdInstance): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      const m = await this.refresh();
      const next = change(m);
      const body = { architecture: next.architecture, config: next.config, devices: next.devices, ephemeral: next.ephemeral, profiles: next.profiles, description: next.description ?? '' };
      try {
        await this.ours(['instance-updated'], () => this.client.call('PUT', this.client.url(this.path), body, { etag: this.etag }));
        await this.refresh();
        return;
      } catch (e) {
        const lost = e instanceof InvalidState && (e as unknown as { lxd?: { status: number } }).lxd?.status === 412;
        if (!lost || attempt >= UPDATE_ATTEMPTS) throw e;
      }
    }
  }

  update(patch: InstanceConfigPatch): Promise<void> {
    return this.serialized(async () => {
      patchConfig(this.type, this.config, patch); // refused before anything is sent
      refuseNotOnLxd(patch);
      // The patch applies to the instance as the server has it now: keys others set stay.
      await this.put((m) => {
        const config: Record<string, string> = { ...m.config };
        const next = patchConfig(this.type, lxqConfig(config), patch);
        for (const k of Object.keys(lxqConfig(config))) if (!(k in next)) delete config[k];
        return { ...m, config: { ...config, ...next } };
      });
    });
  }

  addDevice(name: string, device: DeviceInput): Promise<void> {
    return this.serialized(async () => {
      validateDeviceName(name);
      const d = withHwaddrs({ [name]: normalizeDevice(this.type, name, device) })[name];
      await this.changeDevices((devices) => {
        if (name in devices) throw new AlreadyExists(`${this.name} already has a device named "${name}"; use updateDevice() to change it`);
        return { ...devices, [name]: d };
      });
    });
  }

  removeDevice(name: string): Promise<void> {
    return this.serialized(async () => {
      validateDeviceName(name);
      await this.changeDevices((devices) => {
        this.existing(devices, name);
        const next = { ...devices };
        delete next[name];
        return next;
      });
    });
  }

  updateDevice(name: string, patch: DevicePatch): Promise<void> {
    return this.serialized(async () => {
      validateDeviceName(name);
      await this.changeDevices((devices) => ({ ...devices, [name]: patchDevice(this.type, name, this.existing(devices, name), patch) }));
    });
  }

  private existing(devices: Devices, name: string): DeviceConfig {
    const d = devices[name];
    if (!d) throw new NotFound(`${this.name} has no device named "${name}"` + (Object.keys(devices).length ? `; it has ${Object.keys(devices).map((n) => `"${n}"`).join(', ')}` : ''));
    return d;
  }

  /** LXD checks the devices against its host and hot-plugs them into a running instance. */
  private async changeDevices(change: (devices: Devices) => Devices): Promise<void> {
    await this.put((m) => {
      const next = change((m.devices ?? {}) as Devices);
      checkPaths(next);
      return { ...m, devices: next };
    }).catch((e) => {
      // What the server's kernel or LXD cannot do (an idmapped `shift` on LXD 5.0 here), in its words.
      const said = (e as { lxd?: { serverMessage: string } }).lxd?.serverMessage ?? '';
      if (e instanceof OperationFailed && /abilities not available|not supported/i.test(said)) throw Object.assign(new NotSupported(e.message), { lxd: (e as { lxd?: unknown }).lxd });
      throw e;
    });
  }

  // ---- commands ----

  async spawn(argv: string[], options: SpawnOptions = {}): Promise<InstanceProcess> {
    refuseUnknownKeys('spawn', options ?? {}, SPAWN_OPTION_KEYS);
    return this.startProcess(argv, options ?? {});
  }

  async exec(argv: string[], options: ExecOptions = {}): Promise<ExecResult> {
    checkExecOptions(options ?? {});
    const proc = await this.startProcess(argv, options ?? {});
    return collect(proc, options ?? {}, `${JSON.stringify(argv[0])} in ${this.name}`);
  }

  private async startProcess(argv: string[], options: SpawnOptions): Promise<InstanceProcess> {
    const env = Object.fromEntries(checkSpawn(argv, options, instanceEnvironment(this.config)).map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)]));
    const pty = checkPty(options.pty);
    // Commands do not queue behind each other, but wait for a lifecycle change under way.
    await this.queue;
    try {
      return await remoteSpawn(this.client, this.path, { argv, env, cwd: options.cwd, user: options.user, group: options.group, pty }, this.hooks.sockets);
    } catch (e) {
      const said = (e as { lxd?: { serverMessage: string } }).lxd?.serverMessage ?? '';
      if (/not running|frozen|is stopped/i.test(said)) throw this.refusal('run a command in', this.observe(await this.currentStatus()), ['running']);
      throw e;
    }
  }

  // ---- records ----

  /** The instance's record as lxq shapes it, from LXD's instance or snapshot object. */
  private recordOf(m: LxdInstance): InstanceRecord {
    return {
      version: 1,
      name: this.name,
      type: this.type,
      image: this.image,
      imageMeta: {},
      config: lxqConfig(m.config ?? {}),
      devices: (m.devices ?? {}) as Devices,
      createdAt: new Date(m.created_at ?? this.meta.created_at).toISOString(),
    };
  }
}

/** lxq options LXD has no key for are NotSupported (checked after the option values). */
/**
 * LXD's memory figure for an instance in `status`. LXD reports a memory reading it could not make
 * (its cgroup read failed) as 0, which for a running or frozen instance cannot be true: that is
 * null, "no figure", never a usage of 0 bytes. A stopped instance uses 0.
 */
export function lxdMemoryUsage(status: InstanceStatus, usage: unknown): number | null {
  if (status === 'stopped') return 0;
  return typeof usage === 'number' && Number.isFinite(usage) && usage > 0 ? usage : null;
}

export function refuseNotOnLxd(config: object | null | undefined): void {
  const unsupported = Object.keys(config ?? {}).filter((k) => NOT_ON_LXD.includes(k));
  if (unsupported.length) throw new NotSupported(`option ${unsupported.map((k) => `"${k}"`).join(', ')} has no equivalent on an LXD server`);
}

/** The keys of an LXD config that are lxq options. */
function lxqConfig(config: Record<string, string>): InstanceConfig {
  return Object.fromEntries(Object.entries(config).filter(([k]) => findOption(k) !== undefined && !NOT_ON_LXD.includes(k)));
}
