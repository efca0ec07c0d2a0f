/**
 * An instance on an LXD server, behind lxq's `Instance` interface: lifecycle through PUT
 * …/state, state() from …/state, options and devices through PUT of the instance with
 * If-Match (retried on a concurrent change), commands through the exec websockets
 * (lib/drivers/remote/exec.ts), files through the files API (files.ts), snapshots through …/snapshots
 * (snapshots.ts). The status checks, errors, `status` events and stop policy are the local
 * drivers' own (lib/instance/common.ts); this file gives LXD's primitives.
 */
import { type InstanceConfig, type InstanceConfigPatch, patchConfig } from '../../config/options';
import { InvalidState, LxqError, NotFound, NotSupported, OperationFailed, AlreadyExists } from '../../core/errors';
import { parseMemory } from '../../core/units';
import type { Devices } from '../../devices/declarations';
import { checkPaths } from '../../devices/validate';
import { IMPLIED, type LifecycleAction } from '../../events/lifecycle';
import { type AddressFamily, CommonInstance, ofFamily } from '../../instance/common';
import { ConsoleHub } from '../../instance/console';
import { checkFollow, checkLog, followLines, lastLines } from '../../instance/console-log';
import type { InstanceFiles } from '../../instance/files';
import { type DeviceState, type DriverState, type ExportOptions, type InstanceConsole, type InstanceStatus, type InstanceType, reportedAddresses } from '../../instance/instance';
import { checkPty, checkSpawn, type InstanceProcess, instanceEnvironment, type SpawnOptions } from '../../instance/process';
import { checkProfileList } from '../../instance/profiles';
import { validatePoolName } from '../../storage/pools/pools';
import type { InstanceSnapshots } from '../../storage/types';
import type { LxdClient } from './client';
import { remoteConsole, remoteConsoleLog, remoteLogReader } from './console';
import { type LxdObject, lxdInterfaces, lxdMemoryUsage, lxdNicLive, lxdRecord, lxdStatus, lxdType, lxqConfig, refuseNotOnLxd } from './convert';
import { type RemoteSockets, remoteSpawn } from './exec';
import { RemoteFiles } from './files';
import { RemoteSnapshots } from './snapshots';

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

/**
 * An instance on an LXD server, from a `RemoteHost`: the `Instance` interface over LXD's REST API,
 * and the cluster member it runs on.
 *
 * @example
 * ```ts
 * const web = await remote.get('web');
 * await web.start();
 * console.log(web.location, (await web.exec(['hostname'])).stdout.toString());
 * ```
 */
export class RemoteInstance extends CommonInstance {
  private meta: LxdObject;
  /** LXD's `network` of the last state read (state() reads it, then adds each NIC's status from it). */
  private lastNetwork: LxdObject | undefined;
  private etag: string | undefined;
  protected readonly addressPollMs = ADDRESS_POLL_MS;

  readonly files: InstanceFiles;
  readonly snapshots: InstanceSnapshots;
  private readonly consoleHub = new ConsoleHub(
    async () => {
      await this.require('attach to the console of', ['running']);
      return remoteConsole(this.client, this.path, this.hooks.sockets);
    },
    () => new NotSupported(`the console of ${this.name} has no window size`),
  );

  /** @internal Made by its RemoteHost (`create`, `get`, `list`, `copy`). */
  constructor(
    private readonly client: LxdClient,
    meta: LxdObject,
    private readonly hooks: RemoteInstanceHooks,
    etag?: string,
  ) {
    super();
    this.meta = meta;
    this.etag = etag;
    this.observe(lxdStatus(meta.status));
    this.files = new RemoteFiles(client, () => ({ path: this.path, name: this.name }));
    this.snapshots = new RemoteSnapshots({
      client,
      path: () => this.path,
      name: () => this.name,
      record: (m) => lxdRecord(this, m),
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
  /** The LXD profiles it takes options and devices from, in order. */
  get profiles(): readonly string[] {
    return (this.meta.profiles ?? []) as string[];
  }
  /** lxq's options among LXD's `expanded_config` (its profiles', then its own). */
  get expandedConfig(): Readonly<InstanceConfig> {
    return lxqConfig(this.meta.expanded_config ?? this.meta.config ?? {});
  }
  /** LXD's `expanded_devices` (its profiles', then its own). */
  get expandedDevices(): Readonly<Devices> {
    return (this.meta.expanded_devices ?? this.meta.devices ?? {}) as Devices;
  }
  /** LXD's own flag: the server deletes the instance when it stops. */
  get ephemeral(): boolean {
    return this.meta.ephemeral === true;
  }

  private get path(): string {
    return `/1.0/instances/${encodeURIComponent(this.name)}`;
  }

  get console(): InstanceConsole {
    return {
      path: `${this.client.where}:${this.path}/console`,
      log: async (options) => {
        const o = checkLog(options);
        if (o.since !== undefined) throw this.noTimes();
        return lastLines(await remoteConsoleLog(this.client, this.path), o.tail);
      },
      follow: (options) => {
        const o = checkFollow(options, 1000);
        if (o.since !== undefined) throw this.noTimes();
        return followLines(remoteLogReader(this.client, this.path, () => this.status()), o);
      },
      attach: () => this.consoleHub.attach(),
    };
  }

  private noTimes(): NotSupported {
    return new NotSupported(`the console log of ${this.name} on an LXD server has no times (LXD keeps none): since cannot be applied`);
  }

  // ---- status, and what the host tells it ----

  /** Reads the instance again (config, devices, status, ETag). */
  private async refresh(): Promise<LxdObject> {
    const r = await this.client.request('GET', this.client.url(this.path)).catch((e) => {
      if (e instanceof NotFound) throw new NotFound(`no instance named "${this.name}" on the LXD server at ${this.client.where}`);
      throw e;
    });
    this.meta = r.metadata;
    this.etag = r.etag;
    return this.meta;
  }

  protected async currentStatus(): Promise<InstanceStatus> {
    return lxdStatus((await this.refresh()).status);
  }

  /**
   * @internal
   * A lifecycle event another client caused (lib/drivers/remote/events.ts): the status it implies, or
   * for a change of config or devices, a fresh read.
   */
  observeExternal(action: LifecycleAction): void {
    const implied = IMPLIED[action];
    if (implied !== undefined) this.observe(implied);
    else if (action === 'instance-updated') void this.serialized(() => this.refresh()).catch(() => undefined);
  }

  /** @internal The host read this instance again (get, list). */
  adopt(meta: LxdObject, etag?: string): void {
    this.meta = meta;
    this.etag = etag ?? this.etag;
    this.observe(lxdStatus(meta.status));
  }

  /** @internal Another client renamed it: follow the new name. */
  async renamedElsewhere(name: string): Promise<void> {
    const previous = this.name;
    this.meta = { ...this.meta, name };
    this.emit('renamed', { name, previous });
    this.hooks.renamed(this, previous);
  }

  /** @internal After the events websocket came back: what changed while it was away. */
  resync(): Promise<void> {
    return this.serialized(async () => void this.observe(await this.currentStatus())).catch(() => undefined);
  }

  /** Runs `op` with the lifecycle events of `actions` counted as this process's own. */
  protected override async asOwn<T>(actions: LifecycleAction[], op: () => Promise<T>): Promise<T> {
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

  protected async doStart(): Promise<void> {
    await this.setState({ action: 'start', timeout: 30 });
  }

  /** A clean shutdown for `timeoutMs` (LXD counts whole seconds). */
  protected async doShutdown(timeoutMs: number): Promise<boolean> {
    try {
      await this.setState({ action: 'stop', force: false, timeout: Math.max(1, Math.ceil(timeoutMs / 1000)) });
      return true;
    } catch (e) {
      if (!(e instanceof LxqError) || e instanceof NotFound) throw e;
      return (await this.currentStatus()) === 'stopped';
    }
  }

  protected async doKill(): Promise<void> {
    // The clean shutdown may end between the last status read and this forced stop: not a failure.
    await this.setState({ action: 'stop', force: true }).catch(async (e) => ((await this.currentStatus()) === 'stopped' ? undefined : Promise.reject(e)));
  }

  protected async doUnfreeze(): Promise<void> {
    await this.setState({ action: 'unfreeze' });
  }

  freeze(): Promise<void> {
    return this.serialized(async () => {
      await this.require('freeze', ['running']);
      await this.asOwn(['instance-paused'], () => this.setState({ action: 'freeze' }));
      this.observe('frozen');
    });
  }

  unfreeze(): Promise<void> {
    return this.serialized(async () => {
      await this.require('unfreeze', ['frozen']);
      await this.asOwn(['instance-resumed'], () => this.doUnfreeze());
      this.observe('running');
    });
  }

  delete(options: { force?: boolean } = {}): Promise<void> {
    return this.serialized(async () => {
      const remove = () => this.asOwn(['instance-deleted'], () => this.client.call('DELETE', this.client.url(this.path)));
      if (options?.force) {
        if ((await this.currentStatus()) !== 'stopped') await this.stopNow(0, true);
        await remove();
      } else {
        // The server refuses an instance that is not stopped itself: no status read first (one
        // request less), the status asked only to word the refusal as the local drivers do.
        await remove().catch(async (e) => {
          if (!(e instanceof InvalidState)) throw e;
          throw this.deleteRefusal(await this.currentStatus());
        });
      }
      this.hooks.deleted(this);
      this.removeAllListeners();
    });
  }

  protected async moveTo(newName: string): Promise<void> {
    const previous = this.name;
    const taken = await this.client.request('GET', this.client.url(`/1.0/instances/${newName}`)).then(() => true, (e) => (e instanceof NotFound ? false : Promise.reject(e)));
    if (taken) throw new AlreadyExists(`an instance named "${newName}" already exists on the LXD server at ${this.client.where}`);
    await this.asOwn(['instance-renamed'], () => this.client.call('POST', this.client.url(this.path), { name: newName }));
    this.meta = { ...this.meta, name: newName };
    await this.refresh();
    this.hooks.renamed(this, previous);
  }

  /**
   * LXD's own move between pools (its `instance_pool_move`: POST { migration: true, pool }): the
   * server copies the instance onto the pool under a temporary name, deletes it, and renames the
   * copy back. `live: false`: LXD would otherwise stop a running one and start it again (lxq
   * refuses a running instance before, as for a local one). False if it is on `pool` already.
   */
  protected async moveToPool(pool: string): Promise<boolean> {
    validatePoolName(pool);
    const root = Object.values(this.expandedDevices).find((d) => d.type === 'disk' && d.path === '/');
    if (root?.pool === pool) return false;
    await this.client.request('GET', this.client.url(`/1.0/storage-pools/${encodeURIComponent(pool)}`)).catch((e) => Promise.reject(e instanceof NotFound ? new NotFound(`the LXD server at ${this.client.where} has no storage pool "${pool}"`) : e));
    // The copy's temporary name is LXD's MoveTemporaryName: its events are this move's too.
    const temporary = `lxd-move-of-${this.meta.config?.['volatile.uuid'] ?? ''}`;
    const done = this.hooks.expect(temporary, ['instance-created', 'instance-renamed', 'instance-updated']);
    try {
      await this.asOwn(['instance-deleted', 'instance-renamed', 'instance-updated'], () => this.client.call('POST', this.client.url(this.path), { migration: true, pool, live: false }));
    } finally {
      done();
    }
    await this.refresh();
    return true;
  }

    export(_file: string, _options?: ExportOptions): Promise<void> {
    return Promise.reject(new NotSupported(`export of ${this.name}: an instance on an LXD server is exported by LXD itself (lxc export, /1.0/instances/<name>/backups), not to lxq's format`));
  }

  // ---- state ----

  /** LXD's NICs as its last state read gave them: each NIC's live status. */
  protected override async liveDevices(states: DeviceState[], devices: Devices, s: DriverState): Promise<void> {
    if (s.status === 'stopped') return;
    for (const d of states) if (d.type === 'nic') d.nic = lxdNicLive(d.name, devices[d.name], this.lastNetwork, this.meta.config ?? {}, s.network.interfaces);
  }

  protected async readState(): Promise<DriverState> {
    const m = (await this.client.request('GET', this.client.url(`${this.path}/state`))).metadata;
    this.lastNetwork = m.network ?? undefined;
    const interfaces = lxdInterfaces(m.network);
    const status = lxdStatus(m.status);
    return {
      status,
      pid: m.pid > 0 ? m.pid : null,
      cpu: { usageNs: m.cpu?.usage ?? 0 },
      memory: { usageBytes: lxdMemoryUsage(status, m.memory?.usage), limitBytes: this.memoryLimit() },
      processes: m.processes > 0 ? m.processes : 0,
      network: { addresses: reportedAddresses(interfaces), interfaces },
    };
  }

  /** LXD's state does not say the limit: `limits.memory` when it is a size (a percentage is of the server's memory, unknown here). */
  private memoryLimit(): number | null {
    const v = this.expandedConfig['limits.memory'];
    if (!v || v.endsWith('%')) return null;
    try {
      return parseMemory(v, 0);
    } catch {
      return null;
    }
  }

  /** The addresses the server reports (LXD's state holds its DHCP leases' too). */
  protected addressSearch(family: AddressFamily): () => Promise<string | undefined> {
    return async () => (await this.state()).network.addresses.find((a) => ofFamily(a, family));
  }

  // ---- options and devices ----

  /**
   * Changes the instance on the server: `change` gets the current LXD object and returns the
   * new one; the PUT carries If-Match, and a concurrent change by another client makes it read
   * the instance again and apply `change` to that.
   */
  private async put(change: (m: LxdObject) => LxdObject): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      const m = await this.refresh();
      const next = change(m);
      const body = { architecture: next.architecture, config: next.config, devices: next.devices, ephemeral: next.ephemeral, profiles: next.profiles, description: next.description ?? '' };
      try {
        await this.asOwn(['instance-updated'], () => this.client.call('PUT', this.client.url(this.path), body, { etag: this.etag }));
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
      patchConfig(this.type, this.config, patch, 'remote'); // refused before anything is sent
      refuseNotOnLxd(patch);
      // The patch applies to the instance as the server has it now: keys others set stay.
      await this.put((m) => {
        const config: Record<string, string> = { ...m.config };
        const next = patchConfig(this.type, lxqConfig(config), patch, 'remote');
        for (const k of Object.keys(lxqConfig(config))) if (!(k in next)) delete config[k];
        return { ...m, config: { ...config, ...next } };
      });
    });
  }

  /** LXD's PUT with the new list: the server checks the profiles exist and apply, and applies them. */
  setProfiles(names: readonly string[]): Promise<void> {
    return this.serialized(async () => {
      const list = checkProfileList(names);
      await this.put((m) => ({ ...m, profiles: list }));
    });
  }

  /** LXD checks the devices against its host and hot-plugs them into a running instance. */
  protected async changeDevices(change: (devices: Readonly<Devices>) => Devices): Promise<void> {
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

  protected async doSpawn(argv: string[], options: SpawnOptions): Promise<InstanceProcess> {
    const env = Object.fromEntries(checkSpawn(argv, options, instanceEnvironment(this.config)).map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)]));
    const pty = checkPty(options.pty);
    try {
      return await remoteSpawn(this.client, this.path, { argv, env, cwd: options.cwd, user: options.user, group: options.group, pty }, this.hooks.sockets);
    } catch (e) {
      const said = (e as { lxd?: { serverMessage: string } }).lxd?.serverMessage ?? '';
      if (/not running|frozen|is stopped/i.test(said)) throw this.refusal('run a command in', this.observe(await this.currentStatus()), ['running']);
      throw e;
    }
  }
}
