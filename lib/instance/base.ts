/**
 * What both instance types share: the stored record, the per-instance operation queue, status
 * checks before any side effect, status events, and the stop policy (graceful, then forced).
 * A driver implements the `abstract` primitives only.
 */
import { EventEmitter } from 'eventemitter3';
import { promises as fs } from 'node:fs';
import type { Socket as DgramSocket } from 'node:dgram';
import type { Socket } from 'node:net';
import * as path from 'node:path';

import { InstanceConfig, InstanceConfigPatch, InstanceType, patchConfig } from '../config/options';
import type { DeviceConfig, DeviceInput, DevicePatch, Devices } from '../devices/declarations';
import { checkPaths, devicePath, normalizeDevice, patchDevice, type ProbeEnv, validateDeviceName } from '../devices/validate';
import { syncNetworkHosts, withHwaddrs } from '../devices/nic';
import { unusableIpv6 } from '../network/addresses';
import { refreshNeighbour } from '../network/iproute';
import type { Networks } from '../network/networks';
import { type DatagramEndpoint, parseEndpoint, ProxyServer, type StreamEndpoint } from '../network/proxy';
import { ConsoleHub, type ConsoleEndpoint } from './console';
import { Aborted, AlreadyExists, Busy, InvalidArgument, InvalidState, NotFound, NotSupported, Timeout } from '../core/errors';
import { type ExportMeta, writeArchive } from '../storage/archive';
import { moveInstanceDir } from '../storage/move';
import { stagingPath } from '../core/staging';
import { validateName } from './names';
import { readJson, writeJsonAtomic } from '../core/fs';
import { FileLock } from '../core/lock';
import { markFreeze, orphanedFreeze, unmarkFreeze } from '../storage/freeze-mark';
import { PARTIALS_DIR } from '../storage/partials';
import { refuseUnknownKeys } from '../core/keys';
import { processStartedAt } from '../core/proc';
import { Snapshots } from '../storage/snapshots';
import type { InstanceSnapshots, StorageDriver } from '../storage/types';
import type { InstanceFiles } from './files';
import type {
  Instance,
  InstanceConsole,
  InstanceEvents,
  DeviceState,
  InstanceRecord,
  InstanceState,
  InstanceStatus,
  NetworkInterface,
  StopOptions,
  WaitForAddressOptions,
} from './instance';
import { checkStart, checkStopTimeout, checkWaitForAddress, DEFAULT_STOP_TIMEOUT_MS, EXPORT_OPTION_KEYS, type ExportOptions, type StartOptions } from './instance';
import { waitFor, type WaitSpec } from './wait';
import { checkExecOptions, collect, ExecOptions, ExecResult, InstanceProcess, SPAWN_OPTION_KEYS, SpawnOptions } from './process';
import type { LifecycleAction, LifecycleDetail } from '../events/lifecycle';

export const RECORD_FILE = 'lxq.json';
/** The file every process locks (flock) while it changes the instance. */
export const LOCK_FILE = 'lxq.lock';

/** Writes an instance's record (atomically), its lock file beside it from the start. */
export async function writeInstanceRecord(dir: string, record: InstanceRecord): Promise<void> {
  await fs.writeFile(path.join(dir, LOCK_FILE), '', { flag: 'a', mode: 0o600 });
  await writeJsonAtomic(path.join(dir, RECORD_FILE), record);
}

/** A change of an instance's devices, by name: as they were, and as they are now. */
export interface DeviceChange {
  removed: Devices;
  added: Devices;
}
export { DEFAULT_STOP_TIMEOUT_MS };
/** How often waitForAddress looks (the instance's own state and the network's leases). */
const ADDRESS_POLL_MS = 100;

export abstract class BaseInstance extends EventEmitter<InstanceEvents> implements Instance {
  private queue: Promise<unknown> = Promise.resolve();
  private lastStatus: InstanceStatus | undefined;
  /** Where this instance reports its lifecycle changes (set by the Host: see lib/events/). */
  reportLifecycle: ((action: LifecycleAction, detail?: LifecycleDetail) => Promise<void>) | undefined;
  /** The proxy devices this process serves (see lib/network/proxy.ts). */
  private readonly proxies = new Map<string, ProxyServer>();
  /** Held by whichever process changes the instance; see serialized(). */
  private readonly lock: FileLock;
  /** The record file as last read or written here (inode, size, mtime): another process's write changes it. */
  private recordStamp: string | undefined;

  protected constructor(
    /** The instance's own directory under the host path (it changes with a rename). */
    private location: string,
    protected record: InstanceRecord,
  ) {
    super();
    this.lock = new FileLock(path.join(location, LOCK_FILE), `instance ${record.name}`);
  }

  /** The instance's own directory under the host path. */
  get dir(): string {
    return this.location;
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
  get devices(): Readonly<Devices> {
    return this.record.devices ?? {};
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
    stop: async () => void (await this.stopNow(DEFAULT_STOP_TIMEOUT_MS, false)),
    start: () => this.startNow(),
    emit: async (event, payload) => {
      this.emit(event as 'snapshot-renamed', payload as { name: string; snapshot: string; previous: string });
      await this.reported(`instance-${event}`, { snapshot: payload.snapshot, ...(payload.previous !== undefined ? { previous: payload.previous } : {}) });
    },
  });

  private readonly consoleHub = new ConsoleHub(
    async () => {
      await this.require('attach to the console of', ['running', 'frozen']);
      return this.openConsole();
    },
    () => new NotSupported(`the console of ${this.name} has no window size (a ${this.type}'s serial port)`),
  );

  get console(): InstanceConsole {
    const file = this.consoleLogPath;
    return {
      path: file,
      log: () => fs.readFile(file, 'utf8').catch((e) => (e.code === 'ENOENT' ? '' : Promise.reject(e))),
      attach: () => this.consoleHub.attach(),
    };
  }
  /**
   * Renames a stopped instance (LXD's move on one host): its directory moves by one rename, then
   * the record and whatever the driver derives from its name and paths (liblxc's config) follow.
   */
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
      const target = path.join(path.dirname(this.dir), newName);
      await moveInstanceDir(this.dir, target, newName);
      this.location = target;
      this.lock.moved(path.join(target, LOCK_FILE));
      await this.saveRecord({ ...this.record, name: newName });
      await this.renamed();
      this.emit('renamed', { name: newName, previous });
      await this.reported('instance-renamed', { previous });
    });
  }

  /**
   * For Host.copy: fills `into` with a copy of this instance's data (a running container frozen
   * for it), or of one snapshot's, and says which record it was taken with.
   */
  copyData(into: string, options: { snapshot?: string; snapshots: boolean; flatten: boolean }): Promise<InstanceRecord> {
    return this.serialized(async () => {
      const snapshot = options.snapshot === undefined ? undefined : await (this.snapshots as Snapshots).refOf(options.snapshot);
      const status = this.observe(await this.currentStatus());
      await this.storage.copyTo(into, { status, snapshot, snapshots: options.snapshots && !snapshot, flatten: options.flatten });
      return structuredClone(snapshot ? snapshot.meta.record : this.record);
    });
  }

  /**
   * For ImageStore.publish: fills `into` with an image of this stopped instance, or of one of its
   * snapshots (then in any status, as LXD allows); returns the image's type and meta.
   */
  publishData(into: string, options: { snapshot?: string }): Promise<{ type: InstanceType; meta: Record<string, unknown> }> {
    return this.serialized(async () => {
      const snapshot = options.snapshot === undefined ? undefined : await (this.snapshots as Snapshots).refOf(options.snapshot);
      const status = this.observe(await this.currentStatus());
      if (!snapshot && status !== 'stopped') throw new InvalidState(`cannot publish ${this.name}: it is ${status}; stop it first, or publish one of its snapshots`, status);
      const meta = await this.storage.publishTo(into, { status, snapshot });
      return { type: this.type, meta };
    });
  }

  /**
   * Writes the instance (record, root filesystem or disk, and its snapshots unless
   * `instanceOnly`, as LXD's export) to `file` as a zstd tarball. A running container is frozen
   * for it; a running VM's disk is copied by a backup job first (its snapshots only from a
   * stopped VM).
   */
  export(file: string, options: ExportOptions = {}): Promise<void> {
    if (typeof file !== 'string' || !file) return Promise.reject(new InvalidArgument('export needs a file path'));
    if (options === null || typeof options !== 'object') return Promise.reject(new InvalidArgument('export options must be an object'));
    try {
      refuseUnknownKeys('export', options, EXPORT_OPTION_KEYS);
    } catch (e) {
      return Promise.reject(e);
    }
    if (options.instanceOnly !== undefined && typeof options.instanceOnly !== 'boolean') return Promise.reject(new InvalidArgument('instanceOnly must be a boolean'));
    const target = path.resolve(file);
    return this.serialized(async () => {
      const status = this.observe(await this.currentStatus());
      if (status !== 'stopped' && status !== 'running') throw this.refusal('export', status, ['stopped', 'running']);
      const liveVm = this.type === 'vm' && status === 'running';
      const snapshots = options.instanceOnly !== true && (await fs.readdir(path.join(this.dir, 'snapshots')).then((n) => n.length > 0, () => false));
      if (liveVm && snapshots) throw new NotSupported(`an export of a running vm holds its disk as it is now, not its snapshots: stop ${this.name} first, or export it with { instanceOnly: true }`);
      await fs.access(path.dirname(target)).catch(() => Promise.reject(new NotFound(`${path.dirname(target)} does not exist`)));
      const entries = [this.type === 'vm' ? 'disk.qcow2' : 'rootfs'];
      if (snapshots) entries.push('snapshots');
      const meta: ExportMeta = { format: 'lxq-export', version: 1, exportedAt: new Date().toISOString(), record: structuredClone(this.record), snapshots };
      // A running container is frozen while tar reads it; a running VM's disk is first copied by a backup job.
      const frozen = status === 'running' && !liveVm;
      const copied = liveVm ? stagingPath(this.dir, 'export-disk') : undefined;
      if (frozen) await this.freezeFor('export');
      try {
        if (copied) {
          await fs.mkdir(copied, { mode: 0o700 });
          await this.storage.copyTo(copied, { status, snapshots: false, flatten: false });
        }
        await writeArchive(target, copied ?? this.dir, entries, meta, stagingPath(this.dir, 'export'), path.join(path.dirname(this.dir), PARTIALS_DIR));
      } finally {
        if (frozen) await this.thawAfter();
        if (copied) await fs.rm(copied, { recursive: true, force: true });
      }
    });
  }

  /** For Host.copy: the copy's directory is in place; derive what the driver needs (liblxc's config), then write the record. */
  async completeCopy(): Promise<void> {
    await this.renamed();
    await this.saveRecord(this.record);
  }

  /** What a driver redoes after its directory and name changed (the instance is stopped). */
  protected abstract renamed(): Promise<void>;

  /** The host file the driver keeps the console output in. */
  protected abstract get consoleLogPath(): string;
  /** Opens the running instance's console (called once for all the streams attached to it). */
  protected abstract openConsole(): Promise<ConsoleEndpoint>;

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
  protected abstract doState(status: InstanceStatus): Promise<Omit<InstanceState, 'devices'>>;
  /** Applies changed options: `live` says whether the instance is running now. */
  protected abstract applyConfig(next: InstanceConfig, previous: InstanceConfig, live: boolean): Promise<void>;
  /**
   * Applies a change of devices: `removed` (as they were) and `added` (as they are in `next`),
   * checked against the host first, hot-plugged when `live`; on failure nothing is left changed.
   * The record is saved by the caller once this resolves.
   */
  protected abstract applyDevices(next: Devices, change: DeviceChange, live: boolean): Promise<void>;
  /** A connection to `to` inside the running instance, for a proxy device. */
  protected abstract connectInside(to: StreamEndpoint): Promise<Socket>;
  /** A udp socket connected to `to` inside the running instance, for a udp proxy device. */
  protected abstract datagramInside(to: DatagramEndpoint): Promise<DgramSocket>;
  /** The host's networks (NICs are checked against them). */
  protected abstract get networks(): Networks;
  /**
   * True where state() always sees the instance's addresses (a container's network namespace):
   * waitForAddress then never answers from a DHCP lease, which the client may not have applied
   * yet (a restart within the second of the previous lease looked granted).
   */
  protected readonly ownAddressesComplete: boolean = false;
  /** The instance's /proc/net/if_inet6 (its kernel's IPv6 address flags). */
  protected abstract readIfInet6(): Promise<string>;
  /** What checking this instance's devices against the host needs. */
  protected get probeEnv(): ProbeEnv {
    return { networks: this.networks, instance: this.name };
  }
  /** What state() says of a device; drivers add what they know (QEMU ids). */
  protected deviceState(name: string, d: DeviceConfig): DeviceState {
    return { name, type: d.type, ...(d.source !== undefined ? { source: d.source } : {}), ...(devicePath(d) !== undefined ? { path: devicePath(d) } : {}) };
  }

  // ---- the interface ----
  async status(): Promise<InstanceStatus> {
    return this.observe(await this.currentStatus());
  }

  state(): Promise<InstanceState> {
    return this.serialized(async () => {
      const s = await this.doState(await this.currentStatus());
      this.observe(s.status);
      const devices = Object.entries(this.devices)
        .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
        .map(([name, d]) => this.deviceState(name, d));
      return { ...s, devices };
    });
  }

  async start(options?: StartOptions): Promise<void> {
    const wait = checkStart(options);
    await this.serialized(async () => {
      await this.startNow();
      await this.reported('instance-started');
    });
    if (wait !== undefined) await this.wait(wait);
  }

  /** See Instance.wait (lib/instance/wait.ts: one implementation for every driver). */
  wait(spec: WaitSpec): Promise<void> {
    return waitFor(this, spec);
  }

  private async startNow(): Promise<void> {
    await this.require('start', ['stopped']);
    // Proxies listen first: an address in use refuses the start before anything runs.
    await this.openProxies(this.devices);
    this.transition('starting');
    try {
      await this.doStart();
    } catch (e) {
      await this.closeProxies();
      throw e;
    } finally {
      await this.status();
    }
  }

  stop(options: StopOptions = {}): Promise<void> {
    let timeout: number;
    try {
      timeout = checkStopTimeout('stop', options);
    } catch (e) {
      return Promise.reject(e);
    }
    return this.serialized(async () => {
      const how = await this.stopNow(timeout, options.force === true);
      if (how) await this.reported(how);
    });
  }

  restart(options: StopOptions = {}): Promise<void> {
    let timeout: number;
    try {
      timeout = checkStopTimeout('restart', options);
    } catch (e) {
      return Promise.reject(e);
    }
    return this.serialized(async () => {
      const how = await this.stopNow(timeout, options.force === true);
      try {
        await this.startNow();
      } catch (e) {
        if (how) await this.reported(how);
        throw e;
      }
      await this.reported('instance-restarted');
    });
  }

  /**
   * A freeze made for an operation (snapshot, copy, export), recorded in the instance's directory
   * first: if this process dies before thawAfter, the next process to open the instance thaws it
   * (thawOrphaned). Called inside serialized() (the instance's lock is held).
   */
  protected async freezeFor(operation: string): Promise<void> {
    await markFreeze(this.dir, operation);
    try {
      await this.doFreeze();
    } catch (e) {
      await unmarkFreeze(this.dir);
      throw e;
    }
  }

  protected async thawAfter(): Promise<void> {
    await this.doUnfreeze();
    await unmarkFreeze(this.dir);
  }

  /**
   * Thaws the instance if an operation's freeze outlived the process that made it (see
   * freezeFor); resolves to that operation's name, or undefined. A user's freeze() stays.
   */
  async thawOrphaned(): Promise<string | undefined> {
    if ((await orphanedFreeze(this.dir)) === undefined) return undefined;
    return this.serialized(async () => {
      // Under the lock: the mark read again (another process may have thawed it, or made a new one).
      const operation = await orphanedFreeze(this.dir);
      if (operation === undefined) return undefined;
      const status = await this.currentStatus();
      if (status === 'frozen' || status === 'freezing') await this.doUnfreeze();
      await unmarkFreeze(this.dir);
      this.observe(await this.currentStatus());
      return operation;
    });
  }

  freeze(): Promise<void> {
    return this.serialized(async () => {
      // A mark seen under the lock is an orphan's (a live operation holds the lock): this freeze is the user's.
      await unmarkFreeze(this.dir);
      await this.doFreeze(); // resolves once frozen: no need to ask again
      this.observe('frozen');
      await this.reported('instance-paused');
    });
  }

  unfreeze(): Promise<void> {
    return this.serialized(async () => {
      await this.doUnfreeze();
      await unmarkFreeze(this.dir);
      this.observe('running');
      await this.reported('instance-resumed');
    });
  }

  delete(options: { force?: boolean } = {}): Promise<void> {
    return this.serialized(async () => {
      const status = await this.currentStatus();
      if (status !== 'stopped') {
        if (!options.force) {
          throw new InvalidState(`cannot delete ${this.name}: it is ${status}; stop it first or pass { force: true }`, status);
        }
        const how = await this.stopNow(0, true);
        if (how) await this.reported(how);
      }
      await this.closeProxies();
      await this.doDelete();
      await this.lock.close();
      await syncNetworkHosts(this.devices, this.networks);
      await this.reported('instance-deleted');
      this.removeAllListeners();
    });
  }

  /**
   * Commands do not queue behind each other, but they do wait for a start, stop or freeze of
   * this instance already under way: a container's monitor answers nobody while it starts.
   */
  async spawn(argv: string[], options: SpawnOptions = {}): Promise<InstanceProcess> {
    refuseUnknownKeys('spawn', options, SPAWN_OPTION_KEYS);
    return this.startProcess(argv, options ?? {});
  }

  async exec(argv: string[], options: ExecOptions = {}): Promise<ExecResult> {
    checkExecOptions(options ?? {});
    const proc = await this.startProcess(argv, options ?? {});
    return collect(proc, options ?? {}, `${JSON.stringify(argv[0])} in ${this.name}`);
  }

  update(patch: InstanceConfigPatch): Promise<void> {
    return this.serialized(async () => {
      const next = patchConfig(this.type, this.record.config, patch);
      const previous = this.record.config;
      const live = (await this.currentStatus()) !== 'stopped';
      await this.applyConfig(next, previous, live);
      await this.saveRecord({ ...this.record, config: next });
      await this.reported('instance-updated');
    });
  }

  async waitForAddress(options: WaitForAddressOptions = {}): Promise<string> {
    const { family, timeout } = checkWaitForAddress(options);
    await this.require('wait for an address of', ['running', 'starting']);
    const deadline = Date.now() + timeout;
    const macs = new Set(Object.values(this.devices).flatMap((d) => (d.type === 'nic' && d.network !== undefined ? [d.hwaddr.toLowerCase()] : [])));
    const networks = [...new Set(Object.values(this.devices).flatMap((d) => (d.type === 'nic' && d.network !== undefined ? [d.network] : [])))];
    const isFamily = (a: string) => (family === 'inet') === !a.includes(':');
    let startedAt: Date | null | undefined;
    for (;;) {
      if (options?.signal?.aborted) throw new Aborted(`waiting for an address of ${this.name} was aborted`);
      const s = await this.state();
      // An IPv6 address counts once duplicate detection has passed: before, nothing can use it.
      const unusable = family === 'inet6' && s.network.addresses.some(isFamily) ? unusableIpv6(await this.readIfInet6().catch(() => '')) : new Set<string>();
      const own = s.network.addresses.find((a) => isFamily(a) && !unusable.has(a));
      if (own) {
        if (family === 'inet6') await this.hostNeighbourReady(s.network.interfaces, own);
        return own;
      }
      // Where the instance's own addresses may not be seen yet (a VM's agent not up), a lease
      // counts once granted in this run of the instance (its init or QEMU started before it),
      // not one kept from an earlier boot.
      if (!this.ownAddressesComplete) startedAt ??= s.pid === null ? undefined : await processStartedAt(s.pid);
      for (const n of startedAt && !this.ownAddressesComplete ? networks : []) {
        const leases = (await (await this.networks.get(n).catch(() => undefined))?.leases()) ?? [];
        const lease = leases.find((l) => macs.has(l.hwaddr.toLowerCase()) && isFamily(l.address) && l.grantedAt.getTime() >= Math.floor(startedAt!.getTime() / 1000) * 1000);
        if (lease) return lease.address;
      }
      if (Date.now() >= deadline) throw new Timeout(`${this.name} had no ${family === 'inet' ? 'IPv4' : 'IPv6'} address within ${timeout} ms`);
      await new Promise((r) => setTimeout(r, ADDRESS_POLL_MS));
    }
  }

  /**
   * The host's neighbour entry for a just-usable IPv6 address of a NIC on an lxq network, brought
   * up to date (see refreshNeighbour: dnsmasq's probe of the address, begun before the instance
   * had it, would fail the caller's first connection with EHOSTUNREACH).
   */
  private async hostNeighbourReady(interfaces: NetworkInterface[], address: string): Promise<void> {
    const hwaddr = interfaces.find((i) => i.addresses.some((a) => a.address === address))?.hwaddr.toLowerCase();
    const nic = Object.values(this.devices).find((d) => d.type === 'nic' && d.network !== undefined && d.hwaddr.toLowerCase() === hwaddr);
    if (!hwaddr || nic?.type !== 'nic' || nic.network === undefined) return;
    const network = await this.networks.get(nic.network).catch(() => undefined);
    // Best effort: the network may be going away; a failure here is no reason to fail the wait.
    if (network) await refreshNeighbour(network.bridge, address, hwaddr).catch(() => undefined);
  }

  addDevice(name: string, device: DeviceInput): Promise<void> {
    return this.serialized(async () => {
      validateDeviceName(name);
      if (name in this.devices) throw new AlreadyExists(`${this.name} already has a device named "${name}"; use updateDevice() to change it`);
      const d = withHwaddrs({ [name]: normalizeDevice(this.type, name, device) })[name];
      await this.changeDevices({ ...this.devices, [name]: d }, { removed: {}, added: { [name]: d } });
    });
  }

  removeDevice(name: string): Promise<void> {
    return this.serialized(async () => {
      const d = this.existingDevice(name);
      const next = { ...this.devices };
      delete next[name];
      await this.changeDevices(next, { removed: { [name]: d }, added: {} });
    });
  }

  updateDevice(name: string, patch: DevicePatch): Promise<void> {
    return this.serialized(async () => {
      const current = this.existingDevice(name);
      const d = patchDevice(this.type, name, current, patch);
      if (JSON.stringify(d) === JSON.stringify(current)) return;
      await this.changeDevices({ ...this.devices, [name]: d }, { removed: { [name]: current }, added: { [name]: d } });
    });
  }

  private existingDevice(name: string): DeviceConfig {
    validateDeviceName(name);
    const d = this.devices[name];
    if (!d) throw new NotFound(`${this.name} has no device named "${name}"` + (Object.keys(this.devices).length ? `; it has ${Object.keys(this.devices).map((n) => `"${n}"`).join(', ')}` : ''));
    return d;
  }

  private async changeDevices(next: Devices, change: DeviceChange): Promise<void> {
    checkPaths(next);
    const live = (await this.currentStatus()) !== 'stopped';
    if (live) {
      await this.closeProxies(Object.keys(change.removed));
      await this.openProxies(change.added).catch(async (e) => {
        await this.openProxies(change.removed).catch(() => undefined);
        throw e;
      });
    }
    try {
      await this.applyDevices(next, change, live);
    } catch (e) {
      if (live) {
        await this.closeProxies(Object.keys(change.added));
        await this.openProxies(change.removed).catch(() => undefined);
      }
      throw e;
    }
    await this.saveRecord({ ...this.record, devices: next });
    await syncNetworkHosts({ ...change.removed, ...change.added }, this.networks);
    await this.reported('instance-updated');
  }

  /**
   * Serves the proxy devices of a running instance this process has just opened (Host.get): the
   * process that started it may be gone. An address still held by another process is left to it.
   */
  async resumeProxies(): Promise<void> {
    if (!Object.values(this.devices).some((d) => d.type === 'proxy')) return;
    if ((await this.status()) !== 'running') return;
    await this.openProxies(this.devices).catch(() => undefined);
  }

  private async openProxies(devices: Devices): Promise<void> {
    const opened: string[] = [];
    try {
      for (const [name, d] of Object.entries(devices)) {
        if (d.type !== 'proxy' || this.proxies.has(name)) continue;
        const proxy = new ProxyServer(name, parseEndpoint('listen', d.listen), parseEndpoint('connect', d.connect), {
          stream: (to) => this.connectInside(to),
          datagram: (to) => this.datagramInside(to),
        });
        await proxy.start();
        this.proxies.set(name, proxy);
        opened.push(name);
      }
    } catch (e) {
      await this.closeProxies(opened);
      throw e;
    }
  }

  private async closeProxies(names: string[] = [...this.proxies.keys()]): Promise<void> {
    for (const name of names) {
      await this.proxies.get(name)?.close();
      this.proxies.delete(name);
    }
  }

  // ---- shared machinery ----

  private async startProcess(argv: string[], options: SpawnOptions): Promise<InstanceProcess> {
    await this.queue;
    return this.doSpawn(argv, options);
  }

  /** Reports a change this instance went through; a failure to report never fails the change. */
  private async reported(action: LifecycleAction, detail?: LifecycleDetail): Promise<void> {
    await this.reportLifecycle?.(action, detail).catch(() => undefined);
  }

  /** Resolves once the lifecycle operations queued on this instance so far are done. */
  get idle(): Promise<void> {
    return this.queue.then(() => undefined);
  }

  /**
   * Runs operations on this instance one at a time, in call order, and one at a time across
   * processes: each holds the instance's lock file and starts from the record as it is on disk
   * (another process may have changed config or devices since this one last looked).
   */
  /** Called at the end of each serialized operation, still under the lock: what a driver took for it only. */
  protected async operationEnded(): Promise<void> {}

  protected serialized<T>(op: () => Promise<T>): Promise<T> {
    const locked = () =>
      this.lock
        .hold(async () => {
          try {
            await this.refreshRecord();
            return await op();
          } finally {
            await this.operationEnded();
          }
        })
        .catch((e) => Promise.reject((e as NodeJS.ErrnoException).code === 'ENOENT' ? this.gone() : e));
    const run = this.queue.then(locked, locked);
    this.queue = run.catch(() => undefined);
    return run;
  }

  private gone(): NotFound {
    return new NotFound(`instance ${this.name} no longer exists (deleted or renamed by another process)`);
  }

  private async refreshRecord(): Promise<void> {
    const file = path.join(this.dir, RECORD_FILE);
    const st = await fs.stat(file).catch(() => undefined);
    if (!st) throw this.gone();
    const stamp = `${st.ino}:${st.size}:${st.mtimeMs}`;
    if (stamp === this.recordStamp) return;
    const record = await readJson<InstanceRecord>(file);
    if (record.createdAt !== this.record.createdAt) throw this.gone();
    this.record = record;
    this.recordStamp = stamp;
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

  /** Stops the instance; says how (undefined: it was stopped already). */
  private async stopNow(timeoutMs: number, force: boolean): Promise<'instance-shutdown' | 'instance-stopped' | undefined> {
    const status = this.observe(await this.currentStatus());
    if (status === 'stopped') return undefined;
    this.transition('stopping');
    try {
      // A frozen instance cannot shut itself down; thaw it first (LXD does the same).
      if (!force && status === 'frozen') await this.doUnfreeze();
      const stopped = !force && timeoutMs > 0 && status !== 'error' && (await this.doShutdown(timeoutMs));
      if (!stopped) await this.doKill();
      return stopped ? 'instance-shutdown' : 'instance-stopped';
    } finally {
      await this.status();
    }
  }

  protected async saveRecord(record: InstanceRecord): Promise<void> {
    await writeInstanceRecord(this.dir, record);
    this.record = record;
    const file = path.join(this.dir, RECORD_FILE);
    const st = await fs.stat(file);
    this.recordStamp = `${st.ino}:${st.size}:${st.mtimeMs}`;
  }

  /** Records a status seen now and emits `status` if it changed. */
  protected observe(status: InstanceStatus): InstanceStatus {
    if (status === 'stopped' && this.proxies.size) void this.closeProxies();
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
