/**
 * Proxy devices with `nat: true`: DNAT rules instead of a proxy process, as LXD's nftables driver
 * writes them (its prerouting, output and postrouting chains), in a table of lxq's own per
 * running instance (`inet lxq_proxy_<hash of its directory>`), replaced whole in one transaction
 * and never a rule in another table. The connect address must be one of the instance's static
 * addresses (`ipv4.address` / `ipv6.address` of a bridged or routed NIC; `0.0.0.0` / `::` takes the
 * first), so the rules cannot redirect another instance's traffic (LXD's rule).
 *
 * Each table is marked in /run/lxq/proxy-nat/ with the instance's long-lived process (its pid and
 * start) before it is made: a stop removes both, and a process that died before the stop leaves a
 * mark that the next Host.open sweeps (sweepProxyNat) once that process has ended; the next start
 * replaces the table anyway.
 *
 * A loopback listen address is refused: the kernel drops 127.0.0.0/8 routed out of another link
 * unless that link has `route_localnet`, which would also let the bridge's instances reach the
 * host's loopback services; lxq changes no sysctl for it. Listen on a host address (the bridge's
 * own, for one).
 */
import { createHash } from 'node:crypto';
import { promises as fs } from 'node:fs';
import * as path from 'node:path';

import { processStartTicks } from '../core/proc';
import { hostLink } from '../devices/nic';
import { InvalidArgument } from '../core/errors';
import { formatIpv4, formatIpv6, parseIpv4, parseIpv6 } from './addresses';
import { enableForwarding, listTable, nft } from './nftables';
import { type InetEndpoint, parseProxy } from './proxy-address';

const MARKS = '/run/lxq/proxy-nat';

type Devices = Readonly<Record<string, Readonly<Record<string, string | undefined>>>>;

const TRUE = ['true', '1', 'yes', 'on'];
const isNat = (d: Readonly<Record<string, string | undefined>>) => d.type === 'proxy' && TRUE.includes(String(d.nat ?? ''));

/** The nat proxies among `devices`. */
export function natProxies(devices: Devices): Devices {
  return Object.fromEntries(Object.entries(devices).filter(([, d]) => isNat(d)));
}

export function proxyNatTable(instanceDir: string): string {
  return `lxq_proxy_${createHash('sha256').update(path.resolve(instanceDir)).digest('hex').slice(0, 16)}`;
}

/** An address written back from its parsed form: nothing of the input reaches the script as is. */
function plain(host: string): string {
  return host.includes(':') ? formatIpv6(parseIpv6(host)) : formatIpv4(parseIpv4(host));
}

const isLoopback = (host: string) => (host.includes(':') ? parseIpv6(host) === 1n : host.startsWith('127.'));

/** A bridged NIC that a forward's target belongs to: its host end is a port of the bridge. */
interface BridgePort {
  device: string;
  hostName?: string;
}

/**
 * The instance's static address of the connect host's family that `connect` names (or the first,
 * for the wildcard), with the bridged NIC that has it; InvalidArgument if none.
 */
function staticTarget(where: string, connect: string, v6: boolean, devices: Devices): { address: string; port?: BridgePort } {
  const key = v6 ? 'ipv6.address' : 'ipv4.address';
  const wildcard = connect === (v6 ? '::' : '0.0.0.0');
  for (const [name, d] of Object.entries(devices)) {
    if (d.type !== 'nic' || !['bridged', 'routed', undefined].includes(d.nictype)) continue;
    for (const a of (d[key] ?? '').split(',').map((s) => s.trim()).filter(Boolean)) {
      if (wildcard || plain(a) === plain(connect)) return { address: plain(a), port: d.nictype === 'routed' ? undefined : { device: name, hostName: d.host_name } };
    }
  }
  if (wildcard) throw new InvalidArgument(`${where}: "connect": the instance has no static IPv${v6 ? 6 : 4} address ("${key}" of a bridged or routed NIC) to forward to`);
  throw new InvalidArgument(`${where}: "connect": ${connect} must be one of the instance's static IPv${v6 ? 6 : 4} addresses ("${key}" of a bridged or routed NIC)`);
}

interface Forward {
  family: 'ip' | 'ip6';
  proto: 'tcp' | 'udp';
  listen: string;
  target: string;
  /** [first, last] listen ports → a connect port, or null: the same ports. */
  runs: Array<{ from: number; to: number; port: number | null }>;
  /** The connect ports, for the hairpin masquerade. */
  targetPorts: number[];
  /** The target's bridged NIC, whose bridge port is put in hairpin mode (the instance reaching itself through the listen address). */
  port?: BridgePort;
}

/**
 * One device's forward, checked against the instance's devices. Runs of listen ports that keep
 * their number, or that all go to one port, are one rule each; any other mapping a rule per port.
 */
/** A nat proxy's own keys checked (what needs no other device): LXD's rules, and no loopback listen address. */
export function checkNatShape(name: string, d: Readonly<Record<string, string | undefined>>, vm: boolean): { listen: InetEndpoint; connect: InetEndpoint; pairs: Array<{ listen: InetEndpoint; connect: InetEndpoint }> } {
  const where = `device "${name}"`;
  const pairs = parseProxy(where, d, vm).pairs as Array<{ listen: InetEndpoint; connect: InetEndpoint }>;
  const { listen, connect } = pairs[0];
  if (isLoopback(listen.host)) {
    throw new InvalidArgument(
      `${where}: "listen": ${listen.host} is a loopback address, which nat mode cannot forward (the kernel drops loopback traffic routed to another link unless route_localnet, which lxq does not set): listen on a host address, or leave out "nat"`,
    );
  }
  return { listen, connect, pairs };
}

export function natForward(name: string, d: Readonly<Record<string, string | undefined>>, devices: Devices, vm: boolean): Forward {
  const where = `device "${name}"`;
  const { listen, connect, pairs } = checkNatShape(name, d, vm);
  const v6 = listen.host.includes(':');
  const { address: target, port } = staticTarget(where, connect.host, v6, devices);
  const runs: Forward['runs'] = [];
  for (const { listen: l, connect: c } of pairs) {
    const last = runs[runs.length - 1];
    const same = l.port === c.port;
    if (last && last.to === l.port - 1 && (same ? last.port === null : last.port === c.port)) last.to = l.port;
    else runs.push({ from: l.port, to: l.port, port: same ? null : c.port });
  }
  // A run kept as "same ports" of one port is simpler as that port.
  for (const r of runs) if (r.port === null && r.from === r.to) r.port = r.from;
  const targetPorts = [...new Set(pairs.map((p) => p.connect.port))];
  return { family: v6 ? 'ip6' : 'ip', proto: listen.proto, listen: plain(listen.host), target, runs, targetPorts, port };
}

/** Every nat proxy of `devices`, checked (InvalidArgument naming the device and key, nothing changed). */
export function natForwards(devices: Devices, vm: boolean): Forward[] {
  return Object.entries(natProxies(devices)).map(([name, d]) => natForward(name, d, devices, vm));
}

const ports = (a: number, b: number) => (a === b ? `${a}` : `${a}-${b}`);

/** The instance's table as an nftables script that replaces it whole. */
export function proxyNatRuleset(table: string, forwards: Forward[]): string {
  const dnat: string[] = [];
  const snat: string[] = [];
  for (const f of forwards) {
    const to = (p: number | null) => (p === null ? f.target : f.family === 'ip6' ? `[${f.target}]:${p}` : `${f.target}:${p}`);
    for (const r of f.runs) dnat.push(`${f.family} daddr ${f.listen} ${f.proto} dport ${ports(r.from, r.to)} dnat ${f.family} to ${to(r.port)}`);
    // The instance reaching itself through the listen address: its answer must come back through the host.
    for (const p of f.targetPorts) snat.push(`${f.family} saddr ${f.target} ${f.family} daddr ${f.target} ${f.proto} dport ${p} masquerade`);
  }
  const chain = (name: string, hook: string, priority: number, rules: string[]) => [
    `  chain ${name} {`,
    `    type nat hook ${hook} priority ${priority}; policy accept;`,
    ...rules.map((r) => `    ${r}`),
    '  }',
  ];
  const t = `inet ${table}`;
  return [`table ${t}`, `delete table ${t}`, `table ${t} {`, ...chain('prert', 'prerouting', -100, dnat), ...chain('out', 'output', -100, dnat), ...chain('pstrt', 'postrouting', 100, snat), '}', ''].join('\n');
}

/** Writes the instance's DNAT rules (none: removes them), bound to its long-lived process `pid`. */
export async function applyProxyNat(instanceDir: string, forwards: Forward[], pid: number): Promise<void> {
  const table = proxyNatTable(instanceDir);
  if (!forwards.length) return removeProxyNat(instanceDir);
  const ticks = await processStartTicks(pid);
  if (ticks === null) return removeProxyNat(instanceDir);
  // Marked first: a process killed midway leaves a mark, never an unmarked table.
  await fs.mkdir(MARKS, { recursive: true, mode: 0o700 });
  await fs.writeFile(path.join(MARKS, table), `${pid} ${ticks}\n${path.resolve(instanceDir)}\n`);
  await nft(proxyNatRuleset(table, forwards));
  for (const family of new Set(forwards.map((f) => f.family))) await enableForwarding(family);
  for (const f of forwards) if (f.port) await hairpin(f.port.hostName ?? hostLink(instanceDir, f.port.device));
}

/**
 * Puts a bridge port in hairpin mode, as LXD does for a nat proxy's target: the instance reaching
 * its own listen address sends to the bridge, and its DNATed packet must go back out of the port
 * it came in by, which a bridge does not do otherwise. A link that is no Linux bridge's port
 * (no brport/) is left as it is.
 */
async function hairpin(link: string): Promise<void> {
  if (!/^[A-Za-z0-9_.-]{1,15}$/.test(link) || link === '.' || link === '..') return;
  await fs.writeFile(`/sys/class/net/${link}/brport/hairpin_mode`, '1').catch((e: NodeJS.ErrnoException) => {
    if (e.code !== 'ENOENT') throw e;
  });
}

/** Removes the instance's DNAT rules, if any (nothing run for an instance that has none). */
export async function removeProxyNat(instanceDir: string): Promise<void> {
  const table = proxyNatTable(instanceDir);
  const mark = path.join(MARKS, table);
  if (!(await fs.access(mark).then(() => true, () => false))) return;
  await nft(`table inet ${table}\ndelete table inet ${table}\n`);
  await fs.rm(mark, { force: true });
}

/** Host.open: removes the tables of instances whose process has ended (stopped while no lxq process held them, or that process was killed). */
export async function sweepProxyNat(): Promise<void> {
  for (const table of await fs.readdir(MARKS).catch(() => [] as string[])) {
    const [first = '', dir = ''] = (await fs.readFile(path.join(MARKS, table), 'utf8').catch(() => '')).split('\n');
    const [pid, ticks] = first.split(' ').map(Number);
    if (pid > 0 && (await processStartTicks(pid)) === ticks) continue;
    if (dir && proxyNatTable(dir) === table) await removeProxyNat(dir).catch(() => undefined);
  }
}

/**
 * The listen ports ("tcp 10.1.2.1 8080") the instance's nat table forwards now, read from
 * nftables (`nft list table`): empty when it has no table.
 */
export async function natForwardsLive(instanceDir: string): Promise<Set<string>> {
  const text = await listTable('inet', proxyNatTable(instanceDir)).catch(() => '');
  const out = new Set<string>();
  for (const m of text.matchAll(/(?:ip|ip6) daddr (\S+) (tcp|udp) dport (\d+)(?:-(\d+))? dnat/g)) {
    for (let p = Number(m[3]); p <= Number(m[4] ?? m[3]); p++) out.add(`${m[2]} ${plain(m[1])} ${p}`);
  }
  return out;
}

/** The key natForwardsLive gives a listen endpoint. */
export const natListenKey = (l: InetEndpoint) => `${l.proto} ${plain(l.host)} ${l.port}`;
