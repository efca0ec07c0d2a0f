/**
 * A Host owns a state directory: its instances (of both types), its image store, and the
 * registry that finds instances made by earlier processes.
 */
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import type { Networks } from '../network/networks';
import { ContainerInstance } from '../drivers/container/container';
import { type ContainerContext, containerContext, containerMainPid } from '../drivers/container/context';
import { AlreadyExists, InvalidArgument, NotFound } from '../core/errors';
import type { ContainerImageMeta } from '../images/meta';
import type { ImageStore } from '../images/store';
import { BaseInstance, RECORD_FILE } from '../instance/base';
import { checkEphemeral, launchWith, CREATE_OPTION_KEYS, type CreateOptions, type Instance, type InstanceRecord } from '../instance/instance';
import type { InstanceHost } from '../instance/host';
import { validateName } from '../instance/names';
import { clearLeftovers } from '../storage/recover';
import { HostStorage } from '../storage/pools/host-storage';
import type { ConnectOptions, RemoteHost } from '../drivers/remote/host';
import { hasFreezeMark } from '../storage/freeze-mark';
import type { CopyOptions } from '../storage/types';
import { readJson } from '../core/fs';
import { refuseUnknownKeys } from '../core/keys';
import type { VmContext, VmInstance } from '../drivers/vm/vm';
import type { EventsOptions } from '../events/iterator';
import { type LifecycleEvent, LifecycleHub, type ProfileEvent, type StorageEvent } from '../events/lifecycle';
import { checkExpansion, checkProfileList, DEFAULT_PROFILE, readProfiles, withProfileDevices } from '../instance/profiles';
import { sys } from '../native/sys';
import { autostarter, snapshotScheduler, configOptions, nic, openmetrics, validate, vmDriver } from './on-demand';
import type { ImportingHost } from './import';
import { hostLongOperations } from './long-operations';
import type { HostOptions, ImportOptions, LaunchOptions } from './options';
import type { AutostartReport, ShutdownReport } from './autostart';
import type { SnapshotScheduler } from './scheduler';
import { sweepEnded } from './ephemeral';
import { sweepHostEnds } from '../network/host-ends';
import { HeldInstances } from './held';
import { hostImageStore } from './images';
import { localProfiles, type Profiles } from './profiles';
import { DEFAULT_HOST_PATH } from './paths';
import { clearInterruptedCreate, instanceRecords, networkUsersIn } from './records';

/* eslint-disable @typescript-eslint/no-require-imports -- copy and import are loaded by their first call (as on-demand.ts's modules, which they use) */
const copier = (): typeof import('./copy') => require('./copy');
const importer = (): typeof import('./import') => require('./import');
/* eslint-enable @typescript-eslint/no-require-imports */

export type { HostOptions, ImportOptions, LaunchOptions } from './options';

export { DEFAULT_HOST_PATH } from './paths';

/**
 * A host directory of instances, images and networks: create, get, list, copy and import instances, and follow their lifecycle events.
 *
 * @example
 * ```ts
 * const host = await Host.open({ path: '/var/lib/lxq' });
 * const c = await host.create('web1', { image: 'busybox' });
 * await c.start();
 * ```
 */
export class Host implements InstanceHost {
  private imageStore: ImageStore | undefined;
  private nets: Networks | undefined;
  /** The host's storage pools (see lib/storage/pools/). */
  readonly storage: HostStorage;
  /** The host's profiles (see lib/host/profiles.ts). */
  readonly profiles: Profiles;
  private readonly instances = new Map<string, Instance>();
  private containers: ContainerContext | undefined;
  private readonly lifecycle: LifecycleHub;
  private readonly held: HeldInstances;
  private scheduler: SnapshotScheduler | undefined;

  private constructor(
    readonly path: string,
    private readonly imagesDir: string,
  ) {
    this.storage = new HostStorage(
      this.path,
      async () => withProfileDevices(this.profiles.dir, await instanceRecords(this.instancesDir)),
      (action, name, previous) => this.lifecycle.reportStorage(action, name, previous),
      (names) => this.runningOf(names),
    );
    const mainPid = (name: string, type: string) => (type === 'container' ? containerMainPid(this.instancesDir, name) : vmDriver().vmMainPid(this.instancesDir, name));
    this.held = new HeldInstances((i) => mainPid(i.name, i.type));
    this.profiles = localProfiles(this.path, (name) => this.get(name), (action, name, previous) => this.lifecycle.reportProfile(action, name, previous));
    this.lifecycle = new LifecycleHub(this.path, {
      instances: async () => Promise.all((await this.list()).map(async (i) => ({ name: i.name, type: i.type, status: await i.status() }))),
      statusOf: (name) => this.get(name).then((i) => i.status(), (e) => (e instanceof NotFound ? undefined : Promise.reject(e))),
      mainPid,
      idle: (name) => {
        const i = this.instances.get(name);
        return i instanceof BaseInstance ? i.idle : Promise.resolve();
      },
      watchPid: (pid, onExit) => sys().watchPid(pid, onExit),
    });
  }

  /**
   * Host-wide lifecycle events (LXD's action names): changes made by this process, by other
   * processes on this host directory, and by the instances themselves (an init that exits, a
   * QEMU killed). Registered synchronously, as any EventEmitter's `on`: every change an lxq
   * process makes after this returns is delivered. `host.off` stops; `host.ready()` tells when
   * exits nobody announces are watched too.
   *
   * @example
   * ```ts
   * host.on('lifecycle', (e) => console.log(e.action, e.name, e.requestor));
   * host.on('storage', (e) => console.log(e.action, e.name)); // storage-pool-created, -updated, -deleted
   * await host.ready();
   * ```
   */
  on(event: 'lifecycle', listener: (e: LifecycleEvent) => void): this;
  on(event: 'storage', listener: (e: StorageEvent) => void): this;
  on(event: 'profile', listener: (e: ProfileEvent) => void): this;
  on(event: 'lifecycle' | 'storage' | 'profile', listener: ((e: LifecycleEvent) => void) | ((e: StorageEvent) => void) | ((e: ProfileEvent) => void)): this {
    if (event === 'lifecycle') this.lifecycle.subscribe(listener as (e: LifecycleEvent) => void);
    else if (event === 'storage' || event === 'profile') this.lifecycle.subscribeTo(event, listener as never);
    else throw new InvalidArgument(`unknown host event ${JSON.stringify(event)}; use "lifecycle", "storage" or "profile"`);
    return this;
  }

  /**
   * Removes a listener added by `on`.
   *
   * @example
   * ```ts
   * const print = (e: LifecycleEvent) => console.log(e.action, e.name);
   * host.on('lifecycle', print);
   * host.off('lifecycle', print);
   * ```
   */
  off(event: 'lifecycle', listener: (e: LifecycleEvent) => void): this;
  off(event: 'storage', listener: (e: StorageEvent) => void): this;
  off(event: 'profile', listener: (e: ProfileEvent) => void): this;
  off(event: 'lifecycle' | 'storage' | 'profile', listener: ((e: LifecycleEvent) => void) | ((e: StorageEvent) => void) | ((e: ProfileEvent) => void)): this {
    if (event === 'storage' || event === 'profile') this.lifecycle.unsubscribeFrom(event, listener as never);
    else this.lifecycle.unsubscribe(listener as (e: LifecycleEvent) => void);
    return this;
  }

  /**
   * Resolves once the host is followed since the first `on` (or `events()`): every instance
   * listed and each running one's main process watched, so that exits nobody announces (an
   * `lxc-stop`, an init that exits, a QEMU killed) are delivered too; at once if nothing listens.
   *
   * @example
   * ```ts
   * host.on('lifecycle', (e) => console.log(e.action, e.name));
   * await host.ready();          // an lxc-stop from now on is reported
   * ```
   */
  ready(): Promise<void> {
    return this.lifecycle.ready();
  }

  /**
   * The lifecycle events as an async iterator, ended by `signal`; a consumer that falls behind
   * loses the oldest (`buffer`, default 1000): the next event says how many in `dropped`.
   */
  events(options: EventsOptions = {}): ReturnType<LifecycleHub['events']> {
    return this.lifecycle.events(options);
  }

  /** Stops following the host for events (watches, pidfds) and ends its reaper (deleting nothing); nothing else is needed to exit. */
  async close(): Promise<void> {
    await this.scheduler?.stop();
    await this.held.close();
    await this.lifecycle.close();
  }

  /** `await using host = await Host.open(…)`: closed at the scope's end. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  /**
   * The image store (lib/images), loaded on first use: a program (an `lxq` command) that only
   * finds and drives instances never loads the image builders.
   */
  get images(): ImageStore {
    return (this.imageStore ??= hostImageStore(this.imagesDir, this.instancesDir, (name) => this.get(name), (builds) => this.storage.releaseImages(builds)));
  }

  /** A host on an LXD server (its unix socket by default, or https with a pinned certificate): lib/drivers/remote, loaded only then. */
  static connect(options: ConnectOptions = {}): Promise<RemoteHost> {
    // eslint-disable-next-line @typescript-eslint/no-require-imports -- loaded on first use: a local host never loads the LXD client
    const { RemoteHost } = require('../drivers/remote/host') as typeof import('../drivers/remote/host');
    return RemoteHost.connect(options);
  }

  static async open(options: HostOptions = {}): Promise<Host> {
    for (const k of ['reap', 'scheduler'] as const) if (options[k] !== undefined && typeof options[k] !== 'boolean') throw new InvalidArgument(`${k} must be a boolean, got ${JSON.stringify(options[k])}`);
    const root = path.resolve(options.path ?? DEFAULT_HOST_PATH);
    await fs.mkdir(path.join(root, 'instances'), { recursive: true, mode: 0o711 });
    // An unprivileged container's root (a high uid) must be able to traverse to its rootfs.
    for (const dir of [root, path.join(root, 'instances')]) {
      const { mode } = await fs.stat(dir);
      if ((mode & 0o001) === 0) await fs.chmod(dir, (mode & 0o7777) | 0o001);
    }
    const images = path.resolve(options.images ?? path.join(root, 'images'));
    await fs.mkdir(images, { recursive: true, mode: 0o711 });
    const host = new Host(root, images);
    // Work of a process that died midway (a snapshot, a restore) is cleared or finished.
    await clearLeftovers(host.instancesDir, RECORD_FILE, (name) => host.get(name), (pool) => host.storage.driver(pool));
    await host.storage.open();
    await sweepEnded(host.instancesDir, (name) => host.get(name));
    await sweepHostEnds();
    if (options.reap) await host.held.reap(root, images);
    if (options.scheduler === true) (host.scheduler = new (snapshotScheduler().SnapshotScheduler)(() => host.list(), host.instancesDir, (name, e) => process.emitWarning(`lxq scheduler: ${name}: ${(e as Error).message}`))).start();
    return host;
  }

  /** The host's managed bridge networks (see lib/network/), loaded on first use: `lxq list` and `lxq exec` never load them. */
  get networks(): Networks {
    // eslint-disable-next-line @typescript-eslint/no-require-imports -- see above
    return (this.nets ??= new (require('../network/networks') as typeof import('../network/networks')).Networks(`${this.path}/networks`, async (network) => networkUsersIn(await instanceRecords(this.instancesDir), network)));
  }

  /** Where instances live; for containers this is liblxc's lxcpath (never the user's /var/lib/lxc). */
  get instancesDir(): string {
    return path.join(this.path, 'instances');
  }

  private vmContext(): VmContext {
    return { hostDir: this.path, networks: this.networks, pools: (pool) => this.storage.driver(pool), volumes: this.storage.volumeResolver };
  }

  /** Those of `names` whose instance is running (a volume's users). */
  private async runningOf(names: string[]): Promise<string[]> {
    const out: string[] = [];
    for (const n of names) {
      const i = await this.get(n).catch(() => undefined);
      if (i && (await i.status()) === 'running') out.push(n);
    }
    return out;
  }

  private containerContext(): ContainerContext {
    this.containers ??= containerContext(this.instancesDir, () => this.networks, (pool) => this.storage.driver(pool), this.storage.volumeResolver);
    return this.containers;
  }

  /**
   * What LXD does at its start (lxq's systemd unit runs it at boot; lib/host/autostart.ts): starts the instances that `boot.*` say.
   *
   * @example
   * ```ts
   * const { started } = await host.autostart();
   * ```
   */
  async autostart(): Promise<AutostartReport> {
    return autostarter().autostartAll(await this.list(), this.instancesDir);
  }

  /**
   * What LXD does when it stops: shuts the running instances down as `boot.*` say, to be started again by `autostart()`.
   *
   * @example
   * ```ts
   * const { stopped, failed } = await host.shutdown();
   * ```
   */
  async shutdown(): Promise<ShutdownReport> {
    return autostarter().shutdownAll(await this.list(), this.instancesDir);
  }

  /**
   * Creates an instance of `image` and starts it (LXD's `launch`); with `wait`, resolves once it
   * is ready that way too (see Instance.wait). Everything is checked before anything is made; an
   * instance that fails to start or to become ready is left created, to be looked at (as LXD).
   *
   * @example
   * ```ts
   * const db = await host.launch('debian/12', 'db1', { wait: 'systemd' });
   * ```
   */
  launch(image: string, name: string, options: LaunchOptions = {}): Promise<Instance> {
    return launchWith((n, o: CreateOptions) => this.create(n, o), image, name, options);
  }

  async create(name: string, options: CreateOptions): Promise<Instance> {
    validateName(name);
    if (options === null || typeof options !== 'object') throw new InvalidArgument('create options must be an object with an image');
    refuseUnknownKeys('create', options, CREATE_OPTION_KEYS);
    const type = options.type ?? 'container';
    if (type !== 'container' && type !== 'vm') throw new InvalidArgument(`unknown instance type ${JSON.stringify(type)}; use "container" or "vm"`);
    if (typeof options.image !== 'string' || !options.image) throw new InvalidArgument('create options need an image name, e.g. { image: "busybox" }');
    const ephemeral = checkEphemeral(options.ephemeral);
    const profiles = await readProfiles(this.profiles.dir, options.profiles === undefined ? [DEFAULT_PROFILE] : checkProfileList(options.profiles)); // NotFound naming one
    const config = configOptions().validateConfig(type, options.config as Record<string, unknown> | undefined);
    // The root disk (`pool`, or LXD's `root` device) is the storage's, not a device to mount.
    const root = await this.storage.rootOf(type, options);
    const devices = nic().withHwaddrs(validate().normalizeDevices(type, root.devices));
    const createdAt = new Date().toISOString();
    checkExpansion(type, { name, config, devices, createdAt }, profiles);
    const types = await this.images.types(options.image); // InvalidArgument with the list of images
    if (!types.includes(type)) throw new InvalidArgument(`image "${options.image}" is a ${types.join(' and ')} image, not a ${type} image`);
    const dir = path.join(this.instancesDir, name);
    await clearInterruptedCreate(dir, name);
    const image = await this.images.ensure(options.image, { type });
    const record: InstanceRecord = { version: 1, name, type, image: image.name, imageMeta: image.meta, profiles: profiles.map((p) => p.name), config, devices, createdAt, ...(root.pool ? { pool: root.pool } : {}), ...(root.rootSize ? { rootSize: root.rootSize } : {}), ...(root.rootLimits ? { rootLimits: root.rootLimits } : {}), ...(ephemeral ? { ephemeral } : {}) };
    const making =
      type === 'vm'
        ? vmDriver().VmInstance.create(this.vmContext(), dir, record, image, profiles)
        : ContainerInstance.create(this.containerContext(), dir, record, { name: image.name, rootfs: path.join(image.dir, 'rootfs'), meta: image.meta as unknown as ContainerImageMeta }, profiles);
    const instance = await making.catch((e) => {
      if (e.code === 'EEXIST' && e.path === dir) throw new AlreadyExists(`an instance named "${name}" already exists`);
      throw e;
    });
    return this.made(instance);
  }

  /**
   * A full, independent copy of `source` (or of one of its snapshots) named `target`: its own
   * root filesystem or disk, new MAC addresses, a new machine id (emptied in a container's
   * rootfs; a systemd VM's handed to it at boot). Built in a staging
   * directory and moved into place by one rename; the record is written last.
   */
  async copy(source: string, target: string, options: CopyOptions = {}): Promise<Instance> {
    const { from, copy } = await copier().copyInstance(this.maker(), source, target, options);
    return this.made(copy, () => from.emit('copied', { name: from.name, target, ...(options.snapshot !== undefined ? { snapshot: options.snapshot } : {}) }));
  }

  /**
   * An instance from a tarball of `instance.export`, named `name` (default: as exported). The
   * archive is hostile input: it is listed and refused (InvalidArgument) if truncated, not lxq's,
   * or if a member could land outside the instance; its records (the instance's and its
   * snapshots') are checked as `create` checks its input; what would reach into the host (raw.*,
   * a privileged container, host paths, device nodes, proxies, host bridges) is refused with
   * PermissionDenied unless `trust: 'host-access'`; a VM's disk may rest only on this host's
   * disk of its image. All that before anything is extracted (the disk after, before it is
   * moved): it is extracted in a staging directory and moved into place by one rename.
   */
  async import(file: string, options: ImportOptions = {}): Promise<Instance> {
    return this.made(await importer().importInstance(this.maker(), file, options));
  }

  /** What copy and import need of this host. */
  private maker(): ImportingHost {
    return {
      instancesDir: this.instancesDir,
      get: (name) => this.get(name),
      open: (dir, record) => this.open(dir, record),
      profiles: this.profiles,
      storage: this.storage,
      images: () => this.images,
      idmap: () => this.containerContext().idmap(),
    };
  }

  /** A new instance (created, copied, imported) is held, its NICs' hosts known to their networks, and announced (`announce` first, as a copy's `copied`). */
  private async made(instance: Instance, announce?: () => void): Promise<Instance> {
    this.track(instance, true);
    await nic().syncNetworkHosts(instance.expandedDevices, this.networks);
    announce?.();
    await this.lifecycle.report('instance-created', instance.name, instance.type).catch(() => undefined);
    return instance;
  }

  /** The instance of that name, made by this process or an earlier one. */
  async get(name: string): Promise<Instance> {
    validateName(name);
    const dir = path.join(this.instancesDir, name);
    let record: InstanceRecord;
    try {
      record = await readJson<InstanceRecord>(path.join(dir, RECORD_FILE));
    } catch {
      this.instances.delete(name);
      throw new NotFound(`no instance named "${name}" on this host (${this.path})`);
    }
    const known = this.instances.get(name);
    if (known && known.createdAt.toISOString() === record.createdAt) {
      // A snapshot, copy or export by a process that died left it frozen: thawed now.
      if (await hasFreezeMark(dir)) await (known as BaseInstance).thawOrphaned();
      return known;
    }
    const instance = this.open(dir, record);
    await (instance as BaseInstance).loadProfiles();
    if (await hasFreezeMark(dir)) await (instance as BaseInstance).thawOrphaned();
    // A VM started by an earlier process: reconnect to its QEMU now, so that its events flow.
    if (record.type === 'vm') await instance.status();
    // A running instance's proxies are served by the process that holds it.
    await (instance as ContainerInstance | VmInstance).resumeProxies();
    this.track(instance);
    return instance;
  }

  /** Every instance on this host, both types, sorted by name. */
  async list(): Promise<Instance[]> {
    const names = (await fs.readdir(this.instancesDir)).filter((n) => !n.startsWith('.')).sort();
    const found = await Promise.all(names.map((n) => this.get(n).catch((e) => (e instanceof NotFound || e instanceof InvalidArgument ? undefined : Promise.reject(e)))));
    return found.filter((i): i is Instance => i !== undefined);
  }

  /** Usage of every running instance as OpenMetrics text, with LXD's metric names and labels (`lxd_cpu_seconds_total{cpu,mode,name,project,type}` …). */
  async metrics(): Promise<string> {
    return openmetrics().instancesMetrics((await this.list()) as BaseInstance[]);
  }

  /** An instance this host holds (`made`: by this process, for the reaper). */
  private track(instance: Instance, made = false): void {
    this.held.hold(instance, made);
    if (instance instanceof BaseInstance) {
      instance.reportLifecycle = (action, detail) => {
        this.held.reported(instance.name, action, detail);
        return this.lifecycle.report(action, instance.name, instance.type, detail);
      };
    }
    this.instances.set(instance.name, instance);
    instance.on('renamed', (e) => {
      if (this.instances.get(e.previous) === instance) this.instances.delete(e.previous);
      this.instances.set(e.name, instance);
    });
  }

  private open(dir: string, record: InstanceRecord): Instance {
    if (record.type === 'vm') return vmDriver().VmInstance.open(this.vmContext(), dir, record);
    return ContainerInstance.open(this.containerContext(), dir, record, record.imageMeta as unknown as ContainerImageMeta);
  }
}
hostLongOperations(Host.prototype as never);
