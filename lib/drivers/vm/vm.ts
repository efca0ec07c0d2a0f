/**
 * The VM driver: an Instance over a QEMU process, driven through its QMP monitor. This file is
 * the lifecycle (create, start, stop, freeze, delete, state, exec) over the VM's other parts:
 * its directory (paths.ts), its QEMU process (process.ts) and command line (launch.ts), its
 * monitor (monitor.ts), devices plugged while it runs (hotplug.ts) and its guest (guest.ts and
 * the agent*.ts files).
 */
import { promises as fs } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import * as net from 'node:net';
import * as path from 'node:path';

import { findOption, type InstanceConfig } from '../../config/options';
import { InvalidArgument, InvalidState, NotSupported, OperationFailed } from '../../core/errors';
import { parseBoolean } from '../../core/units';
import { createStaged } from '../../core/staging';
import type { DeviceConfig, DevicePatch, Devices } from '../../devices/declarations';
import { ensureNetworks } from '../../devices/nic';
import { checkVolumesFree, probeDevices, type ProbeEnv, readSources } from '../../devices/validate';
import type { VmContext } from './context';
import type { Image } from '../../images/types';
import type { VmImage } from '../../images/meta';
import type { DeviceChange } from '../../devices/change';
import { BaseInstance, RECORD_FILE, writeInstanceRecord } from '../../instance/base';
import type { ConsoleEndpoint } from '../../instance/console';
import type { InstanceFiles } from '../../instance/files';
import { type DeviceState, type DriverState, type Instance, type InstanceRecord, type InstanceState, type InstanceStatus, reportedAddresses } from '../../instance/instance';
import type { UsageDetail } from '../../instance/metrics';
import { expand, type StoredProfile } from '../../instance/profiles';
import { checkExecOptions, checkSpawn, type ExecOptions, type ExecResult, instanceEnvironment, type InstanceProcess, type SpawnOptions } from '../../instance/process';
import type { Networks } from '../../network/networks';
import type { QmpClient } from '../../qmp';
import { newMachineId } from '../../storage/move';
import { DirPool } from '../../storage/pools/dir';
import type { PoolDriver } from '../../storage/pools/types';
import { type Accel, chooseAccel, recordKvmFailure } from './accel';
import { prepareVmDevice, releaseHostParts, vmDeviceState } from './devices';
import { vmLiveDevices } from './device-live';
import { askGuestShutdown, VmGuest } from './guest';
import { HotPlug } from './hotplug';
import { launchSettings, type LaunchSettings, type LaunchTarget, loadImage, qemuCommandLine } from './launch';
import { pinVcpus } from './limits';
import { applyVmCpuLimits } from './cgroup';
import { VmMonitor } from './monitor';
import { checkSocketPaths, type VmFile, vmFile } from './paths';
import { endQemu, isQemuOf, livePid, logTail, QEMU, qemuUsage, QUIT_GRACE_MS, spawnQemu, waitForExit, watchBoot } from './process';
import { growVmDisk, makeVmDisk, VmStorage } from './storage';
import { vmUsage } from './usage';
import { readBootRecord, startFromSavedBoot } from './saved-boot-start';

export { vmMainPid } from './process';
export type { VmContext } from './context';

/**
 * A VM's state: the common state, plus its vCPUs and what the guest agent says, if it answers
 * quickly (`network.addresses` are the guest's, loopback excluded; `os` from guest-get-osinfo).
 * Through lxq's agent the interfaces (with their MTUs), `processes` and `guest` are the guest's
 * own figures; through qemu-ga alone `processes` is 0 (it cannot count them) and `guest` absent.
 * `memory` is QEMU's on the host in both.
 *
 * @example
 * ```ts
 * const s = (await vm.state()) as VmState;
 * console.log(s.status, s.pid);
 * ```
 */
export interface VmState extends InstanceState {
  vcpus: number;
  /**
   * The guest agent exec, spawn and terminals go through: lxq's own (`lxq-agent`: streamed
   * output and stdin, terminals, users) when the VM's image has it, else QEMU's (`qemu-ga`).
   * Files and the guest's state come from the same agent; `os` from qemu-ga in both.
   */
  agent: 'lxq-agent' | 'qemu-ga';
  /** The guest's memory and its root filesystem, as the guest sees them (lxq's agent only). */
  guest?: { memory: { totalBytes: number; availableBytes: number }; disk: { totalBytes: number; availableBytes: number } };
  /** How it booted: `saved-state` (vm.saved_boot: its image's saved boot loaded) or `cold`; `bootReason`: why vm.saved_boot did not apply. */
  boot?: 'cold' | 'saved-state';
  bootReason?: string;
  /** From guest-get-osinfo; absent when the agent did not answer. */
  os?: { id?: string; name?: string; version?: string; kernelRelease?: string; machine?: string };
}

/**
 * What a VM offers beyond the `Instance` interface: its QMP client, QEMU's log and its richer
 * state. `host.create` and `host.get` return an `Instance`; narrow it when its type is 'vm'.
 *
 * @example
 * ```ts
 * const vm = (await host.create('vm1', { type: 'vm', image: 'vm/default' })) as VirtualMachine;
 * await vm.start();
 * console.log(await vm.qmp.execute('query-status'), (await vm.state()).vcpus);
 * ```
 */
export interface VirtualMachine extends Instance {
  /**
   * The QMP client of the running VM, for what the Instance interface does not cover. It is
   * lxq's own connection (a monitor takes one client): do not close it. InvalidState when the VM
   * is not running.
   */
  readonly qmp: QmpClient;
  /** Where QEMU's own messages of the last start are (errors, warnings). */
  readonly qemuLogPath: string;
  state(): Promise<VmState>;
}

/** How often the power button is pressed again while a guest does not act on it. */
const POWER_BUTTON_REPEAT_MS = 500;

/**
 * A QEMU virtual machine driven over QMP and its guest agent: the `Instance` interface, with QEMU behind it.
 *
 * @example
 * ```ts
 * const vm = (await host.create('vm1', { type: 'vm', image: 'vm/default' })) as VmInstance;
 * await vm.start();
 * await vm.waitForAgent();
 * ```
 */
export class VmInstance extends BaseInstance implements VirtualMachine {
  protected readonly storage = new VmStorage({ disk: () => this.file('disk'), pool: (name) => this.pool(name), name: () => this.name, qmp: () => this.monitor.forChange(), record: () => this.record });
  private readonly guest = new VmGuest({
    file: (which) => this.file(which),
    name: () => this.name,
    hasLxqAgent: () => this.hasLxqAgent,
    status: () => this.status(),
    require: (action, states) => this.require(action, states),
  });
  private readonly monitor = new VmMonitor({
    file: (which) => this.file(which),
    name: () => this.name,
    observed: () => this.observedStatus,
    observe: (status) => void this.observe(status),
    ownOperation: () => this.holdingLock,
    reread: () => this.idle.then(() => this.currentStatus()),
    event: (e) => this.guest.monitorEvent(e),
  });
  private readonly hotplug = new HotPlug({
    monitor: this.monitor,
    dir: () => this.dir,
    name: () => this.name,
    agent: () => this.guest.agent,
    nicPlugged: (name, d, src) => (this.nicConfig ? this.guest.configureNic(name, d, src.mtu) : Promise.resolve()),
  });
  /** Set while this process launches QEMU: the pidfile and monitor are not there yet. */
  private launching = false;

  private constructor(
    private readonly ctx: VmContext,
    dir: string,
    record: InstanceRecord,
  ) {
    super(dir, record);
  }

  /** Files, through the guest agent (see agent-files.ts). */
  get files(): InstanceFiles {
    return this.guest.files;
  }

  /** agent.nic_config: lxq's agent names the NICs' interfaces and sets their MTUs. */
  private get nicConfig(): boolean {
    return this.hasLxqAgent && parseBoolean(this.expandedConfig['agent.nic_config'] ?? 'false');
  }

  /** Whether the VM's image runs the lxq agent (images built before it came run qemu-ga only). */
  private get hasLxqAgent(): boolean {
    return typeof this.record.imageMeta.lxqAgentPortName === 'string';
  }

  /** An existing VM, from its record. Call `status()` to reconnect to its QEMU if it runs. */
  static open(ctx: VmContext, dir: string, record: InstanceRecord): VmInstance {
    return new VmInstance(ctx, dir, record);
  }

  /**
   * Creates the VM's directory and its disk (a qcow2 overlay over the image's). Options and the
   * image are checked first; the record is written last, so a failure leaves nothing behind.
   */
  static async create(ctx: VmContext, dir: string, record: InstanceRecord, image: Image, profiles: StoredProfile[] = []): Promise<VmInstance> {
    const { config, devices } = expand(record, profiles);
    launchSettings(config);
    const img = await loadImage(image.name, image.dir, image.meta);
    // The image stays where it is: the overlay names its disk as backing file.
    const machineId = image.meta.init === 'systemd' ? { machineId: newMachineId() } : {};
    const vm = new VmInstance(ctx, dir, { ...record, ...machineId, imageMeta: { ...record.imageMeta, dir: img.dir } });
    checkSocketPaths(dir);
    await vm.loadProfiles(profiles);
    await probeDevices('vm', devices, vm.probeEnv);
    // Made whole in a staging directory and renamed into place (see createStaged).
    await createStaged(dir, async (staging) => {
      for (const [name, d] of Object.entries(devices)) await prepareVmDevice(staging, name, d);
      await makeVmDisk(await vm.pool(), staging, path.relative(dir, vm.file('disk')), img, record.rootSize);
      await fs.writeFile(path.join(staging, path.relative(dir, vm.file('fresh'))), '');
      await writeInstanceRecord(staging, vm.record);
    });
    return vm;
  }

  /**
   * The QMP client of the running VM, for what the Instance interface does not cover. It is
   * lxq's own connection (a monitor takes one client): do not close it.
   */
  get qmp(): QmpClient {
    const qmp = this.monitor.held;
    if (!qmp) throw new InvalidState(`${this.name} has no QMP connection: it is not running (or its status was not read yet)`);
    return qmp;
  }

  protected get networks(): Networks {
    return this.ctx.networks;
  }

  protected override get probeEnv(): ProbeEnv {
    return { ...super.probeEnv, ...(this.ctx.volumes ? { volumes: this.ctx.volumes } : {}) };
  }

  /** Read through the guest agent (procfs of the guest's kernel). */
  protected async readIfInet6(): Promise<string> {
    return (await this.files.read('/proc/net/if_inet6')).toString();
  }

  /** Where QEMU's own messages of the last start are (errors, warnings). */
  get qemuLogPath(): string {
    return this.file('qemuLog');
  }

  protected get consoleLogPath(): string {
    return this.file('console');
  }

  /** QEMU writes the serial log (its chardev's logfile). */
  protected async consoleWriterPid(): Promise<number | null> {
    return livePid(this.file('pid'));
  }

  /** The serial port's chardev socket (QEMU serves one client at a time; the hub shares it). */
  protected async openConsole(): Promise<ConsoleEndpoint> {
    const socket = net.createConnection({ path: this.file('consoleSocket') });
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', (e) => reject(new OperationFailed(`cannot connect to the serial console of ${this.name}: ${e.message}`)));
    });
    return { stream: socket };
  }

  override state(): Promise<VmState> {
    return super.state() as Promise<VmState>;
  }

  private file(which: VmFile): string {
    return vmFile(this.dir, which);
  }

  protected override async operationEnded(): Promise<void> {
    await this.monitor.operationEnded();
  }

  // ---- the driver primitives ----

  protected async currentStatus(): Promise<InstanceStatus> {
    if (this.launching) return 'starting';
    return this.monitor.status();
  }

  /** A forced accelerator this host cannot give, or an incomplete image, is refused before the start writes anything (its power mark, the log's stamper). */
  protected override async beforeStart(): Promise<void> {
    if (this.expandedConfig['vm.accel'] === 'kvm') await chooseAccel('kvm', this.ctx.hostDir);
    await loadImage(this.image, String(this.record.imageMeta.dir), this.record.imageMeta);
    await super.beforeStart();
  }

  protected async doStart(): Promise<void> {
    const settings = launchSettings(this.expandedConfig);
    await ensureNetworks(this.expandedDevices, this.ctx.networks);
    await checkVolumesFree(this.expandedDevices, this.probeEnv);
    const img = await loadImage(this.image, String(this.record.imageMeta.dir), this.record.imageMeta);
    const { accel, watch } = await chooseAccel(settings.accel, this.ctx.hostDir);
    this.launching = true;
    try {
      const boot = await startFromSavedBoot({ target: this.launchTarget(), img, settings, accel, config: this.expandedConfig, devices: this.expandedDevices, guest: this.guest,
        init: this.record.imageMeta.init === 'systemd' ? 'systemd' : 'busybox', hasLxqAgent: this.hasLxqAgent, launch: (extra) => this.launch(img, settings, accel, extra), qmp: () => this.qmp, kill: () => this.doKill() });
      if (boot.boot === 'cold') await (watch ? this.launchWatched(img, settings, accel) : this.launch(img, settings, accel));
    } finally {
      this.launching = false;
    }
    // Not awaited: start() resolves once QEMU runs; exec and files wait for the shares.
    this.guest.started(this.expandedDevices, this.probeEnv, this.nicConfig);
  }

  /**
   * KVM that looks fine but does not run a guest (accel.ts): use TCG, and once TCG ran (the
   * failure was KVM's, not e.g. a bad raw.qemu) remember it for this host.
   */
  private async launchWatched(img: VmImage, settings: LaunchSettings, accel: Accel): Promise<void> {
    try {
      await this.launch(img, settings, accel);
      await watchBoot(this.dir);
    } catch (e) {
      await this.doKill();
      await this.launch(img, settings, 'tcg');
      await recordKvmFailure(this.ctx.hostDir, (e as Error).message);
    }
  }

  private readonly launchTarget = (): LaunchTarget => ({ dir: this.dir, name: this.name, machineId: this.record.machineId, config: this.expandedConfig, devices: this.expandedDevices, sources: () => readSources(this.expandedDevices, this.probeEnv) });

  /** Starts QEMU detached (its command line and `extra`) and connects to its monitor; resolves once QEMU runs (the guest boots on). */
  private async launch(img: VmImage, s: LaunchSettings, accel: Accel, extra: string[] = []): Promise<void> {
    const target = this.launchTarget();
    // A new log file for each boot (QEMU would truncate the old one in place): a follower tells
    // the new boot's log by its inode even when it has grown past what was read of the last one.
    await fs.rm(this.file('console'), { force: true });
    const fds: FileHandle[] = [];
    const exitReason = await qemuCommandLine(target, img, s, accel, fds)
      .then((args) => spawnQemu([...args, ...extra], this.file('qemuLog'), fds.map((h) => h.fd)))
      .finally(() => Promise.all(fds.map((h) => h.close())));
    try {
      await this.monitor.connectLaunched(exitReason);
      await this.hotplug.throttleAll(this.expandedDevices);
      if (s.pin) await pinVcpus(() => this.monitor.command('query-cpus-fast'));
      const pid = await livePid(this.file('pid'));
      if (pid !== null) await applyVmCpuLimits(this.dir, this.expandedConfig, pid);
    } catch (e) {
      await this.doKill().catch(() => undefined);
      const why = exitReason() === undefined ? (e as Error).message : `QEMU exited (${exitReason()})`;
      const log = await logTail(this.file('qemuLog'));
      throw new OperationFailed(`cannot start ${this.name}: ${why}${log ? `\n${log}` : ''}`, { call: QEMU, log }, { cause: e });
    }
  }

  /**
   * Asks the guest to power off until it does: the ACPI power button (acpid or systemd-logind
   * acts on it), pressed again every POWER_BUTTON_REPEAT_MS since a guest still booting has
   * nobody listening to it yet, and the agent's guest-shutdown once the agent answers. Resolves
   * true once QEMU has exited, false after `timeoutMs`.
   */
  protected async doShutdown(timeoutMs: number): Promise<boolean> {
    const pidfile = this.file('pid');
    const pid = await livePid(pidfile);
    if (pid === null) return true;
    const deadline = Date.now() + timeoutMs;
    const exited = async () => {
      await releaseHostParts(this.dir, this.expandedDevices);
      return true;
    };
    // Both ways at once (a guest may ignore the power button): the agent, asked once, and the
    // power button, pressed again until the stop's timeout.
    let stopped = () => undefined as void;
    askGuestShutdown(this.guest.agent, timeoutMs, new Promise<void>((r) => (stopped = r)));
    try {
      for (;;) {
        // QEMU may exit before its reply is read: the process is what tells.
        await this.monitor.command('system_powerdown').catch(() => undefined);
        const wait = Math.min(POWER_BUTTON_REPEAT_MS, deadline - Date.now());
        if (wait <= 0) return (await isQemuOf(pid, pidfile)) ? false : exited();
        if (await waitForExit(pid, pidfile, wait)) return exited();
      }
    } finally {
      stopped();
    }
  }

  /** QMP `quit`, then SIGKILL if QEMU has not exited; its NICs' taps go with it. */
  protected async doKill(): Promise<void> {
    await endQemu(this.dir, () => this.monitor.quit(QUIT_GRACE_MS), this.name);
    await releaseHostParts(this.dir, this.expandedDevices);
  }

  protected async doFreeze(): Promise<void> {
    await this.require('freeze', ['running']);
    await this.monitor.command('stop');
  }

  protected async doUnfreeze(): Promise<void> {
    await this.require('unfreeze', ['frozen']);
    await this.monitor.command('cont');
  }

  /** The agent's socket is in the VM's directory; every other path is derived from it at each start. */
  protected async renamed(): Promise<void> {
    this.guest.renamed();
  }

  protected async doDelete(): Promise<void> {
    this.monitor.drop();
    this.guest.close();
    await releaseHostParts(this.dir, this.expandedDevices);
    // The record goes first: from here on the instance no longer exists for `list`.
    await fs.rm(path.join(this.dir, RECORD_FILE), { force: true });
    await (await this.pool()).removeRoot(this.dir); // a btrfs pool's subvolume, before the directory that names it
    await fs.rm(this.dir, { recursive: true, force: true });
  }

  private pool(name = this.record.pool): Promise<PoolDriver> {
    return this.ctx.pools ? this.ctx.pools(name) : Promise.resolve(new DirPool());
  }

  /**
   * New devices are checked and made first (a `size` disk's qcow2); on a running VM the removed
   * ones are unplugged (waited on through DEVICE_DELETED) and the new ones plugged onto free root
   * ports, a share then mounted by the guest agent. A failure undoes what this call did.
   */
  protected async applyDevices(_next: Devices, change: DeviceChange, live: boolean): Promise<void> {
    const added = await probeDevices('vm', change.added, this.probeEnv);
    if (live) await checkVolumesFree(change.added, this.probeEnv);
    const removed = await readSources(change.removed, this.probeEnv);
    await this.hotplug.apply(change, { added, removed }, live);
  }

  protected override async updateRootDisk(patch: DevicePatch): Promise<void> {
    const bytes = await growVmDisk(this.file('disk'), patch, await this.currentStatus(), this.name);
    await this.saveRecord({ ...this.record, rootSize: bytes });
    await this.reported('instance-updated');
  }

  protected override deviceState(name: string, d: DeviceConfig): DeviceState {
    return vmDeviceState(this.dir, name, d, super.deviceState(name, d));
  }

  protected override async liveDevices(states: DeviceState[], devices: Devices, s: DriverState): Promise<void> {
    await super.liveDevices(states, devices, s);
    const qmp = { block: () => this.monitor.command('query-block'), nodes: () => this.monitor.command('query-named-block-nodes', { flat: true }) };
    await vmLiveDevices(this.dir, this.file('disk'), states, devices, s, qmp);
  }

  protected async doState(status: InstanceStatus): Promise<Omit<VmState, keyof Omit<InstanceState, keyof DriverState>>> {
    const pid = status === 'stopped' ? null : await livePid(this.file('pid'));
    const agent = this.hasLxqAgent ? 'lxq-agent' : 'qemu-ga';
    if (pid === null) {
      return { status, pid: null, cpu: { usageNs: 0 }, memory: { usageBytes: 0, limitBytes: null }, processes: 0, network: { addresses: [], interfaces: [] }, vcpus: 0, agent };
    }
    const [usage, cpus, memory, guest, boot] = await Promise.all([
      qemuUsage(pid),
      this.monitor.command('query-cpus-fast').catch(() => []),
      this.monitor.command('query-memory-size-summary').catch(() => undefined),
      status === 'running' ? this.guest.info() : undefined,
      readBootRecord(this.dir),
    ]);
    return {
      status,
      pid,
      cpu: { usageNs: usage.cpuNs },
      memory: { usageBytes: usage.rssBytes, limitBytes: memory?.['base-memory'] ?? null },
      processes: guest?.inside?.processes ?? 0,
      network: { addresses: reportedAddresses(guest?.interfaces ?? []), interfaces: guest?.interfaces ?? [] },
      vcpus: cpus.length,
      agent,
      ...(boot ? { boot: boot.boot, ...(boot.reason ? { bootReason: boot.reason } : {}) } : {}),
      ...(guest?.os ? { os: guest.os } : {}),
      ...(guest?.inside ? { guest: { memory: guest.inside.memory, disk: guest.inside.disk } } : {}),
    };
  }

  protected override usageDetail(state: VmState): Promise<UsageDetail> {
    // security.agent.metrics=false: the metrics are QEMU's figures only, none of the guest's own.
    const seen = this.expandedConfig['security.agent.metrics'] === 'false' ? { ...state, guest: undefined } : state;
    return vmUsage({ cpus: () => this.monitor.command('query-cpus-fast'), blocks: () => this.monitor.command('query-blockstats') }, seen);
  }

  protected async applyConfig(next: InstanceConfig, previous: InstanceConfig, live: boolean): Promise<void> {
    launchSettings(next);
    if (!live) return;
    const pid = await livePid(this.file('pid'));
    if (pid !== null && (['limits.cpu.allowance', 'limits.cpu.priority'] as const).some((k) => next[k] !== previous[k])) await applyVmCpuLimits(this.dir, next, pid);
    for (const key of new Set([...Object.keys(next), ...Object.keys(previous)])) {
      if (next[key] !== previous[key] && findOption(key)?.live === 'container') {
        throw new NotSupported(`${key} of a running VM cannot change (no CPU or memory hotplug yet): stop ${this.name} first`);
      }
    }
  }

  /**
   * Resolves when the guest agent answers (the guest has booted far enough for exec and files);
   * start() resolves earlier, once QEMU runs. OperationFailed after `timeoutMs`.
   */
  async waitForAgent(timeoutMs = 60_000): Promise<void> {
    if (!Number.isFinite(timeoutMs) || timeoutMs <= 0) throw new InvalidArgument(`timeout must be a positive number of ms, got ${timeoutMs}`);
    await this.require('wait for the guest agent of', ['running', 'starting']);
    await this.guest.waitForAgent(timeoutMs);
  }

  /**
   * Runs the command through the lxq agent (as a container's exec), or through qemu-ga, where
   * `stdin` is read to its end and given up front.
   */
  override async exec(argv: string[], options: ExecOptions = {}): Promise<ExecResult> {
    options ??= {};
    checkExecOptions(options);
    const env = checkSpawn(argv, options, instanceEnvironment(this.expandedConfig));
    return this.guest.exec(argv, env, options);
  }

  /** A process through the lxq agent, or through qemu-ga (its stdin empty, its output at its exit: see agent-exec.ts). */
  protected async doSpawn(argv: string[], options: SpawnOptions): Promise<InstanceProcess> {
    const env = checkSpawn(argv, options, instanceEnvironment(this.expandedConfig));
    return this.guest.spawn(argv, env, options);
  }
}
