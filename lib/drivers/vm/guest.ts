/**
 * A VM's guest, as the host reaches it: through QEMU's guest agent (qemu-ga: files, the guest's
 * interfaces and OS, a power-off, commands where the image has no lxq agent) and lxq's own agent
 * (exec, spawn and terminals where the image has it), the shares mounted after each start.
 */
import { constants as osConstants } from 'node:os';

import { InvalidArgument, NotSupported, OperationFailed } from '../../core/errors';
import type { Devices, DeviceConfig } from '../../devices/declarations';
import { nics } from '../../devices/nic';
import { type ProbeEnv, readSources } from '../../devices/validate';
import type { InstanceFiles } from '../../instance/files';
import type { InstanceStatus, NetworkInterface } from '../../instance/instance';
import { checkPty, collect, type ExecOptions, type ExecResult, type InstanceProcess, type SpawnOptions } from '../../instance/process';
import type { QmpEvent } from '../../qmp';
import { GuestAgent } from './agent';
import { agentSpawn, checkAgentSpawn } from './agent-exec';
import { AgentFiles } from './agent-files';
import { guestMountCommand, vmDeviceKind } from './devices';
import { LxqAgentFiles } from './lxq-agent-files';
import { LxqAgentLink } from './lxq-agent-link';
import { agentConfigureNic, type AgentGuestState, agentGuestState, agentRenewIdentity, type GuestIdentity } from './lxq-agent-state';
import type { VmFile } from './paths';
import { LXQ_AGENT_DEVICE_ID } from './qemu-args';
import type { VmState } from './vm';

/** How long state() waits for the guest agent (it never fails because the agent is down). */
const STATE_AGENT_MS = 300;
/** How long a NIC just plugged may take to appear in the guest. */
const NIC_APPEAR_MS = 30_000;
const ENODEV = osConstants.errno.ENODEV;
/** The same for lxq's agent, which may need a connection and its handshake first. */
const LXQ_STATE_MS = 1_000;
/** How long plugging a share waits for the guest agent to mount it. */
const AGENT_SETUP_MS = 60_000;
/**
 * How long exec and spawn wait for the lxq agent of a running VM (a guest still booting), so
 * that `await vm.start(); await vm.exec(…)` works as it does for a container.
 */
const AGENT_WAIT_MS = 60_000;

/** One interface as guest-network-get-interfaces reports it. */
interface GuestInterface {
  name: string;
  'hardware-address'?: string;
  'ip-addresses'?: Array<{ 'ip-address-type': 'ipv4' | 'ipv6'; 'ip-address': string; prefix: number }>;
  statistics?: { 'rx-bytes': number; 'tx-bytes': number; 'rx-packets': number; 'tx-packets': number };
}

/** Reads an exec's stdin to its end (the agent takes it whole, when the command starts). */
export async function readInput(input: ExecOptions['stdin']): Promise<Buffer | undefined> {
  if (input === undefined) return undefined;
  if (typeof input === 'string') return Buffer.from(input);
  if (Buffer.isBuffer(input)) return input;
  if (!input || typeof (input as NodeJS.ReadableStream).on !== 'function') throw new InvalidArgument('stdin must be a string, a Buffer or a Readable');
  const chunks: Buffer[] = [];
  for await (const c of input) chunks.push(typeof c === 'string' ? Buffer.from(c) : c);
  return Buffer.concat(chunks);
}

/** Runs a guest command through the agent to completion; a failure quotes its stderr. */
export async function agentRun(agent: GuestAgent, argv: string[], vmName: string): Promise<void> {
  const proc = await agentSpawn(agent, argv, [], undefined, undefined);
  const r = await collect(proc, { timeout: 30_000 }, `${JSON.stringify(argv[0])} in ${vmName}`);
  if (r.exitCode !== 0) throw new OperationFailed(`${argv.join(' ')} in ${vmName} exited ${r.exitCode}: ${r.stderr.toString().trim()}`, { call: 'qga:guest-exec' });
}

/** Mounts share `name` in the guest, once its agent answers. */
export async function mountShare(agent: GuestAgent, name: string, d: DeviceConfig, vmName: string): Promise<void> {
  await agent.wait(AGENT_SETUP_MS);
  await agentRun(agent, guestMountCommand(name, d), vmName);
}

/** After a start: the guest agent mounts the shares among `devices`. */
export async function mountShares(agent: GuestAgent, devices: Devices, probeEnv: ProbeEnv, vmName: string): Promise<void> {
  const shares = Object.entries(devices).filter(([, d]) => d.type === 'disk' && d.path !== undefined);
  if (!shares.length) return;
  const sources = await readSources(Object.fromEntries(shares), probeEnv);
  for (const [name, d] of shares) if (vmDeviceKind(d, sources.get(name)!) === 'share') await mountShare(agent, name, d, vmName);
}

/**
 * Asks the agent, once and in the background, to power the guest off (under load its first
 * answer can take seconds). No reply comes on success: the guest goes down.
 *
 * The connection is held until `stopped` settles (QEMU has exited, or the stop gave up). A
 * guest-shutdown that fails (its `shutdown -P +0` refused by a guest already powering off,
 * e.g. by the power button pressed beside it) is answered with an error, which qemu-ga (7.2)
 * writes in a loop that never sleeps nor sees SIGTERM while nobody holds the port's host end:
 * systemd then waited its 90 s stop timeout for qemu-ga at every such stop (debian/12: 8 of 12
 * stops before this).
 */
export function askGuestShutdown(agent: GuestAgent, timeoutMs: number, stopped: Promise<unknown>): void {
  void agent
    .execute('guest-shutdown', { mode: 'powerdown' }, { noReply: true, timeout: 1_000, connectTimeout: Math.max(200, Math.min(timeoutMs - 500, 15_000)), keepOpen: stopped })
    .catch(() => undefined);
}

function networkInterface(i: GuestInterface): NetworkInterface {
  return {
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
  };
}

/** The guest's OS from qemu-ga, if it answers within STATE_AGENT_MS; never throws. */
async function guestOs(agent: GuestAgent): Promise<VmState['os'] | undefined> {
  const opts = { timeout: STATE_AGENT_MS, connectTimeout: STATE_AGENT_MS };
  const info = await agent.execute<Record<string, string>>('guest-get-osinfo', undefined, opts).catch(() => undefined);
  return info && { id: info.id, name: info['pretty-name'] ?? info.name, version: info.version, kernelRelease: info['kernel-release'], machine: info.machine };
}

/** The guest's interfaces and OS from qemu-ga, if it answers within STATE_AGENT_MS; never throws. */
async function guestInfo(agent: GuestAgent): Promise<GuestInfo | undefined> {
  const opts = { timeout: STATE_AGENT_MS, connectTimeout: STATE_AGENT_MS };
  try {
    const ifaces = await agent.execute<GuestInterface[]>('guest-network-get-interfaces', undefined, opts);
    return { interfaces: ifaces.map(networkInterface), os: await guestOs(agent) };
  } catch {
    return undefined;
  }
}

/** What state() learns from inside the guest. */
export interface GuestInfo {
  interfaces: NetworkInterface[];
  os?: VmState['os'];
  /** lxq's agent only: the guest's own figures. */
  inside?: AgentGuestState;
}

/** What the guest side needs of its VM. */
export interface GuestHooks {
  /** The path of one of the VM's files (its directory changes when it is renamed). */
  file(which: VmFile): string;
  name(): string;
  /** Whether the VM's image runs the lxq agent (images built before it came run qemu-ga only). */
  hasLxqAgent(): boolean;
  status(): Promise<InstanceStatus>;
  /** InvalidState unless the VM is in one of `states` (BaseInstance's require). */
  require(action: string, states: InstanceStatus[]): Promise<unknown>;
}

export class VmGuest {
  /** The guest agent: one connection per VM, made on first need, made again after a restart. */
  agent: GuestAgent;
  /** lxq's own agent, when the image has it: exec, spawn and terminals. */
  private lxqAgent: LxqAgentLink;
  /** Files, through lxq's agent where the image has it, else through qemu-ga. */
  files: InstanceFiles;
  /** The shares being mounted by the guest agent after the last start (exec and files wait for it). */
  private setup: Promise<void> = Promise.resolve();

  constructor(private readonly vm: GuestHooks) {
    this.agent = this.connectAgent();
    this.lxqAgent = new LxqAgentLink(vm.file('lxqAgent'), vm.name(), vm.file('lxqAgentMux'));
    this.files = this.agentFiles();
  }

  private connectAgent(): GuestAgent {
    return new GuestAgent(this.vm.file('qga'), this.vm.name(), this.vm.file('qgaMux'));
  }

  private agentFiles(): InstanceFiles {
    const ready = async () => {
      if ((await this.vm.status()) === 'stopped') {
        throw new NotSupported(`file access in a stopped vm is not supported: it goes through the guest agent, which runs only while ${this.vm.name()} runs; start it first`);
      }
      await this.vm.require('access files in', ['running']);
      await this.setup;
    };
    if (!this.vm.hasLxqAgent()) return new AgentFiles(this.agent, ready);
    return new LxqAgentFiles(async () => {
      await ready();
      return this.lxqAgent.use(AGENT_WAIT_MS);
    });
  }

  /** The agents' sockets are in the VM's directory, which a rename moved: new connections there. */
  renamed(): void {
    this.agent = this.connectAgent();
    this.lxqAgent.close();
    this.lxqAgent = new LxqAgentLink(this.vm.file('lxqAgent'), this.vm.name(), this.vm.file('lxqAgentMux'));
    this.files = this.agentFiles();
  }

  close(): void {
    this.agent.close();
    this.lxqAgent.close();
  }

  /**
   * After a start: the guest agent mounts the shares and, with `nicConfig` (agent.nic_config),
   * lxq's agent names the NICs' interfaces and sets their MTUs; exec and files wait for it (not
   * the start). A failure leaves the guest as it is (the commands then see it).
   */
  started(devices: Devices, probeEnv: ProbeEnv, nicConfig: boolean): void {
    this.setup = (async () => {
      await mountShares(this.agent, devices, probeEnv, this.vm.name()).catch(() => undefined);
      if (nicConfig && this.vm.hasLxqAgent()) await this.configureNics(devices, probeEnv).catch(() => undefined);
    })();
  }

  /** Each NIC's interface, found by its MAC, gets the device's name and MTU (as LXD's agent does). */
  private async configureNics(devices: Devices, probeEnv: ProbeEnv): Promise<void> {
    const list = nics(devices).filter(([, d]) => d.hwaddr);
    if (!list.length) return;
    const sources = await readSources(Object.fromEntries(list), probeEnv);
    for (const [name, d] of list) await this.configureNic(name, d, sources.get(name)?.mtu);
  }

  /**
   * The interface of NIC `name` gets the device's name and MTU (its network's, `mtu`, unless the
   * device says). A NIC just plugged appears in the guest a moment later: ENODEV is tried again
   * for up to NIC_APPEAR_MS.
   */
  async configureNic(name: string, d: DeviceConfig, mtu: number | undefined): Promise<void> {
    if (!d.hwaddr) return;
    const deadline = Date.now() + NIC_APPEAR_MS;
    for (;;) {
      try {
        const client = await this.lxqAgent.use(AGENT_SETUP_MS);
        return await agentConfigureNic(client, d.hwaddr, d.name ?? name, d.mtu !== undefined ? Number(d.mtu) : mtu);
      } catch (e) {
        if ((e as OperationFailed).errno !== ENODEV || Date.now() > deadline) throw e;
        await new Promise((r) => setTimeout(r, 200));
      }
    }
  }


  /** Renews the guest's identity through lxq's agent (a VM loaded from a saved boot: saved-boot-start.ts). */
  async renewIdentity(id: GuestIdentity): Promise<void> {
    await agentRenewIdentity(await this.lxqAgent.use(AGENT_SETUP_MS), id);
  }

  /** Runs a command through lxq's agent while the VM starts (no status check); OperationFailed unless it exits 0. */
  async runChecked(argv: string[]): Promise<void> {
    const proc = await this.lxqAgent.spawn(argv, { env: ['PATH=/usr/sbin:/usr/bin:/sbin:/bin'] }, AGENT_SETUP_MS);
    const r = await collect(proc, { timeout: AGENT_SETUP_MS }, `${JSON.stringify(argv[0])} in ${this.vm.name()}`);
    if (r.exitCode !== 0) throw new OperationFailed(`${argv.join(' ')} in ${this.vm.name()} exited ${r.exitCode}: ${r.stderr.toString().trim()}`);
  }

  /** An event of the VM's monitor: the guest closed the lxq agent's port (its agent died or restarts), its commands are lost. */
  monitorEvent(e: QmpEvent): void {
    const data = e.data as { id?: string; open?: boolean } | undefined;
    if (e.event === 'VSERPORT_CHANGE' && data?.id === LXQ_AGENT_DEVICE_ID && data.open === false) this.lxqAgent.portClosed();
  }

  /**
   * The guest's state from inside: through lxq's agent when the image has it (given LXQ_STATE_MS
   * to answer), else qemu-ga; undefined when the agent does not answer in time. Never throws.
   */
  async info(): Promise<GuestInfo | undefined> {
    if (!this.vm.hasLxqAgent()) return guestInfo(this.agent);
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<undefined>((resolve) => (timer = setTimeout(() => resolve(undefined), LXQ_STATE_MS)));
    const asked = (async () => {
      const [inside, os] = await Promise.all([this.lxqAgent.use(LXQ_STATE_MS).then(agentGuestState), guestOs(this.agent)]);
      return { interfaces: inside.interfaces, os, inside };
    })().catch(() => undefined);
    try {
      return await Promise.race([asked, late]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** Resolves when the agent exec goes through answers; OperationFailed after `timeoutMs`. */
  async waitForAgent(timeoutMs: number): Promise<void> {
    if (this.vm.hasLxqAgent()) await this.lxqAgent.connect(timeoutMs);
    else await this.agent.wait(timeoutMs);
  }

  /**
   * Runs the command through the lxq agent (as a container's exec), or through qemu-ga, where
   * `stdin` is read to its end and given up front. `env` is the whole environment (checkSpawn's).
   */
  async exec(argv: string[], env: string[], options: ExecOptions): Promise<ExecResult> {
    const what = `${JSON.stringify(argv[0])} in ${this.vm.name()}`;
    if (this.vm.hasLxqAgent()) return collect(await this.lxqSpawn(argv, env, options), options, what);
    checkAgentSpawn(options);
    const input = await readInput(options.stdin);
    await this.ready();
    const proc = await agentSpawn(this.agent, argv, env, options.cwd, input);
    return collect(proc, { ...options, stdin: undefined }, what);
  }

  /**
   * A process through the lxq agent, or through qemu-ga: then its stdin is empty (see
   * agent-exec.ts) and its output comes at its exit.
   */
  async spawn(argv: string[], env: string[], options: SpawnOptions): Promise<InstanceProcess> {
    if (this.vm.hasLxqAgent()) return this.lxqSpawn(argv, env, options);
    checkAgentSpawn(options);
    await this.ready();
    return agentSpawn(this.agent, argv, env, options.cwd, undefined);
  }

  /** Starts a command through the lxq agent, once the VM runs and its shares are mounted. */
  private async lxqSpawn(argv: string[], env: string[], options: SpawnOptions): Promise<InstanceProcess> {
    const pty = checkPty(options.pty);
    await this.ready();
    return this.lxqAgent.spawn(argv, { env, cwd: options.cwd, user: options.user, group: options.group, pty }, AGENT_WAIT_MS);
  }

  /** A command may run: the VM runs and the shares of its last start are mounted. */
  private async ready(): Promise<void> {
    await this.vm.require('run a command in', ['running']);
    await this.setup;
  }
}
