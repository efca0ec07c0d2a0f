/**
 * The VM driver: an Instance over a QEMU process, driven through its QMP monitor.
 *
 * QEMU runs detached from Node (its own session, its output in files), so a VM outlives the
 * process that started it, and everything about a running VM is found again from its directory:
 *
 *   <host>/instances/<name>/
 *     lxq.json     the record, written last at create (atomically)
 *     disk.qcow2   the VM's disk: a qcow2 overlay over the image's
 *     qemu.pid     QEMU's pidfile (QEMU locks it while it runs: a second QEMU of this VM fails)
 *     qmp.sock     the QMP monitor
 *     qmp-query.sock  a second monitor, for another process (see below)
 *     qmp.holder   which process (and which VmInstance in it) holds qmp.sock
 *     qga.sock     the guest agent's channel (exec, files, guest state: see agent.ts)
 *     console.log  the serial console, from the last start
 *     qemu.log     what QEMU itself printed, from the last start
 *
 * A QMP monitor takes one client at a time: the process that uses a VM holds its connection
 * (which does not keep Node alive) and learns from it what happens — QMP events, and the socket
 * closing when QEMU exits, however it exits. Another process (the CLI beside a program) that
 * finds it held reads the status through the query monitor, and makes its changes there too,
 * connected for the one operation (under the instance's lock, so changes never interleave).
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import type * as dgram from 'node:dgram';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';

import { findOption, InstanceConfig, splitArgs } from '../../config/options';
import type { Networks } from '../../network/networks';
import { connectedDatagram } from '../../network/datagram';
import type { DatagramEndpoint, StreamEndpoint } from '../../network/proxy';
import { createTap, deleteLink } from '../../network/iproute';
import { ensureNetworks, hostLink } from '../../devices/nic';
import { parseMemory } from '../../core/units';
import { InvalidArgument, InvalidState, NotFound, NotSupported, OperationFailed } from '../../core/errors';
import type { Image } from '../../images/store';
import type { VmImage, VmImageMeta } from '../../images/meta';
import { readVmImage } from '../../images/vm-image';
import type { DeviceConfig, Devices } from '../../devices/declarations';
import { type DeviceSource, probeDevices, readSources } from '../../devices/validate';
import {
  blockdevArgs,
  chardevArgs,
  deviceArgs,
  freePorts,
  guestMountCommand,
  guestUmountCommand,
  launchArgs,
  prepareVmDevice,
  qemuDeviceId,
  qemuNodeName,
  releaseVmDevice,
  releaseHostParts,
  SCSI_CONTROLLER,
  SPARE_PORTS,
  startVirtiofsd,
  vmDeviceKind,
  netdevArgs,
  nicDeviceArgs,
} from './devices';
import { deviceValue } from '../../devices/declarations';
import type { ConsoleEndpoint } from '../../instance/console';
import { BaseInstance, type DeviceChange, RECORD_FILE, writeInstanceRecord } from '../../instance/base';
import type { InstanceFiles } from '../../instance/files';
import { type DeviceState, type InstanceRecord, type InstanceState, type InstanceStatus, type NetworkInterface, reportedAddresses } from '../../instance/instance';
import {
  checkExecOptions,
  checkSpawn,
  collect,
  type ExecOptions,
  type ExecResult,
  instanceEnvironment,
  type InstanceProcess,
  type SpawnOptions,
} from '../../instance/process';
import { newMachineId } from '../../storage/move';
import { VmStorage } from './storage';
import { GuestAgent } from './agent';
import { agentSpawn, checkAgentSpawn } from './agent-exec';
import { AgentFiles } from './agent-files';
import { QmpClient, QmpError, type QmpStatusInfo, QmpTimeoutError } from '../../qmp';
import { createStaged, processAlive } from '../../core/staging';
import { exists } from '../../core/fs';
import { qemuOptionValue } from '../../core/guard';
import { Accel, AccelSetting, chooseAccel, recordKvmFailure } from './accel';
import { createVmOverlay, qemuArgsForImage } from './qemu-args';

/** What the host tells the VM driver. */
export interface VmContext {
  /** The host's state directory (where the accelerator verdict is kept). */
  hostDir: string;
  networks: Networks;
}

/**
 * A VM's state: the common state, plus its vCPUs and what the guest agent says, if it answers
 * quickly (`network.addresses` are the guest's, loopback excluded; `os` from guest-get-osinfo).
 * `processes` is 0: the agent cannot count the guest's processes.
 *
 * @example
 * ```ts
 * const s = (await vm.state()) as VmState;
 * console.log(s.status, s.pid);
 * ```
 */
export interface VmState extends InstanceState {
  vcpus: number;
  /** From guest-get-osinfo; absent when the agent did not answer. */
  os?: { id?: string; name?: string; version?: string; kernelRelease?: string; machine?: string };
}

/** One interface as guest-network-get-interfaces reports it. */
interface GuestInterface {
  name: string;
  'hardware-address'?: string;
  'ip-addresses'?: Array<{ 'ip-address-type': 'ipv4' | 'ipv6'; 'ip-address': string; prefix: number }>;
  statistics?: { 'rx-bytes': number; 'tx-bytes': number; 'rx-packets': number; 'tx-packets': number };
}

/** How long state() waits for the guest agent (it never fails because the agent is down). */
const STATE_AGENT_MS = 300;

const QEMU = 'qemu-system-x86_64';
const DEFAULT_MEMORY_MIB = 256;
const DEFAULT_CPUS = 1;
/** Under KVM the first console line comes well within this; nothing means a hung or dead guest. */
const BOOT_WATCHDOG_MS = 5_000;
const QMP_TIMEOUT_MS = 10_000;
/** QEMU greets within ~30 ms; a silent monitor is held by another client (another process). */
const QMP_GREETING_MS = 3_000;
/** How long QEMU may take to exit after `quit` before it is killed. */
const QUIT_GRACE_MS = 2_000;
const EXIT_POLL_MS = 20;
/** How often the power button is pressed again while a guest does not act on it. */
const POWER_BUTTON_REPEAT_MS = 500;
/** sun_path holds 108 bytes, NUL included. */
const MAX_SOCKET_PATH = 107;

const FILES = {
  disk: 'disk.qcow2',
  pid: 'qemu.pid',
  qmp: 'qmp.sock',
  /** A second QMP monitor, used for one read or one operation while another process holds the first. */
  qmpQuery: 'qmp-query.sock',
  qmpHolder: 'qmp.holder',
  qga: 'qga.sock',
  console: 'console.log',
  consoleSocket: 'console.sock',
  qemuLog: 'qemu.log',
} as const;

/** QEMU's run states (`query-status`) as instance statuses. */
const QEMU_STATUS: Record<string, InstanceStatus> = {
  running: 'running',
  paused: 'frozen',
  suspended: 'frozen',
  prelaunch: 'starting',
  inmigrate: 'starting',
  shutdown: 'stopping',
};
/** QMP events after which the status is read again. */
const STATUS_EVENTS = new Set(['SHUTDOWN', 'STOP', 'RESUME']);

/** How long the guest has to release a device being unplugged. */
const UNPLUG_MS = 20_000;
/** How long plugging a share waits for the guest agent to mount it. */
const AGENT_SETUP_MS = 60_000;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** How a VM is launched, from its options; throws InvalidArgument for what a VM cannot take. */
interface LaunchSettings {
  cpus: number;
  memoryMiB: number;
  accel: AccelSetting;
  raw: string[];
}

function launchSettings(config: InstanceConfig): LaunchSettings {
  const cpu = config['limits.cpu']?.trim();
  if (cpu !== undefined && !/^\d+$/.test(cpu)) {
    throw new InvalidArgument(`limits.cpu of a VM is a number of vCPUs ("2"); a CPU set (${JSON.stringify(cpu)}) applies to containers only`);
  }
  const memory = config['limits.memory'];
  return {
    cpus: cpu === undefined ? DEFAULT_CPUS : Number(cpu),
    memoryMiB: memory === undefined ? DEFAULT_MEMORY_MIB : Math.floor(parseMemory(memory, os.totalmem()) / 2 ** 20),
    accel: (config['vm.accel'] ?? 'auto') as AccelSetting,
    raw: splitArgs(config['raw.qemu'] ?? ''),
  };
}

/** The image's files, or NotFound naming what is missing (an image broken or removed). */
async function loadImage(name: string, dir: string, meta: Record<string, unknown>): Promise<VmImage> {
  const img = await readVmImage(dir);
  if (img) return img;
  const files: Record<string, string> = (meta as Partial<VmImageMeta>).files ?? {};
  const missing: string[] = [];
  for (const [what, file] of Object.entries(files)) if (!(await exists(path.join(dir, file)))) missing.push(`${what} (${file})`);
  const detail = missing.length ? `it has no ${missing.join(', ')}` : 'its manifest or files are missing';
  throw new NotFound(`VM image "${name}" in ${dir} is incomplete: ${detail}; remove it and build it again`);
}

/** The pid in `pidfile` if that process is a live QEMU started with this pidfile (not a reused pid, not a zombie). */
async function livePid(pidfile: string): Promise<number | null> {
  const pid = Number((await fs.readFile(pidfile, 'utf8').catch(() => '')).trim());
  return Number.isInteger(pid) && pid > 0 && (await isQemuOf(pid, pidfile)) ? pid : null;
}

/** A VM's QEMU pid, read from its pidfile the way any process can (for host-wide events). */
export async function vmMainPid(instancesDir: string, name: string): Promise<number | null> {
  return livePid(path.join(instancesDir, name, FILES.pid));
}

async function isQemuOf(pid: number, pidfile: string): Promise<boolean> {
  // A zombie's (or an exiting process's) cmdline is empty.
  const argv = await fs.readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
  return argv.split('\0').includes(pidfile);
}

/** Resolves true once the process is gone, false if it still runs after `timeoutMs`. */
async function waitForExit(pid: number, pidfile: string, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (!(await isQemuOf(pid, pidfile))) return true;
    if (Date.now() >= deadline) return false;
    await sleep(EXIT_POLL_MS);
  }
}

/** Connects to a QMP monitor; the socket does not keep the Node process alive. */
function openMonitor(socketPath: string, greetingMs = QMP_GREETING_MS): Promise<QmpClient> {
  const socket = net.createConnection({ path: socketPath });
  socket.unref();
  return QmpClient.connect(socket, { timeout: QMP_TIMEOUT_MS, connectTimeout: greetingMs });
}

/** `query-status` on a monitor nobody holds for long: connect, ask, close. */
async function queryStatusOnce(socketPath: string): Promise<string> {
  const socket = net.createConnection({ path: socketPath });
  socket.unref();
  const qmp = await QmpClient.connect(socket, { timeout: QMP_GREETING_MS, connectTimeout: QMP_GREETING_MS });
  try {
    return (await qmp.execute<QmpStatusInfo>('query-status')).status;
  } finally {
    await qmp.close();
  }
}

async function tail(file: string, lines = 20): Promise<string> {
  const text = await fs.readFile(file, 'utf8').catch(() => '');
  return text.trimEnd().split('\n').slice(-lines).join('\n');
}

/** Reads an exec's stdin to its end (the agent takes it whole, when the command starts). */
async function readInput(input: ExecOptions['stdin']): Promise<Buffer | undefined> {
  if (input === undefined) return undefined;
  if (typeof input === 'string') return Buffer.from(input);
  if (Buffer.isBuffer(input)) return input;
  if (!input || typeof (input as NodeJS.ReadableStream).on !== 'function') throw new InvalidArgument('stdin must be a string, a Buffer or a Readable');
  const chunks: Buffer[] = [];
  for await (const c of input) chunks.push(typeof c === 'string' ? Buffer.from(c) : c);
  return Buffer.concat(chunks);
}

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
export class VmInstance extends BaseInstance {
  files: InstanceFiles;
  protected readonly storage = new VmStorage({ disk: () => this.file('disk'), name: () => this.name, qmp: () => this.changeMonitor(), record: () => this.record });
  /** The guest agent: one connection per VM, made on first need, made again after a restart. */
  private agent: GuestAgent;
  private monitor: QmpClient | undefined;
  private connecting: Promise<QmpClient | undefined> | undefined;
  /** The query monitor, held for the operation in progress while another process holds `monitor`'s socket. */
  private borrowed: QmpClient | undefined;
  /** Names this object in the holder file (two Hosts of one process are two holders). */
  private readonly holderId = `${process.pid} ${randomBytes(6).toString('hex')}`;
  /** The shares being mounted by the guest agent after the last start (exec and files wait for it). */
  private guestSetup: Promise<void> = Promise.resolve();
  /** Set while this process launches QEMU: the pidfile and monitor are not there yet. */
  private launching = false;

  private constructor(
    private readonly ctx: VmContext,
    dir: string,
    record: InstanceRecord,
  ) {
    super(dir, record);
    this.agent = this.connectAgent();
    this.files = this.agentFiles();
  }

  private connectAgent(): GuestAgent {
    return new GuestAgent(this.file('qga'), this.name);
  }

  private agentFiles(): InstanceFiles {
    return new AgentFiles(this.agent, async () => {
      if ((await this.status()) === 'stopped') {
        throw new NotSupported(`file access in a stopped vm is not supported: it goes through the guest agent, which runs only while ${this.name} runs; start it first`);
      }
      await this.require('access files in', ['running']);
      await this.guestSetup;
    });
  }

  /** An existing VM, from its record. Call `status()` to reconnect to its QEMU if it runs. */
  static open(ctx: VmContext, dir: string, record: InstanceRecord): VmInstance {
    return new VmInstance(ctx, dir, record);
  }

  /**
   * Creates the VM's directory and its disk (a qcow2 overlay over the image's). Options and the
   * image are checked first; the record is written last, so a failure leaves nothing behind.
   */
  static async create(ctx: VmContext, dir: string, record: InstanceRecord, image: Image): Promise<VmInstance> {
    launchSettings(record.config);
    const img = await loadImage(image.name, image.dir, image.meta);
    // The image stays where it is: the overlay names its disk as backing file.
    const machineId = image.meta.init === 'systemd' ? { machineId: newMachineId() } : {};
    const vm = new VmInstance(ctx, dir, { ...record, ...machineId, imageMeta: { ...record.imageMeta, dir: img.dir } });
    for (const socket of [vm.file('qmp'), vm.file('qmpQuery'), vm.file('qga'), vm.file('consoleSocket')]) {
      if (Buffer.byteLength(socket) > MAX_SOCKET_PATH) {
        throw new InvalidArgument(`${socket} is longer than a unix socket path may be (${MAX_SOCKET_PATH} bytes): use a shorter host path or name`);
      }
    }
    await probeDevices('vm', record.devices ?? {}, vm.probeEnv);
    // Made whole in a staging directory and renamed into place (see createStaged).
    await createStaged(dir, async (staging) => {
      for (const [name, d] of Object.entries(record.devices ?? {})) await prepareVmDevice(staging, name, d);
      await createVmOverlay(img, path.join(staging, path.relative(dir, vm.file('disk'))));
      await writeInstanceRecord(staging, vm.record);
    });
    return vm;
  }

  /**
   * The QMP client of the running VM, for what the Instance interface does not cover. It is
   * lxq's own connection (a monitor takes one client): do not close it.
   */
  get qmp(): QmpClient {
    if (!this.monitor?.connected) throw new InvalidState(`${this.name} has no QMP connection: it is not running (or its status was not read yet)`);
    return this.monitor;
  }

  protected get networks(): Networks {
    return this.ctx.networks;
  }

  /** Read through the guest agent (procfs of the guest's kernel). */
  protected async readIfInet6(): Promise<string> {
    return (await this.files.read('/proc/net/if_inet6')).toString();
  }

  /** Proxies connect over the VM's network: 127.0.0.1 (or ::1) means the guest's own address. */
  protected async connectInside(to: StreamEndpoint): Promise<net.Socket> {
    if (to.proto !== 'tcp') throw new NotSupported(`a VM's proxy cannot reach a unix socket inside ${this.name}`);
    return net.createConnection({ host: await this.guestHost(to.host), port: to.port });
  }

  protected async datagramInside(to: DatagramEndpoint): Promise<dgram.Socket> {
    return connectedDatagram({ ...to, host: await this.guestHost(to.host) });
  }

  /** A proxy's "127.0.0.1" inside a VM is the guest's own address (the host reaches it over the NIC). */
  private async guestHost(host: string): Promise<string> {
    const local = host === '127.0.0.1' || host === '::1' || host === '0.0.0.0';
    return local ? this.waitForAddress({ timeout: 5_000 }) : host;
  }

  /** Where QEMU's own messages of the last start are (errors, warnings). */
  get qemuLogPath(): string {
    return this.file('qemuLog');
  }

  protected get consoleLogPath(): string {
    return this.file('console');
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

  private file(which: keyof typeof FILES): string {
    return path.join(this.dir, FILES[which]);
  }

  // ---- the QMP connection ----

  /** The monitor of the running QEMU, connected on first need; undefined when QEMU does not run. */
  private connected(): Promise<QmpClient | undefined> {
    if (this.monitor?.connected) return Promise.resolve(this.monitor);
    this.connecting ??= (async () => {
      if ((await livePid(this.file('pid'))) === null) return undefined;
      return this.attach(await openMonitor(this.file('qmp')));
    })().finally(() => (this.connecting = undefined));
    return this.connecting;
  }

  /** True if another live holder (another process, or another Host of this one) has the monitor. */
  private async heldElsewhere(): Promise<boolean> {
    if (this.monitor?.connected) return false;
    const holder = (await fs.readFile(this.file('qmpHolder'), 'utf8').catch(() => '')).trim();
    return holder !== '' && holder !== this.holderId && processAlive(Number(holder.split(' ')[0]));
  }

  /**
   * The monitor a change is made on: this object's, or, while another holder has it, the query
   * monitor, connected until the operation ends (operationEnded). Undefined when QEMU does not run.
   */
  private async changeMonitor(): Promise<QmpClient | undefined> {
    if (this.borrowed?.connected) return this.borrowed;
    if (!(await this.heldElsewhere())) {
      try {
        return await this.connected();
      } catch (e) {
        // Silent: held by a holder that left no holder file (an older lxq); anything else is a failure.
        if (!(e instanceof QmpTimeoutError)) throw e;
      }
    }
    if ((await livePid(this.file('pid'))) === null) return undefined;
    // Another process's one-shot status read may have it for a moment: wait longer than for a greeting.
    this.borrowed = await openMonitor(this.file('qmpQuery'), QMP_TIMEOUT_MS);
    return this.borrowed;
  }

  protected override async operationEnded(): Promise<void> {
    const client = this.borrowed;
    this.borrowed = undefined;
    await client?.close();
  }

  /** Makes `client` this VM's monitor and re-reads the status whenever it reports a change. */
  private attach(client: QmpClient): QmpClient {
    this.monitor = client;
    void fs.writeFile(this.file('qmpHolder'), `${this.holderId}\n`).catch(() => undefined);
    // After the operation in progress, if any: it reports its own transitions.
    const recheck = () => void this.serialized(() => this.status()).catch(() => undefined);
    client.on('event', (e) => {
      if (this.monitor === client && STATUS_EVENTS.has(e.event)) recheck();
    });
    client.on('close', () => {
      void this.releaseHolder();
      if (this.monitor !== client) return;
      this.monitor = undefined;
      recheck(); // QEMU exited (killed or not), or the connection broke
    });
    return client;
  }

  /** The holder file goes when this object lets the monitor go (if it still names this object). */
  private async releaseHolder(): Promise<void> {
    const file = this.file('qmpHolder');
    if ((await fs.readFile(file, 'utf8').catch(() => '')).trim() === this.holderId) await fs.rm(file, { force: true });
  }

  private dropMonitor(): void {
    const client = this.monitor;
    this.monitor = undefined;
    void client?.close();
  }

  /** Runs a QMP command on the running VM; QMP failures become OperationFailed. */
  private async command<T>(command: string, args?: Record<string, unknown>): Promise<T> {
    const qmp = await this.changeMonitor();
    if (!qmp) throw new InvalidState(`${this.name} is not running`, 'stopped');
    return qmp.execute<T>(command, args).catch((e) => {
      throw e instanceof QmpError ? new OperationFailed(`QMP ${command} on ${this.name}: ${e.message}`, { call: `qmp:${command}` }, { cause: e }) : e;
    });
  }

  // ---- the driver primitives ----

  protected async currentStatus(): Promise<InstanceStatus> {
    if (this.launching) return 'starting';
    try {
      // Held elsewhere: straight to the query monitor (the first would not greet for QMP_GREETING_MS).
      const qmp = this.borrowed?.connected ? this.borrowed : (await this.heldElsewhere()) ? undefined : await this.connected();
      if (!qmp) {
        if ((await livePid(this.file('pid'))) === null) return 'stopped';
        throw new InvalidState('held elsewhere', 'running');
      }
      const { status } = await qmp.execute<QmpStatusInfo>('query-status');
      return QEMU_STATUS[status] ?? 'error';
    } catch {
      // QEMU exited during the call, or it runs and its monitor does not answer us: QEMU serves
      // one client per monitor, and another process (an lxq program, the CLI) may hold it.
      if ((await livePid(this.file('pid'))) === null) return 'stopped';
      const status = await queryStatusOnce(this.file('qmpQuery')).catch(() => undefined);
      return status === undefined ? 'error' : (QEMU_STATUS[status] ?? 'error');
    }
  }

  protected async doStart(): Promise<void> {
    const settings = launchSettings(this.config);
    await ensureNetworks(this.devices, this.ctx.networks);
    const img = await loadImage(this.image, String(this.record.imageMeta.dir), this.record.imageMeta);
    const { accel, watch } = await chooseAccel(settings.accel, this.ctx.hostDir);
    this.launching = true;
    try {
      await (watch ? this.launchWatched(img, settings, accel) : this.launch(img, settings, accel));
    } finally {
      this.launching = false;
    }
    // Not awaited: start() resolves once QEMU runs; exec and files wait for the shares.
    this.guestSetup = this.mountShares().catch(() => undefined);
  }

  /**
   * KVM that looks fine but does not run a guest (design.md): use TCG, and once TCG ran (the
   * failure was KVM's, not e.g. a bad raw.qemu) remember it for this host.
   */
  private async launchWatched(img: VmImage, settings: LaunchSettings, accel: Accel): Promise<void> {
    try {
      await this.launch(img, settings, accel);
      await this.watchBoot();
    } catch (e) {
      await this.doKill();
      await this.launch(img, settings, 'tcg');
      await recordKvmFailure(this.ctx.hostDir, (e as Error).message);
    }
  }

  /** Starts QEMU detached and connects to its monitor; resolves once QEMU runs (the guest boots on). */
  private async launch(img: VmImage, s: LaunchSettings, accel: Accel): Promise<void> {
    const args = [
      ...qemuArgsForImage(img, {
        disk: this.file('disk'),
        qmpSocket: this.file('qmp'),
        qmpQuerySocket: this.file('qmpQuery'),
        qgaSocket: this.file('qga'),
        serialLog: this.file('console'),
        serialSocket: this.file('consoleSocket'),
        memoryMiB: s.memoryMiB,
        cpus: s.cpus,
        accel,
        // The instance name, which the initramfs makes the hostname while the disk has none.
        appendCmdline: `lxq.hostname=${this.name}${this.record.machineId ? ` systemd.machine_id=${this.record.machineId}` : ''}`,
      }),
      ...(await launchArgs(this.dir, this.devices, await readSources(this.devices, this.probeEnv), s.memoryMiB)),
      '-name', qemuOptionValue('-name', this.name),
      '-pidfile', this.file('pid'),
      ...s.raw,
    ];
    const log = await fs.open(this.file('qemuLog'), 'w');
    let exitReason: string | undefined;
    try {
      const child = spawn(QEMU, args, { detached: true, stdio: ['ignore', log.fd, log.fd] });
      child.unref();
      child.once('exit', (code, signal) => (exitReason = signal ?? `exit code ${code}`));
      child.once('error', (e) => (exitReason = e.message));
    } finally {
      await log.close();
    }
    const deadline = Date.now() + QMP_TIMEOUT_MS;
    for (;;) {
      try {
        if (exitReason !== undefined) throw new Error('QEMU exited');
        this.attach(await openMonitor(this.file('qmp')));
        return;
      } catch (e) {
        // The socket appears when QEMU binds it and answers once QEMU listens.
        const code = (e as { code?: string }).code;
        if (exitReason === undefined && (code === 'ENOENT' || code === 'ECONNREFUSED') && Date.now() < deadline) {
          await sleep(10);
          continue;
        }
        await this.doKill().catch(() => undefined);
        const why = exitReason === undefined ? (e as Error).message : `QEMU exited (${exitReason})`;
        const log = await tail(this.file('qemuLog'));
        throw new OperationFailed(`cannot start ${this.name}: ${why}${log ? `\n${log}` : ''}`, { call: QEMU, log }, { cause: e });
      }
    }
  }

  /** Resolves once the guest printed on its console; rejects if it stays silent or QEMU dies. */
  private async watchBoot(): Promise<void> {
    const deadline = Date.now() + BOOT_WATCHDOG_MS;
    const pid = await livePid(this.file('pid'));
    while (Date.now() < deadline) {
      if ((await fs.stat(this.file('console')).catch(() => undefined))?.size) return;
      if (pid === null || !(await isQemuOf(pid, this.file('pid')))) throw new Error(`QEMU exited during boot: ${await tail(this.file('qemuLog'), 3)}`);
      await sleep(50);
    }
    throw new Error(`no console output within ${BOOT_WATCHDOG_MS} ms`);
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
      await releaseHostParts(this.dir, this.devices);
      return true;
    };
    // Both ways at once: the guest agent (asked once, in the background: under load its first
    // answer can take seconds, and a guest may ignore the power button), and the power button,
    // pressed again until the stop's timeout. No reply comes on success: the guest goes down.
    void this.agent
      .execute('guest-shutdown', { mode: 'powerdown' }, { noReply: true, timeout: 1_000, connectTimeout: Math.max(200, Math.min(timeoutMs - 500, 15_000)) })
      .catch(() => undefined);
    for (;;) {
      // QEMU may exit before its reply is read: the process is what tells.
      await this.command('system_powerdown').catch(() => undefined);
      const wait = Math.min(POWER_BUTTON_REPEAT_MS, deadline - Date.now());
      if (wait <= 0) return (await isQemuOf(pid, pidfile)) ? false : exited();
      if (await waitForExit(pid, pidfile, wait)) return exited();
    }
  }

  /** QMP `quit`, then SIGKILL if QEMU has not exited; its NICs' taps go with it. */
  protected async doKill(): Promise<void> {
    await this.killQemu();
    await releaseHostParts(this.dir, this.devices);
  }

  private async killQemu(): Promise<void> {
    const pidfile = this.file('pid');
    const pid = await livePid(pidfile);
    if (pid === null) return;
    const qmp = await this.changeMonitor().catch(() => undefined);
    await qmp?.execute('quit', undefined, { timeout: QUIT_GRACE_MS }).catch(() => undefined);
    if (await waitForExit(pid, pidfile, QUIT_GRACE_MS)) return;
    try {
      process.kill(pid, 'SIGKILL');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ESRCH') throw e;
    }
    if (!(await waitForExit(pid, pidfile, QUIT_GRACE_MS))) throw new OperationFailed(`QEMU (pid ${pid}) of ${this.name} survived SIGKILL`);
  }

  protected async doFreeze(): Promise<void> {
    await this.require('freeze', ['running']);
    await this.command('stop');
  }

  protected async doUnfreeze(): Promise<void> {
    await this.require('unfreeze', ['frozen']);
    await this.command('cont');
  }

  /** The agent's socket is in the VM's directory; every other path is derived from it at each start. */
  protected async renamed(): Promise<void> {
    this.agent = this.connectAgent();
    this.files = this.agentFiles();
  }

  protected async doDelete(): Promise<void> {
    this.dropMonitor();
    this.agent.close();
    await releaseHostParts(this.dir, this.devices);
    // The record goes first: from here on the instance no longer exists for `list`.
    await fs.rm(path.join(this.dir, RECORD_FILE), { force: true });
    await fs.rm(this.dir, { recursive: true, force: true });
  }

  /**
   * New devices are checked and made first (a `size` disk's qcow2); on a running VM the removed
   * ones are unplugged (waited on through DEVICE_DELETED) and the new ones plugged onto free root
   * ports, a share then mounted by the guest agent. A failure undoes what this call did.
   */
  protected async applyDevices(next: Devices, change: DeviceChange, live: boolean): Promise<void> {
    const added = await probeDevices('vm', change.added, this.probeEnv);
    const removed = await readSources(change.removed, this.probeEnv);
    for (const [name, d] of Object.entries(change.added)) await prepareVmDevice(this.dir, name, d);
    const plugged: string[] = [];
    try {
      if (live) {
        for (const [name, d] of Object.entries(change.removed)) await this.unplug(name, d, removed.get(name)!);
        for (const [name, d] of Object.entries(change.added)) {
          await this.plug(name, d, added.get(name)!);
          plugged.push(name);
        }
      }
    } catch (e) {
      for (const name of plugged) await this.unplug(name, change.added[name], added.get(name)!).catch(() => undefined);
      for (const [name, d] of Object.entries(change.removed)) await this.plug(name, d, removed.get(name)!).catch(() => undefined);
      for (const name of Object.keys(change.added)) if (!(name in change.removed)) await releaseVmDevice(this.dir, name);
      throw e;
    }
    for (const name of Object.keys(change.removed)) if (!(name in change.added)) await releaseVmDevice(this.dir, name);
  }

  /** Hot-plugs a device into the running VM. */
  private async plug(name: string, d: DeviceConfig, src: DeviceSource): Promise<void> {
    const kind = vmDeviceKind(d, src);
    if (kind === 'skip') return;
    const port = async () => {
      const free = freePorts(await this.command<Array<{ devices: never[] }>>('query-pci'));
      if (!free.length) throw new OperationFailed(`${this.name} has no free PCIe port for device "${name}" (${SPARE_PORTS} spare ones are made at start): restart it to add more`);
      return free[0];
    };
    if (kind === 'nic') {
      await createTap(hostLink(this.dir, name), src.bridge!, src.mtu ?? 1500);
      await this.command('netdev_add', netdevArgs(this.dir, name));
      await this.command('device_add', nicDeviceArgs(name, d, src, await port())).catch(async (e) => {
        await this.command('netdev_del', { id: `net-${name}` }).catch(() => undefined);
        throw e;
      });
      return;
    }
    if (kind === 'share') {
      await startVirtiofsd(this.dir, name, d);
      await this.command('chardev-add', chardevArgs(this.dir, name));
      await this.command('device_add', deviceArgs(this.dir, name, d, src, await port()));
      await this.mountShare(name, d);
      return;
    }
    if (deviceValue(d, 'io.bus') === 'virtio-scsi' && !(await this.hasDevice(SCSI_CONTROLLER))) {
      await this.command('device_add', { driver: 'virtio-scsi-pci', id: SCSI_CONTROLLER, bus: await port() });
    }
    await this.command('blockdev-add', blockdevArgs(this.dir, name, d, src));
    await this.command('device_add', deviceArgs(this.dir, name, d, src, await port())).catch(async (e) => {
      await this.command('blockdev-del', { 'node-name': qemuNodeName(name) }).catch(() => undefined);
      throw e;
    });
  }

  /** Hot-unplugs a device from the running VM: the guest lets go of it first. */
  private async unplug(name: string, d: DeviceConfig, src: DeviceSource): Promise<void> {
    const kind = vmDeviceKind(d, src);
    if (kind === 'skip' || !(await this.hasDevice(qemuDeviceId(name)))) return;
    if (kind === 'share') await this.agentRun(guestUmountCommand(d)).catch(() => undefined);
    const qmp = await this.changeMonitor();
    if (!qmp) return;
    const deleted = new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        qmp.off('DEVICE_DELETED', onEvent);
        reject(new OperationFailed(`the guest of ${this.name} did not release device "${name}" within ${UNPLUG_MS} ms`, { call: 'qmp:device_del' }));
      }, UNPLUG_MS);
      const onEvent = (e: { data?: { device?: string } }) => {
        if (e.data?.device !== qemuDeviceId(name)) return;
        clearTimeout(timer);
        qmp.off('DEVICE_DELETED', onEvent);
        resolve();
      };
      qmp.on('DEVICE_DELETED', onEvent);
    });
    await this.command('device_del', { id: qemuDeviceId(name) });
    await deleted;
    if (kind === 'share') await this.command('chardev-remove', { id: `chr-${name}` }).catch(() => undefined);
    else if (kind === 'nic') {
      await this.command('netdev_del', { id: `net-${name}` }).catch(() => undefined);
      await deleteLink(hostLink(this.dir, name)).catch(() => undefined);
    } else await this.command('blockdev-del', { 'node-name': qemuNodeName(name) }).catch(() => undefined);
  }

  private async hasDevice(id: string): Promise<boolean> {
    const list = await this.command<Array<{ name: string }>>('qom-list', { path: '/machine/peripheral' });
    return list.some((p) => p.name === id);
  }

  /** Runs a guest command through the agent to completion; a failure quotes its stderr. */
  private async agentRun(argv: string[]): Promise<void> {
    const proc = await agentSpawn(this.agent, argv, [], undefined, undefined);
    const r = await collect(proc, { timeout: 30_000 }, `${JSON.stringify(argv[0])} in ${this.name}`);
    if (r.exitCode !== 0) throw new OperationFailed(`${argv.join(' ')} in ${this.name} exited ${r.exitCode}: ${r.stderr.toString().trim()}`, { call: 'qga:guest-exec' });
  }

  private async mountShare(name: string, d: DeviceConfig): Promise<void> {
    await this.agent.wait(AGENT_SETUP_MS);
    await this.agentRun(guestMountCommand(name, d));
  }

  /** After a start: the guest agent mounts the shares; exec and files wait for it. */
  private mountShares(): Promise<void> {
    const shares = Object.entries(this.devices).filter(([, d]) => d.type === 'disk' && d.path !== undefined);
    if (!shares.length) return Promise.resolve();
    return (async () => {
      const sources = await readSources(Object.fromEntries(shares), this.probeEnv);
      for (const [name, d] of shares) if (vmDeviceKind(d, sources.get(name)!) === 'share') await this.mountShare(name, d);
    })();
  }

  protected override deviceState(name: string, d: DeviceConfig): DeviceState {
    const s = super.deviceState(name, d);
    if (d.type !== 'disk') return s;
    return { ...s, qemuDevice: qemuDeviceId(name), ...(d.path === undefined ? { qemuNode: qemuNodeName(name) } : {}) };
  }

  protected async doState(status: InstanceStatus): Promise<Omit<VmState, 'devices'>> {
    const pid = status === 'stopped' ? null : await livePid(this.file('pid'));
    if (pid === null) {
      return { status, pid: null, cpu: { usageNs: 0 }, memory: { usageBytes: 0, limitBytes: null }, processes: 0, network: { addresses: [], interfaces: [] }, vcpus: 0 };
    }
    const [stat, procStatus, cpus, memory, guest] = await Promise.all([
      fs.readFile(`/proc/${pid}/stat`, 'utf8').catch(() => ''),
      fs.readFile(`/proc/${pid}/status`, 'utf8').catch(() => ''),
      this.command<unknown[]>('query-cpus-fast').catch(() => []),
      this.command<{ 'base-memory': number }>('query-memory-size-summary').catch(() => undefined),
      status === 'running' ? this.guestInfo() : undefined,
    ]);
    // utime and stime are fields 14 and 15, in clock ticks (USER_HZ, 100 on Linux); the name
    // (field 2) may hold spaces, so count from its closing parenthesis.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const ticks = Number(fields[11] ?? 0) + Number(fields[12] ?? 0);
    const rssKiB = Number(/^VmRSS:\s+(\d+) kB/m.exec(procStatus)?.[1] ?? 0);
    return {
      status,
      pid,
      cpu: { usageNs: (ticks || 0) * 10_000_000 },
      memory: { usageBytes: rssKiB * 1024, limitBytes: memory?.['base-memory'] ?? null },
      processes: 0,
      network: { addresses: reportedAddresses(guest?.interfaces ?? []), interfaces: guest?.interfaces ?? [] },
      vcpus: cpus.length,
      ...(guest?.os ? { os: guest.os } : {}),
    };
  }

  /** The guest's interfaces and OS from its agent, if it answers within STATE_AGENT_MS; never throws. */
  private async guestInfo(): Promise<{ interfaces: NetworkInterface[]; os?: VmState['os'] } | undefined> {
    const opts = { timeout: STATE_AGENT_MS, connectTimeout: STATE_AGENT_MS };
    try {
      const ifaces = await this.agent.execute<GuestInterface[]>('guest-network-get-interfaces', undefined, opts);
      const interfaces = ifaces.map((i): NetworkInterface => ({
        name: i.name,
        hwaddr: i['hardware-address'] ?? '',
        mtu: 0,
        addresses: (i['ip-addresses'] ?? []).map((a) => ({ family: a['ip-address-type'] === 'ipv6' ? 'inet6' : 'inet', address: a['ip-address'], prefix: a.prefix })),
        counters: {
          bytesReceived: i.statistics?.['rx-bytes'] ?? 0,
          bytesSent: i.statistics?.['tx-bytes'] ?? 0,
          packetsReceived: i.statistics?.['rx-packets'] ?? 0,
          packetsSent: i.statistics?.['tx-packets'] ?? 0,
        },
      }));
      const info = await this.agent
        .execute<Record<string, string>>('guest-get-osinfo', undefined, opts)
        .catch(() => undefined);
      const os = info && { id: info.id, name: info['pretty-name'] ?? info.name, version: info.version, kernelRelease: info['kernel-release'], machine: info.machine };
      return { interfaces, os };
    } catch {
      return undefined;
    }
  }

  protected async applyConfig(next: InstanceConfig, previous: InstanceConfig, live: boolean): Promise<void> {
    launchSettings(next);
    if (!live) return;
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
    await this.agent.wait(timeoutMs);
  }

  /** Runs the command through the guest agent; `stdin` is read to its end and given up front. */
  override async exec(argv: string[], options: ExecOptions = {}): Promise<ExecResult> {
    options ??= {};
    checkExecOptions(options);
    const env = checkSpawn(argv, options, instanceEnvironment(this.config));
    checkAgentSpawn(options);
    const input = await readInput(options.stdin);
    await this.require('run a command in', ['running']);
    await this.guestSetup;
    const proc = await agentSpawn(this.agent, argv, env, options.cwd, input);
    return collect(proc, { ...options, stdin: undefined }, `${JSON.stringify(argv[0])} in ${this.name}`);
  }

  /** A process through the guest agent: its stdin is empty (see agent-exec.ts), its output comes at its exit. */
  protected async doSpawn(argv: string[], options: SpawnOptions): Promise<InstanceProcess> {
    const env = checkSpawn(argv, options, instanceEnvironment(this.config));
    checkAgentSpawn(options);
    await this.require('run a command in', ['running']);
    await this.guestSetup;
    return agentSpawn(this.agent, argv, env, options.cwd, undefined);
  }
}
