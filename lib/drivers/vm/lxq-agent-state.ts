/**
 * The guest's state from inside, as lxq's agent reports it (the STATE request of
 * native/agent/PROTOCOL.md: lines of text), and the interface settings of `agent.nic_config`.
 * The text is the guest's: hostile input, parsed field by field, bounded by the frame's size.
 */
import type { NetworkInterface } from '../../instance/instance';
import type { LxqAgentClient } from './lxq-agent';
import { randomBytes } from 'node:crypto';

import { agentRequest } from './lxq-agent-files';
import { Op } from './lxq-agent-protocol';

/** What the agent says of its guest. */
export interface AgentGuestState {
  processes: number;
  memory: { totalBytes: number; availableBytes: number };
  disk: { totalBytes: number; availableBytes: number };
  interfaces: NetworkInterface[];
}

const num = (s: string | undefined): number => {
  const n = Number(s);
  return Number.isFinite(n) && n >= 0 ? n : 0;
};

/** Parses the STATE text; unknown or malformed lines are skipped. */
export function parseGuestState(text: string): AgentGuestState {
  const state: AgentGuestState = { processes: 0, memory: { totalBytes: 0, availableBytes: 0 }, disk: { totalBytes: 0, availableBytes: 0 }, interfaces: [] };
  const byName = new Map<string, NetworkInterface>();
  for (const line of text.split('\n')) {
    const f = line.split(' ');
    if (f[0] === 'processes') state.processes = num(f[1]);
    else if (f[0] === 'memory') state.memory = { totalBytes: num(f[1]), availableBytes: num(f[2]) };
    else if (f[0] === 'disk') state.disk = { totalBytes: num(f[1]), availableBytes: num(f[2]) };
    else if (f[0] === 'if' && f.length === 8 && !byName.has(f[1])) {
      const i: NetworkInterface = {
        name: f[1],
        hwaddr: f[2] === '-' ? '' : f[2],
        mtu: num(f[3]),
        addresses: [],
        counters: { bytesReceived: num(f[4]), bytesSent: num(f[5]), packetsReceived: num(f[6]), packetsSent: num(f[7]) },
      };
      byName.set(i.name, i);
      state.interfaces.push(i);
    } else if (f[0] === 'addr' && f.length === 5 && (f[2] === 'inet' || f[2] === 'inet6')) {
      byName.get(f[1])?.addresses.push({ family: f[2], address: f[3], prefix: num(f[4]) });
    }
  }
  return state;
}

/** Asks the agent for its guest's state. */
export async function agentGuestState(client: LxqAgentClient): Promise<AgentGuestState> {
  return parseGuestState((await agentRequest(client, { op: Op.State, rel: '' }, 'the guest state')).toString('utf8'));
}

/** Gives the interface of MAC `hwaddr` the name `name` (if given) and the MTU `mtu` (if not 0). */
export async function agentConfigureNic(client: LxqAgentClient, hwaddr: string, name: string | undefined, mtu: number | undefined): Promise<void> {
  await agentRequest(client, { op: Op.Nic, rel: hwaddr, arg: name ?? '', flags: mtu ?? 0 }, `the interface ${hwaddr}`);
}

/** A guest's identity, as a VM loaded from a saved boot gets it (native/agent/identity.h). */
export interface GuestIdentity {
  /** 32 lowercase hex digits (/etc/machine-id); images without systemd have none. */
  machineId?: string;
  hostname: string;
  /** Each NIC's address in the saved state and the one the VM's config gives it. */
  macs?: Array<{ from: string; to: string }>;
}

/**
 * Renews the guest's identity: its random pool reseeded from 64 bytes of the host's, its clock
 * set from the host's (read just before the request goes), its machine id, hostname and MACs.
 */
export async function agentRenewIdentity(client: LxqAgentClient, id: GuestIdentity): Promise<void> {
  const now = Date.now();
  const lines = [`entropy ${randomBytes(64).toString('hex')}`, `time ${Math.floor(now / 1000)} ${(now % 1000) * 1_000_000}`, `hostname ${id.hostname}`];
  if (id.machineId) lines.push(`machine-id ${id.machineId}`);
  for (const m of id.macs ?? []) lines.push(`mac ${m.from} ${m.to}`);
  await agentRequest(client, { op: Op.Identity, rel: '', arg: `${lines.join('\n')}\n` }, 'the guest identity');
}
