/**
 * What a VM asks of its guest, through the guest agent: commands run to completion (mounting a
 * share), the guest's interfaces and OS for `state()`, a power-off, an exec's stdin read whole.
 */
import { InvalidArgument, OperationFailed } from '../../core/errors';
import type { Devices, DeviceConfig } from '../../devices/declarations';
import { type ProbeEnv, readSources } from '../../devices/validate';
import type { NetworkInterface } from '../../instance/instance';
import { collect, type ExecOptions } from '../../instance/process';
import type { GuestAgent } from './agent';
import { agentSpawn } from './agent-exec';
import { guestMountCommand, vmDeviceKind } from './devices';
import type { VmState } from './vm';

/** How long state() waits for the guest agent (it never fails because the agent is down). */
const STATE_AGENT_MS = 300;
/** How long plugging a share waits for the guest agent to mount it. */
const AGENT_SETUP_MS = 60_000;

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
 */
export function askGuestShutdown(agent: GuestAgent, timeoutMs: number): void {
  void agent
    .execute('guest-shutdown', { mode: 'powerdown' }, { noReply: true, timeout: 1_000, connectTimeout: Math.max(200, Math.min(timeoutMs - 500, 15_000)) })
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

/** The guest's interfaces and OS from its agent, if it answers within STATE_AGENT_MS; never throws. */
export async function guestInfo(agent: GuestAgent): Promise<{ interfaces: NetworkInterface[]; os?: VmState['os'] } | undefined> {
  const opts = { timeout: STATE_AGENT_MS, connectTimeout: STATE_AGENT_MS };
  try {
    const ifaces = await agent.execute<GuestInterface[]>('guest-network-get-interfaces', undefined, opts);
    const interfaces = ifaces.map(networkInterface);
    const info = await agent.execute<Record<string, string>>('guest-get-osinfo', undefined, opts).catch(() => undefined);
    const os = info && { id: info.id, name: info['pretty-name'] ?? info.name, version: info.version, kernelRelease: info['kernel-release'], machine: info.machine };
    return { interfaces, os };
  } catch {
    return undefined;
  }
}
