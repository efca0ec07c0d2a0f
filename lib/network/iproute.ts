/**
 * Links through iproute2 (`ip`, `ip -json` to read): bridges, veth pairs, taps, and moving a
 * link into an instance's network namespace. Only links lxq made are ever changed.
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';

import { OperationFailed } from '../core/errors';
import { promises as fs } from 'node:fs';

import { type Cidr6, parseCidr, parseCidr6, parseIpv4 } from './addresses';

const execFileP = promisify(execFile);

export async function ip(args: string[]): Promise<string> {
  try {
    return (await execFileP('ip', args)).stdout;
  } catch (e) {
    const err = e as { stderr?: string; message: string };
    throw new OperationFailed(`ip ${args.join(' ')}: ${err.stderr?.trim() || err.message}`, { call: 'ip' });
  }
}

async function ipJson<T>(args: string[]): Promise<T> {
  return JSON.parse((await ip(['-json', ...args])) || '[]') as T;
}

export interface LinkInfo {
  ifname: string;
  mtu: number;
  address?: string;
  master?: string;
  operstate?: string;
}

export async function link(name: string): Promise<LinkInfo | undefined> {
  const out = await ipJson<LinkInfo[]>(['link', 'show', 'dev', name]).catch(() => []);
  return out[0];
}

/** Every subnet the host routes or has an address in (all tables), for picking a free one. */
export async function hostSubnets(): Promise<Array<{ network: number; broadcast: number }>> {
  const [routes, addrs] = await Promise.all([
    ipJson<Array<{ dst: string; type?: string }>>(['-4', 'route', 'show', 'table', 'all']),
    ipJson<Array<{ addr_info: Array<{ family: string; local: string; prefixlen: number }> }>>(['-4', 'addr', 'show']),
  ]);
  const out: Array<{ network: number; broadcast: number }> = [];
  for (const r of routes) {
    if (r.dst === 'default') continue;
    try {
      out.push(parseCidr(r.dst.includes('/') ? r.dst : `${r.dst}/32`));
    } catch {
      /* not IPv4 */
    }
  }
  for (const a of addrs) for (const i of a.addr_info ?? []) if (i.family === 'inet') out.push(parseCidr(`${i.local}/${i.prefixlen}`));
  return out;
}

/** Every IPv6 subnet the host routes or has an address in (all tables), but link-local and multicast. */
export async function hostSubnets6(): Promise<Cidr6[]> {
  const [routes, addrs] = await Promise.all([
    ipJson<Array<{ dst: string; type?: string }>>(['-6', 'route', 'show', 'table', 'all']),
    ipJson<Array<{ addr_info: Array<{ family: string; local: string; prefixlen: number; scope: string }> }>>(['-6', 'addr', 'show']),
  ]);
  const out: Cidr6[] = [];
  for (const r of routes) {
    if (r.dst === 'default' || r.type === 'multicast' || r.dst.startsWith('fe80:') || r.dst.startsWith('ff00:')) continue;
    try {
      out.push(parseCidr6(r.dst.includes('/') ? r.dst : `${r.dst}/128`));
    } catch {
      /* not an address */
    }
  }
  for (const a of addrs) for (const i of a.addr_info ?? []) if (i.family === 'inet6' && i.scope === 'global') out.push(parseCidr6(`${i.local}/${i.prefixlen}`));
  return out;
}

/**
 * Brings the host's neighbour entry for an instance's IPv6 `address` on lxq's `bridge` up to date
 * once the instance can use that address (duplicate detection passed): where the host's entry is
 * INCOMPLETE or FAILED it becomes STALE with the NIC's `hwaddr`, so that what waits in it goes out
 * now, and the kernel confirms the entry by a unicast probe on first use.
 *
 * Why: dnsmasq's `ra-names` pings a client's SLAAC address as soon as its DHCPv4 lease is granted,
 * a second or two before the instance has that address. The host's resolution for that ping sends
 * its three solicitations (1 s apart) while the address is still absent or tentative, and a
 * tentative address answers none. A connection made when the address has just become usable joins
 * that doomed resolution and fails with EHOSTUNREACH when it ends (captured: the third solicitation
 * 60 ms before duplicate detection passed, the SYN queued on the INCOMPLETE entry, failed 830 ms
 * later; no SYN on the wire). Linux guests send no unsolicited advertisement (`ndisc_notify` 0),
 * which would have updated the entry. An entry that is already valid is left alone.
 */
export async function refreshNeighbour(bridge: string, address: string, hwaddr: string): Promise<void> {
  const entries = await ipJson<Array<{ dst: string; state?: string[] }>>(['-6', 'neigh', 'show', 'to', address, 'dev', bridge]);
  const unresolved = entries.some((e) => (e.state ?? []).some((s) => s === 'INCOMPLETE' || s === 'FAILED'));
  if (unresolved) await ip(['-6', 'neigh', 'replace', address, 'lladdr', hwaddr, 'dev', bridge, 'nud', 'stale']);
}

const linkTypes = new Map<string, Promise<boolean>>();

/**
 * Whether the kernel has a link type, probed once per process: a link of that type is asked for
 * without the lower link it needs, which the kernel refuses either way, as an unknown type or as
 * a missing link. Nothing is made (should the kernel ever take it, the link is deleted again).
 */
export function linkTypeSupported(kind: 'ipvlan' | 'vlan' | 'macvlan' | 'macvtap'): Promise<boolean> {
  let known = linkTypes.get(kind);
  if (!known) {
    const name = `lxqprobe${process.pid % 10_000_000}`.slice(0, 15);
    known = execFileP('ip', ['link', 'add', 'name', name, 'type', kind, ...(kind === 'vlan' ? ['id', '1'] : [])]).then(
      async () => (await deleteLink(name).catch(() => undefined), true),
      (e: { stderr?: string }) => !/unknown device type|not supported/i.test(e.stderr ?? ''),
    );
    linkTypes.set(kind, known);
  }
  return known;
}

/** The links the host's default routes (IPv4 and IPv6, every table) go out of. */
export async function defaultRouteLinks(): Promise<Set<string>> {
  const routes = await Promise.all(
    ['-4', '-6'].map((f) => ipJson<Array<{ dst: string; dev?: string; nexthops?: Array<{ dev?: string }> }>>([f, 'route', 'show', 'table', 'all', 'default'])),
  );
  const out = new Set<string>();
  for (const r of routes.flat()) for (const dev of [r.dev, ...(r.nexthops ?? []).map((n) => n.dev)]) if (dev) out.add(dev);
  return out;
}

export async function deleteLink(name: string): Promise<void> {
  if (await link(name)) await ip(['link', 'delete', 'dev', name]);
}

/**
 * A bridge with its addresses, up. Undone if any step fails. The host takes no router
 * advertisement or SLAAC address from it: an instance must not be able to route the host.
 * The IPv6 address skips duplicate detection (the subnet is the bridge's own) so that dnsmasq
 * can bind to it at once.
 */
export async function createBridge(name: string, cidr: string, mtu: number, cidr6?: string): Promise<void> {
  await ip(['link', 'add', 'name', name, 'type', 'bridge']);
  try {
    // accept_dad 0: the bridge's link-local address (the source of its router advertisements) is usable at once.
    for (const key of ['accept_ra', 'autoconf', 'accept_dad']) await fs.writeFile(`/proc/sys/net/ipv6/conf/${name}/${key}`, '0').catch(() => undefined);
    await ip(['link', 'set', 'dev', name, 'mtu', String(mtu)]);
    await ip(['addr', 'add', cidr, 'dev', name]);
    if (cidr6) await ip(['-6', 'addr', 'add', cidr6, 'dev', name, 'nodad']);
    await ip(['link', 'set', 'dev', name, 'up']);
  } catch (e) {
    await deleteLink(name).catch(() => undefined);
    throw e;
  }
}

export async function setMtu(name: string, mtu: number): Promise<void> {
  await ip(['link', 'set', 'dev', name, 'mtu', String(mtu)]);
}

/** A tap for a VM's NIC, on `bridge` (none: left on the host, as a p2p or routed NIC's), up (QEMU opens it by name). */
export async function createTap(name: string, bridge: string | undefined, mtu: number): Promise<void> {
  if (isLxqLinkName(name)) await deleteLink(name);
  await ip(['tuntap', 'add', 'dev', name, 'mode', 'tap']);
  try {
    await ip(['link', 'set', 'dev', name, ...(bridge ? ['master', bridge] : []), 'mtu', String(mtu), 'up']);
  } catch (e) {
    await deleteLink(name).catch(() => undefined);
    throw e;
  }
}

/** What a NIC is inside a container: its name, MAC address (none: the link's own) and MTU. */
export interface InsideLink {
  name: string;
  hwaddr?: string;
  mtu?: number;
}

/** Runs `ip` in the network namespace of `pid`. */
export async function ipIn(pid: number, args: string[]): Promise<void> {
  await execFileP('nsenter', [`--net=/proc/${pid}/ns/net`, 'ip', ...args]).catch((e) => {
    throw new OperationFailed(`ip ${args.join(' ')} in the container: ${(e as { stderr?: string }).stderr?.trim() || (e as Error).message}`, { call: 'ip' });
  });
}

/** Moves host link `dev` into the network namespace of `pid`, named, addressed and up there. */
export async function moveInto(dev: string, pid: number, inside: InsideLink): Promise<void> {
  await ip(['link', 'set', 'dev', dev, 'netns', String(pid)]);
  const set = ['link', 'set', 'dev', dev, 'name', inside.name];
  if (inside.hwaddr) set.push('address', inside.hwaddr);
  if (inside.mtu) set.push('mtu', String(inside.mtu));
  await ipIn(pid, [...set, 'up']);
}

/** The names lxq makes for host ends: only those are deleted when found left over. */
export const isLxqLinkName = (name: string) => /^lxq[0-9a-f]{8}p?$/.test(name);

/**
 * A veth pair for a running container: `host` on `bridge` (none: left on the host, as a p2p or
 * routed NIC's), the peer moved into the network namespace of `pid` and named, addressed and
 * brought up there.
 */
export async function plugVeth(host: string, bridge: string | undefined, pid: number, inside: InsideLink & { mtu: number }): Promise<void> {
  const peer = `${host}p`.slice(0, 15);
  if (isLxqLinkName(host)) await deleteLink(host);
  await ip(['link', 'add', 'name', host, 'mtu', String(inside.mtu), 'type', 'veth', 'peer', 'name', peer, 'mtu', String(inside.mtu)]);
  try {
    await ip(['link', 'set', 'dev', host, ...(bridge ? ['master', bridge] : []), 'up']);
    await moveInto(peer, pid, inside);
  } catch (e) {
    await deleteLink(host).catch(() => undefined);
    throw e;
  }
}

/** A macvlan link on `parent` (bridge mode: instances on one parent reach each other), moved into the namespace of `pid`. */
export async function plugMacvlan(parent: string, pid: number, temp: string, inside: InsideLink): Promise<void> {
  await ip(['link', 'add', 'link', parent, 'name', temp, 'type', 'macvlan', 'mode', 'bridge']);
  try {
    await moveInto(temp, pid, inside);
  } catch (e) {
    await deleteLink(temp).catch(() => undefined);
    throw e;
  }
}

/** Gives a physical link back to the host: out of the namespace of `pid`, its own name again, down. */
export async function returnLink(pid: number, inside: string, name: string): Promise<void> {
  await ipIn(pid, ['link', 'set', 'dev', inside, 'down']);
  // `netns 1` from inside nsenter's network namespace only: pid 1 is the host's init.
  await ipIn(pid, ['link', 'set', 'dev', inside, 'name', name, 'netns', '1']);
}

/** A macvtap on `parent` for a VM (bridge mode), up; returns its character device, /dev/tap<ifindex>. */
export async function createMacvtap(name: string, parent: string, hwaddr: string, mtu: number): Promise<string> {
  if (isLxqLinkName(name)) await deleteLink(name);
  await ip(['link', 'add', 'link', parent, 'name', name, 'address', hwaddr, 'mtu', String(mtu), 'type', 'macvtap', 'mode', 'bridge']);
  try {
    await ip(['link', 'set', 'dev', name, 'up']);
    const index = (await fs.readFile(`/sys/class/net/${name}/ifindex`, 'utf8')).trim();
    return `/dev/tap${index}`;
  } catch (e) {
    await deleteLink(name).catch(() => undefined);
    throw e;
  }
}

/** Sorts addresses numerically (for leases and listings). */
export function byAddress(a: string, b: string): number {
  return parseIpv4(a) - parseIpv4(b);
}
