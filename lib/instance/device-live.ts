/**
 * What `state()` reads of a device's live status where the truth is (the kernel's tables, the
 * instance's own interfaces), shared by the drivers: a NIC's interface and host link, a mount
 * in a process's mount namespace, the sockets a process listens on.
 */
import { promises as fs } from 'node:fs';

import type { DeviceConfig } from '../devices/declarations';
import { parseIpv4, parseIpv6 } from '../network/addresses';
import { type Endpoint, parseProxy } from '../network/proxy-address';
import { natListenKey } from '../network/proxy-nat';
import type { DeviceState, MountState, NetworkInterface, ProxyLiveState } from './state';

/** Whether the host has a link of that name now. */
export async function hostLinkPresent(name: string | undefined): Promise<boolean> {
  return name !== undefined && !name.includes('/') && (await fs.access(`/sys/class/net/${name}`).then(() => true, () => false));
}

/** A NIC's live status: its interface among `interfaces` (by name or MAC), its host link if the host has it now. */
export async function nicLive(d: DeviceConfig, found: NetworkInterface | undefined, hostLink: string | undefined): Promise<DeviceState['nic']> {
  return { nictype: d.nictype ?? 'bridged', interface: found ?? null, hostName: (await hostLinkPresent(hostLink)) ? hostLink! : null };
}

/** The interface with MAC `hwaddr` (any case), if there is one. */
export function byHwaddr(interfaces: NetworkInterface[], hwaddr: string | undefined): NetworkInterface | undefined {
  return hwaddr ? interfaces.find((i) => i.hwaddr.toLowerCase() === hwaddr.toLowerCase()) : undefined;
}

/** mountinfo escapes space, tab, newline and backslash as octal (\040…). */
const unescape = (p: string) => p.replace(/\\([0-7]{3})/g, (_m, oct: string) => String.fromCharCode(parseInt(oct, 8)));

/** Each mount point's last mount (the one seen there) in a mountinfo text, paths as the reading process's root sees them. */
export function mountTable(text: string): Map<string, MountState> {
  const out = new Map<string, MountState>();
  for (const line of text.split('\n')) {
    const [left, right] = line.split(' - ');
    if (right === undefined) continue;
    const f = left.split(' ');
    const [fstype, source] = right.split(' ');
    const target = unescape(f[4]);
    out.set(target, { target, readOnly: f[5].split(',').includes('ro'), fstype, source: unescape(source), root: unescape(f[3]) });
  }
  return out;
}

/** The mounts in the mount namespace of `pid` (its root's view), empty when it cannot be read (gone meanwhile). */
export async function mountsOf(pid: number): Promise<Map<string, MountState>> {
  return mountTable(await fs.readFile(`/proc/${pid}/mountinfo`, 'utf8').catch(() => ''));
}

/** The socket inodes `pid` holds. */
export async function socketInodes(pid: number): Promise<Set<string>> {
  const dir = `/proc/${pid}/fd`;
  const fds = await fs.readdir(dir).catch(() => [] as string[]);
  const links = await Promise.all(fds.map((fd) => fs.readlink(`${dir}/${fd}`).catch(() => '')));
  return new Set(links.map((l) => /^socket:\[(\d+)\]$/.exec(l)?.[1]).filter((i): i is string => i !== undefined));
}

/** A listening socket as the kernel's tables have it: `tcp`/`udp` with its address bytes (hex) and port, or `unix` with its path. */
type Listener = { proto: 'tcp' | 'udp'; host: bigint; v6: boolean; port: number } | { proto: 'unix'; path: string };

/** /proc/net/{tcp,udp}{,6}'s address: 32-bit words in host (little-endian) order. */
function tableAddress(hex: string): bigint {
  let out = 0n;
  for (let i = 0; i < hex.length; i += 8) out = (out << 32n) | BigInt(`0x${(hex.slice(i, i + 8).match(/../g) ?? []).reverse().join('')}`);
  return out;
}

/** The listening sockets among `inodes` in the network namespace of `pid` (TCP in LISTEN, every bound UDP socket, listening unix ones). */
async function listeners(pid: number, inodes: Set<string>): Promise<Listener[]> {
  const read = (t: string) => fs.readFile(`/proc/${pid}/net/${t}`, 'utf8').catch(() => '');
  const out: Listener[] = [];
  for (const t of ['tcp', 'tcp6', 'udp', 'udp6'] as const) {
    for (const line of (await read(t)).split('\n').slice(1)) {
      const f = line.trim().split(/\s+/);
      if (f.length < 10 || !inodes.has(f[9]) || (t.startsWith('tcp') && f[3] !== '0A')) continue;
      const [addr, port] = f[1].split(':');
      out.push({ proto: t.startsWith('tcp') ? 'tcp' : 'udp', host: tableAddress(addr), v6: t.endsWith('6'), port: parseInt(port, 16) });
    }
  }
  for (const line of (await read('unix')).split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f.length >= 8 && inodes.has(f[6]) && (parseInt(f[3], 16) & 0x10000) !== 0) out.push({ proto: 'unix', path: f[7] });
  }
  return out;
}

/** The address as the kernel's table would hold it (an IPv4 address on an IPv6 socket stays IPv4: lxq listens per family). */
function addressKey(host: string): { host: bigint; v6: boolean } {
  return host.includes(':') ? { host: parseIpv6(host), v6: true } : { host: BigInt(parseIpv4(host)), v6: false };
}

/** How a proxy is served now: the proxy process and the network namespace its listeners are in (null: none, or not visible from the host), a nat proxy's forwards. */
export interface ProxyServed {
  pid: number | null;
  netnsPid: number | null;
  nat: Set<string>;
}

/**
 * A proxy's listeners and whether each is served now: a socket of the proxy process listening
 * there, in the network namespace it listens in (the host's, or the container's for `bind:
 * instance`; a VM's guest is not seen from the host: null); a nat proxy's rule in lxq's table.
 */
export async function proxyLive(name: string, d: DeviceConfig, vm: boolean, served: ProxyServed): Promise<ProxyLiveState> {
  const spec = parseProxy(`device "${name}"`, d as Record<string, string | undefined>, vm);
  const pid = spec.nat ? null : served.pid;
  const have = pid !== null && served.netnsPid !== null ? await listeners(served.netnsPid, await socketInodes(pid)) : [];
  const listening = (l: Endpoint): boolean | null => {
    if (spec.nat) return l.proto !== 'unix' && served.nat.has(natListenKey(l));
    if (pid === null) return false;
    if (served.netnsPid === null) return null;
    if (l.proto === 'unix') return have.some((h) => h.proto === 'unix' && h.path === (l.abstract ? `@${l.path}` : l.path));
    const want = addressKey(l.host);
    return have.some((h) => h.proto === l.proto && h.port === l.port && h.v6 === want.v6 && h.host === want.host);
  };
  const text = (l: Endpoint) => (l.proto === 'unix' ? `unix:${l.abstract ? '@' : ''}${l.path}` : `${l.proto}:${l.host.includes(':') ? `[${l.host}]` : l.host}:${l.port}`);
  return { pid, listeners: spec.pairs.map((p) => ({ address: text(p.listen), listening: listening(p.listen) })) };
}
