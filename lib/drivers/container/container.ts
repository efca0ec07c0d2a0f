/**
 * The container driver: an Instance over liblxc, through the native addon.
 */
import { promises as fs } from 'node:fs';
import * as path from 'node:path';

import { InstanceConfig, refuseFixedChange } from '../../config/options';
import type { Networks } from '../../network/networks';
import type { DeviceConfig, Devices } from '../../devices/declarations';
import type { ContainerDeviceHost } from './devices';
import type { DeviceSource, ProbeEnv } from '../../devices/validate';
import { InvalidState, OperationFailed } from '../../core/errors';
import type { DeviceChange } from '../../devices/change';
import { BaseInstance, RECORD_FILE, writeInstanceRecord } from '../../instance/base';
import type { DeviceState, DriverState, InstanceRecord, InstanceState, InstanceStatus } from '../../instance/instance';
import type { UsageDetail } from '../../instance/metrics';
import { parentPid } from '../../core/proc';
import { createStaged } from '../../core/staging';
import { DirPool } from '../../storage/pools/dir';
import type { IdMap } from './host-facts';
import type { ContainerContext, ContainerImage } from './context';
import type { ContainerImageMeta } from '../../images/meta';
import type { Expansion, StoredProfile } from '../../instance/profiles';
import type { LxcItem } from './lxc-config';
import { ContainerFiles } from './files';
import { containerIdmap, rangeOf } from './idmap';
import { watchStart } from './start-watch';
import { checkWithLiblxc, EBADF, ESRCH, ETIMEDOUT, failed, lxcFiles, lxcFilesCurrent, monitorAlive, removeMonitorCgroups, saveLxcFiles } from './liblxc';
import { containerStatus } from './status';
import { ContainerStorage } from './storage';
import { attachCommand, consoleEndpoint } from './streams';
import { lxc, LxcContainer, LxcError } from '../../native/lxc';
import { sys } from '../../native/sys';
import type { InstanceProcess, SpawnOptions } from '../../instance/process';
import type { ConsoleEndpoint } from '../../instance/console';

/* eslint-disable @typescript-eslint/no-require-imports -- what only creating, configuring or starting a container uses is loaded then: `lxq list` and `lxq exec` never load it */
const deviceOps = (): typeof import('./devices') => require('./devices');
const nic = (): typeof import('../../devices/nic') => require('../../devices/nic');
const validate = (): typeof import('../../devices/validate') => require('../../devices/validate');
const lxcConfig = (): typeof import('./lxc-config') => require('./lxc-config');
const limits = (): typeof import('./cgroup-limits') => require('./cgroup-limits');
const stateOps = (): typeof import('./state') => require('./state');
const liveOps = (): typeof import('./device-live') => require('./device-live');
const idmapAlloc = (): typeof import('./idmap-alloc') => require('./idmap-alloc');
const cloudInit = (): typeof import('../../instance/cloud-init') => require('../../instance/cloud-init');
/* eslint-enable @typescript-eslint/no-require-imports */

/**
 * A system container run in-process through liblxc: the `Instance` interface, with liblxc behind it.
 *
 * @example
 * ```ts
 * const c = await host.create('web1', { type: 'container', image: 'busybox' });
 * await c.start();
 * console.log((await c.exec(['uname', '-a'])).stdout.toString());
 * ```
 */
export class ContainerInstance extends BaseInstance {
  private handle: LxcContainer | undefined;
  /** Set while a profile change applies its steps: liblxc's config is checked at each, written once after (see changingTogether). */
  private configDeferred = false;

  readonly files: ContainerFiles;
  protected readonly storage = new ContainerStorage({
    dir: () => this.dir,
    freeze: async (operation) => {
      await this.freezeFor(operation);
      this.observe('frozen');
    },
    unfreeze: async () => {
      await this.thawAfter();
      this.observe('running');
    },
    writeConfig: (record) => {
      const e = this.profileSet.expand(record);
      return this.writeConfig(e.config, e.devices);
    },
    record: () => this.record,
    idmap: (record) => rangeOf(this.idmapOf(record.idmap, this.profileSet.expand(record).config)),
    fullIdmap: (record) => this.idmapOf(record.idmap, this.profileSet.expand(record).config),
    pool: (record) => (this.ctx.pools ? this.ctx.pools(record.pool) : Promise.resolve(new DirPool())),
  });

  private constructor(
    private readonly ctx: ContainerContext,
    dir: string,
    record: InstanceRecord,
    private readonly imageMeta: ContainerImageMeta,
  ) {
    super(dir, record);
    this.files = new ContainerFiles({ root: () => this.fileRoot(), ids: () => this.idmapOf(this.record.idmap, this.expandedConfig) });
  }

  /** An existing container, from its record. */
  static open(ctx: ContainerContext, dir: string, record: InstanceRecord, imageMeta: ContainerImageMeta): ContainerInstance {
    return new ContainerInstance(ctx, dir, record, imageMeta);
  }

  /**
   * Creates the container's directory, root filesystem and configuration. Everything is checked
   * (liblxc included) before the first byte is written. The directory is made whole in a staging
   * directory of the host and appears by one rename (createStaged): a killed create leaves the
   * whole container or nothing under its name.
   */
  static async create(ctx: ContainerContext, dir: string, record: InstanceRecord, image: ContainerImage, profiles: StoredProfile[] = []): Promise<ContainerInstance> {
    const probe = new ContainerInstance(ctx, dir, record, image.meta);
    await probe.loadProfiles(profiles);
    const { config } = probe.profileSet.expand(record);
    if (!idmapAlloc().wantsOwnRange(config)) return ContainerInstance.createWith(ctx, dir, record, image, profiles);
    // security.idmap.isolated: the range is the container's from here; a failed create gives it back.
    const range = await idmapAlloc().allocateIdRange(config, dir, ctx.idmap());
    return ContainerInstance.createWith(ctx, dir, { ...record, idmap: range }, image, profiles).catch(async (e) => {
      await idmapAlloc().releaseIdRange(range);
      throw e;
    });
  }

  private static async createWith(ctx: ContainerContext, dir: string, record: InstanceRecord, image: ContainerImage, profiles: StoredProfile[]): Promise<ContainerInstance> {
    const instance = new ContainerInstance(ctx, dir, record, image.meta);
    await instance.loadProfiles(profiles);
    const { config, devices } = instance.profileSet.expand(record);
    const sources = await validate().probeDevices('container', devices, instance.probeEnv);
    const items = instance.render(config, devices, sources);
    const files = lxcFiles(config, items);
    await checkWithLiblxc(ctx.lxcpath, items);
    for (const [name, d] of Object.entries(devices)) await deviceOps().checkReachable(name, d, sources.get(name)!, instance.deviceHost());
    // Made whole in a staging directory (the config names the final path) and renamed into place.
    await createStaged(dir, async (staging) => {
      await instance.storage.createRoot(staging, { rootfs: image.rootfs }, record);
      for (const [name, d] of Object.entries(devices)) await deviceOps().prepareContainerDevice(name, d, sources.get(name)!, { ...instance.deviceHost(), dir: staging });
      await saveLxcFiles(staging, files, { config, devices });
      await writeInstanceRecord(staging, record);
    });
    // Mounted at its final path (an overlay's root); a root that cannot be mounted leaves no container.
    await instance.storage.attachRoot().catch(async (e) => {
      await instance.storage.detachRoot().catch(() => undefined);
      await fs.rm(dir, { recursive: true, force: true });
      throw e;
    });
    return instance;
  }

  protected get networks(): Networks {
    return this.ctx.networks;
  }

  /** Custom volumes (disks with `pool`) are attached to containers. */
  protected override get probeEnv(): ProbeEnv {
    return { ...super.probeEnv, ...(this.ctx.volumes ? { volumes: this.ctx.volumes } : {}) };
  }

  protected override readonly ownAddressesComplete = true;

  protected async readIfInet6(): Promise<string> {
    return fs.readFile(`/proc/${await this.lxc().initPid()}/net/if_inet6`, 'utf8');
  }

  /** Proxies connect from inside the container's network namespace, or to a socket in its root. */
  private async runningPid(): Promise<number> {
    const pid = await this.lxc().initPid();
    if (pid <= 0) throw new InvalidState(`${this.name} is not running`, 'stopped');
    return pid;
  }

  /** The liblxc log of this container (errors of start, stop, attach…). */
  get logFile(): string {
    return path.join(this.dir, 'lxc.log');
  }

  protected override deviceState(name: string, d: DeviceConfig, status?: InstanceStatus): DeviceState {
    const s = super.deviceState(name, d);
    return d.type === 'unix-hotplug' ? { ...s, nodes: status === 'running' || status === 'frozen' ? deviceOps().hotplugNodes(this.dir, name) : [] } : s;
  }

  protected override async liveDevices(states: DeviceState[], devices: Devices, s: DriverState): Promise<void> {
    await super.liveDevices(states, devices, s);
    await liveOps().containerLiveDevices(this.dir, states, devices, s);
  }

  protected get consoleLogPath(): string {
    return path.join(this.dir, 'console.log');
  }

  /** liblxc's monitor writes the log (lxc.console.logfile): init's parent, which outlives init across a reboot inside. */
  protected async consoleWriterPid(): Promise<number | null> {
    const init = await this.lxc().initPid();
    return init > 0 ? parentPid(init) : null;
  }

  /** The container's "/" as a host path: its rootfs when stopped, its init's root (mount namespace) otherwise. */
  private async fileRoot(): Promise<string> {
    const status = await this.currentStatus();
    if (status === 'stopped') {
      await this.storage.attachRoot();
      return path.join(this.dir, 'rootfs');
    }
    const pid = await this.lxc().initPid();
    if (pid <= 0) throw new OperationFailed(`cannot find the init process of ${this.name} (${status})`);
    return `/proc/${pid}/root`;
  }

  /**
   * /dev/console through liblxc's console proxy (the monitor serves tty 0 to one client at a
   * time; the command socket holds it until closed). The window size is set on the console's own
   * pty, which is what the container's programs see.
   */
  protected async openConsole(): Promise<ConsoleEndpoint> {
    const [sock, ptx] = await this.lxc()
      .consoleGetfd(0)
      .catch((e) => {
        // The monitor denies tty 0 (EBADF) while another client holds it.
        if ((e as LxcError).errno === EBADF) throw new OperationFailed(`the console of ${this.name} is in use by another process (until it detaches)`);
        return this.refuseOrFail(e, 'attach to the console of', 'running', `cannot attach to the console of ${this.name}`);
      });
    return consoleEndpoint(sock, ptx, () => this.lxc().initPid());
  }

  protected async doSpawn(argv: string[], options: SpawnOptions): Promise<InstanceProcess> {
    return attachCommand(this.lxc(), this.expandedConfig, argv, options, (e) => this.refuseOrFail(e, 'run a command in', 'running', `cannot run ${JSON.stringify(argv[0])} in ${this.name}`));
  }

  private idmapOf(own: IdMap | undefined, config: InstanceConfig): IdMap | null {
    return containerIdmap(own, config, this.ctx.idmap);
  }

  private deviceHost(config: InstanceConfig = this.expandedConfig): ContainerDeviceHost {
    return { dir: this.dir, idmap: this.idmapOf(this.record.idmap, config), layout: this.ctx.layout };
  }

  private render(config: InstanceConfig, devices: Devices, sources: Map<string, DeviceSource>): LxcItem[] {
    return lxcConfig().renderLxcConfig({
      devices: deviceOps().lxcDeviceItems(devices, sources, this.deviceHost(config)),
      name: this.name,
      dir: this.dir,
      config,
      image: this.imageMeta,
      idmap: this.idmapOf(this.record.idmap, config),
      layout: this.ctx.layout,
      apparmor: this.ctx.apparmor,
    });
  }

  private lxc(): LxcContainer {
    this.handle ??= new (lxc().Container)(this.name, this.ctx.lxcpath);
    return this.handle;
  }

  /** Drops the liblxc handle, e.g. after the config file changed; the next call opens a fresh one. */
  private reopen(): void {
    this.handle?.release();
    this.handle = undefined;
  }

  protected override stillRunning(): Promise<boolean> {
    return monitorAlive(this.name);
  }

  protected async currentStatus(): Promise<InstanceStatus> {
    return lxcConfig().ensureListener(await containerStatus(this.lxc()), this.dir, this.expandedConfig, () => this.consoleWriterPid());
  }

  protected async doStart(): Promise<void> {
    const { expandedConfig: config, expandedDevices: devices } = this;
    await nic().ensureNetworks(devices, this.ctx.networks);
    // liblxc's config is made again when what it is made from changed since: a profile changed by
    // any process (live keys only reached the running container), a container made before the
    // default syscall filter existed.
    // …and when a custom volume is attached (its data's path may have changed: a btrfs restore) or a disk (the root too) has I/O limits (its block device's numbers may have).
    const fresh = this.record.rootLimits || Object.values(devices).some((d) => d.type === 'disk' && (d.pool !== undefined || validate().hasIoLimits(d)));
    if (fresh || !(await lxcFilesCurrent(this.dir, config, devices))) await this.writeConfig(config, devices);
    await validate().checkVolumesFree(devices, this.probeEnv);
    await this.storage.attachRoot(); // an overlay's root, unmounted by a reboot
    await this.alignRoot(config);
    const hadSeed = await cloudInit().hadSeed(this.dir);
    const firstNic = nic().nics(devices)[0];
    await cloudInit().writeContainerSeed(this.files, await cloudInit().cloudSeed(this.dir, config, this.name, firstNic && nic().nicName(...firstNic)), hadSeed);
    await limits().loadKernelModules(this.expandedConfig);
    const listener = lxcConfig().startListener(this.dir, config); // listening before the monitor connects to it
    const watch = watchStart(this.ctx.lxcpath, this.name);
    await this.lxc()
      .start([])
      .finally(() => watch.stop())
      .catch(async (e) => {
        await removeMonitorCgroups(this.name).finally(() => listener?.cancel());
        const hung = (await watch.stop()) ? ' (its first process died while liblxc was starting it: see its security.syscalls.* keys)' : '';
        throw failed(e, `cannot start ${this.name}${hung}`);
      });
    await listener?.bind((await this.consoleWriterPid()) ?? 0);
    await deviceOps().tuneHostEnds(this.dir, this.expandedDevices);
    if (config['security.nesting'] === 'true') await this.allowNestedProc();
  }

  /**
   * security.nesting: the kernel lets a nested container mount proc only where a proc mount is
   * fully visible; liblxc's locked bind mount of a fake boot_id over /proc hides part of it (a
   * nested lxc-start then fails "Failed to mount proc", EPERM), so it is taken off.
   */
  private async allowNestedProc(): Promise<void> {
    const pid = await this.runningPid();
    await sys()
      .umountIn(pid, 'proc/sys/kernel/random/boot_id', false)
      .catch(async (e) => {
        await this.doKill().catch(() => undefined);
        throw failed(e, `cannot start ${this.name} with security.nesting`);
      });
  }

  protected async doShutdown(timeoutMs: number): Promise<boolean> {
    return this.lxc().shutdown(Math.max(1, Math.ceil(timeoutMs / 1000)));
  }

  protected async doKill(): Promise<void> {
    await this.lxc().stop().catch((e) => {
      throw failed(e, `cannot stop ${this.name}`);
    });
  }

  /**
   * On a v1 freezer the addon freezes through the cgroup first (see native freeze()); the
   * RUNNING check is made in the same native call. A cgroup that stays FREEZING for 10 s is
   * thawed again and the error names the tasks that were not frozen (state, where they slept).
   */
  protected async doFreeze(): Promise<void> {
    await this.lxc()
      .freeze(this.ctx.layout.v1Mount('freezer'), 'RUNNING')
      .catch((e) => {
        const err = e as LxcError;
        if (err.call === 'freezer.state' && err.errno === ETIMEDOUT && err.log) {
          throw new OperationFailed(`cannot freeze ${this.name}: ${err.log.trim()}`, { call: err.call, errno: err.errno, log: err.log }, { cause: e });
        }
        return this.refuseOrFail(e, 'freeze', 'running');
      });
  }

  protected async doUnfreeze(from: 'frozen' | 'freezing' = 'frozen'): Promise<void> {
    await this.lxc()
      .unfreeze(from === 'freezing' ? 'FREEZING' : 'FROZEN')
      .catch((e) => this.refuseOrFail(e, 'unfreeze', from));
  }

  /** A native call refused for the container's state (ESRCH) becomes InvalidState, with the status now. */
  private async refuseOrFail(e: unknown, op: string, needed: InstanceStatus, what = `cannot ${op} ${this.name}`): Promise<never> {
    if ((e as LxcError).errno === ESRCH) {
      const status = this.observe(await this.currentStatus());
      if (status !== needed) throw this.refusal(op, status, [needed]);
    }
    throw failed(e, what);
  }

  /** liblxc finds a container by its name and lxcpath, and its config names the directory: both follow a rename. */
  protected async renamed(): Promise<void> {
    this.reopen();
    await this.writeConfig(this.expandedConfig, this.expandedDevices);
    await this.storage.attachRoot(); // a copy's or an import's root, at its final path
  }

  protected override async stopped(): Promise<void> {
    await deviceOps().releaseHostEnds(this.dir, this.expandedDevices);
    await super.stopped();
  }

  protected async doDelete(): Promise<void> {
    await deviceOps().releaseHostEnds(this.dir, this.expandedDevices);
    const h = this.lxc();
    // The record goes first: from here on the instance no longer exists for `list`.
    await fs.rm(path.join(this.dir, RECORD_FILE), { force: true });
    // Before liblxc's destroy, which removes the rootfs recursively: through an overlay it would whiteout every file.
    await this.storage.detachRoot();
    // Before liblxc's destroy too, which removes the directory that names the pool's data (a subvolume).
    await this.storage.removeData(this.dir);
    await h.destroy().catch(() => undefined);
    this.reopen();
    await fs.rm(this.dir, { recursive: true, force: true });
    if (this.record.idmap) await idmapAlloc().releaseIdRange(this.record.idmap);
  }

  protected doState(status: InstanceStatus): Promise<DriverState> {
    return stateOps().containerState(this.lxc(), this.ctx.layout, status);
  }

  protected override usageDetail(state: InstanceState): Promise<UsageDetail> {
    return stateOps().containerUsage(this.lxc(), this.ctx.layout, state);
  }

  /** Its root's files shifted for the map `config` gives (raw.idmap changed: ContainerStorage.alignRoot). */
  private async alignRoot(config: InstanceConfig): Promise<void> {
    const map = this.idmapOf(this.record.idmap, config);
    if (map) await this.storage.alignRoot(map, config['security.protection.shift'] === 'true');
  }

  /** Renders, checks and saves the liblxc config (only checks it while changingTogether); the next liblxc call reads it afresh. */
  private async writeConfig(config: InstanceConfig, devices: Devices): Promise<void> {
    // The root disk's limits go with the devices' (one rule per block device).
    const all = { ...devices, ...(await deviceOps().rootDisk(this.record.rootLimits, this.dir)) };
    const items = this.render(config, all, await validate().readSources(all, this.probeEnv));
    const files = lxcFiles(config, items);
    await checkWithLiblxc(this.ctx.lxcpath, items);
    if (this.configDeferred) return;
    await saveLxcFiles(this.dir, files, { config, devices });
    this.reopen();
  }

  /**
   * A profile change: options and devices change together. Each step checks the config it would
   * write (a failure still undoes that step), and the config is written once, from both, at the
   * end: what the next start (or a reader meanwhile) finds is the whole new expansion, never the
   * new devices beside the old options.
   */
  protected override async changingTogether(after: Expansion, apply: () => Promise<void>): Promise<void> {
    this.configDeferred = true;
    try {
      await apply();
    } finally {
      this.configDeferred = false;
    }
    await this.writeConfig(after.config, after.devices);
  }

  /**
   * New devices are checked and their nodes made first; on a running container the removed ones
   * are unmounted and the new ones mounted; the config for the next start is written last. A
   * failure undoes what this call did.
   */
  protected async applyDevices(next: Devices, change: DeviceChange, live: boolean): Promise<void> {
    const host = this.deviceHost();
    const added = await validate().probeDevices('container', change.added, this.probeEnv);
    if (live) await validate().checkVolumesFree(change.added, this.probeEnv);
    for (const [name, d] of Object.entries(change.added)) await deviceOps().checkReachable(name, d, added.get(name)!, host);
    const removed = await validate().readSources(change.removed, this.probeEnv);
    for (const [name, d] of Object.entries(change.added)) await deviceOps().prepareContainerDevice(name, d, added.get(name)!, host);
    const setCgroup = (key: string, value: string) => this.lxc().setCgroupItem(key, value);
    let undo: (() => Promise<void>) | undefined;
    try {
      const root = await deviceOps().rootDisk(this.record.rootLimits, this.dir);
      const c = { before: { ...this.expandedDevices, ...root }, next: { ...next, ...root }, change, added, removed };
      if (live) undo = await deviceOps().changeLive(await this.lxc().initPid(), c, host, this.probeEnv, setCgroup);
      await this.writeConfig(this.expandedConfig, next);
    } catch (e) {
      await undo?.();
      for (const name of Object.keys(change.added)) if (!(name in change.removed)) await deviceOps().releaseContainerDevice(name, host);
      throw e;
    }
    for (const name of Object.keys(change.removed)) if (!(name in change.added)) await deviceOps().releaseContainerDevice(name, host);
  }

  protected async applyConfig(next: InstanceConfig, previous: InstanceConfig, live: boolean): Promise<void> {
    refuseFixedChange(this.name, previous, next);
    await this.writeConfig(next, this.expandedDevices);
    if (!live) return this.alignRoot(next); // a running container's at its next start
    if (next['linux.kernel_modules'] !== previous['linux.kernel_modules']) await limits().loadKernelModules(next);
    for (const [key, value] of limits().liveCgroupWrites(next, previous, this.ctx.layout)) {
      await this.lxc()
        .setCgroupItem(key, value)
        .catch((e) => {
          throw failed(e, `cannot apply ${key}=${value} to running ${this.name}`);
        });
    }
  }
}
