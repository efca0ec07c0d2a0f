/** IPv4 addresses and subnets, as numbers: parsing, overlap, and picking a free private /24. */
import { randomInt } from 'node:crypto';

export function parseIpv4(text: string): number {
  const parts = text.trim().split('.');
  if (parts.length !== 4 || parts.some((p) => !/^\d{1,3}$/.test(p) || Number(p) > 255)) throw new Error(`not an IPv4 address: ${JSON.stringify(text)}`);
  return parts.reduce((n, p) => n * 256 + Number(p), 0);
}

export function formatIpv4(n: number): string {
  return [24, 16, 8, 0].map((s) => Math.floor(n / 2 ** s) % 256).join('.');
}

export interface Cidr {
  /** The host address given ("10.0.0.1" of "10.0.0.1/24"). */
  address: number;
  prefix: number;
  network: number;
  broadcast: number;
}

export function parseCidr(text: string): Cidr {
  const m = /^([\d.]+)\/(\d{1,2})$/.exec(text.trim());
  if (!m || Number(m[2]) > 32) throw new Error(`expected an IPv4 address with a prefix such as "10.20.30.1/24", got ${JSON.stringify(text)}`);
  const address = parseIpv4(m[1]);
  const prefix = Number(m[2]);
  const size = 2 ** (32 - prefix);
  const network = Math.floor(address / size) * size;
  return { address, prefix, network, broadcast: network + size - 1 };
}

export function formatCidr(c: Cidr): string {
  return `${formatIpv4(c.address)}/${c.prefix}`;
}

export function netmask(prefix: number): string {
  return formatIpv4(2 ** 32 - 2 ** (32 - prefix));
}

export function overlaps(a: { network: number; broadcast: number }, b: { network: number; broadcast: number }): boolean {
  return a.network <= b.broadcast && b.network <= a.broadcast;
}

export function contains(c: Cidr, address: number): boolean {
  return address > c.network && address < c.broadcast;
}

/**
 * A free /24 in 10.0.0.0/8 (the bridge at .1) that overlaps none of `taken`: random candidates,
 * so that two hosts (or two test runs) rarely pick the same one.
 */
export function pickFreeSubnet(taken: Array<{ network: number; broadcast: number }>): Cidr {
  for (let i = 0; i < 1000; i++) {
    const network = parseIpv4(`10.${randomInt(1, 255)}.${randomInt(0, 256)}.0`);
    const c = { address: network + 1, prefix: 24, network, broadcast: network + 255 };
    if (!taken.some((t) => overlaps(t, c))) return c;
  }
  throw new Error('no free /24 found in 10.0.0.0/8');
}

/* IPv6, as bigints. */

export function parseIpv6(text: string): bigint {
  const t = text.trim().toLowerCase();
  const halves = t.split('::');
  const groups = (s: string) => (s === '' ? [] : s.split(':'));
  const bad = () => new Error(`not an IPv6 address: ${JSON.stringify(text)}`);
  if (halves.length > 2) throw bad();
  const head = groups(halves[0]);
  const tail = halves.length === 2 ? groups(halves[1]) : [];
  const fill = halves.length === 2 ? 8 - head.length - tail.length : 0;
  if ((halves.length === 2 && fill < 1) || (halves.length === 1 && head.length !== 8)) throw bad();
  const all = [...head, ...Array<string>(fill).fill('0'), ...tail];
  if (all.some((g) => !/^[0-9a-f]{1,4}$/.test(g))) throw bad();
  return all.reduce((n, g) => (n << 16n) | BigInt(parseInt(g, 16)), 0n);
}

/** The canonical text form (RFC 5952: lower case, the longest run of zero groups as "::"). */
export function formatIpv6(n: bigint): string {
  const g = Array.from({ length: 8 }, (_, i) => Number((n >> BigInt(112 - 16 * i)) & 0xffffn));
  let best = { at: -1, len: 1 };
  for (let i = 0; i < 8; ) {
    let j = i;
    while (j < 8 && g[j] === 0) j++;
    if (j - i > best.len) best = { at: i, len: j - i };
    i = j === i ? i + 1 : j;
  }
  const hex = g.map((x) => x.toString(16));
  if (best.at < 0) return hex.join(':');
  return `${hex.slice(0, best.at).join(':')}::${hex.slice(best.at + best.len).join(':')}`;
}

export interface Cidr6 {
  address: bigint;
  prefix: number;
  network: bigint;
  /** The subnet's last address. */
  last: bigint;
}

export function parseCidr6(text: string): Cidr6 {
  const m = /^([0-9a-fA-F:]+)\/(\d{1,3})$/.exec(text.trim());
  if (!m || Number(m[2]) > 128) throw new Error(`expected an IPv6 address with a prefix such as "fd42:1:2:3::1/64", got ${JSON.stringify(text)}`);
  const address = parseIpv6(m[1]);
  const prefix = Number(m[2]);
  const hostBits = BigInt(128 - prefix);
  const network = (address >> hostBits) << hostBits;
  return { address, prefix, network, last: network + (1n << hostBits) - 1n };
}

export function formatCidr6(c: Cidr6): string {
  return `${formatIpv6(c.address)}/${c.prefix}`;
}

export function overlaps6(a: Cidr6, b: Cidr6): boolean {
  return a.network <= b.last && b.network <= a.last;
}

/**
 * A free /64 of the unique local range (RFC 4193: fd00::/8, a random 40-bit global id and subnet
 * id), the bridge at ::1, that overlaps none of `taken`.
 */
export function pickFreeUla(taken: Cidr6[]): Cidr6 {
  for (let i = 0; i < 1000; i++) {
    const network = (0xfdn << 120n) | (BigInt(randomInt(0, 2 ** 40)) << 80n) | (BigInt(randomInt(0, 2 ** 16)) << 64n);
    const c = { address: network + 1n, prefix: 64, network, last: network + (1n << 64n) - 1n };
    if (!taken.some((t) => overlaps6(t, c))) return c;
  }
  throw new Error('no free /64 found in fd00::/8');
}

/** The address SLAAC gives a NIC with `mac` in a /64 (modified EUI-64, RFC 4291 appendix A). */
export function slaacAddress(subnet: Cidr6, mac: string): string {
  const b = mac.split(':').map((x) => parseInt(x, 16));
  const id = [b[0] ^ 0x02, b[1], b[2], 0xff, 0xfe, b[3], b[4], b[5]].reduce((n, x) => (n << 8n) | BigInt(x), 0n);
  return formatIpv6(subnet.network | id);
}

/**
 * The IPv6 addresses not usable yet in the text of a /proc/net/if_inet6: tentative (duplicate
 * detection still running, ~1 s after SLAAC) or duplicated. Lines: address (32 hex digits),
 * ifindex, prefix, scope, flags (hex), name.
 */
export function unusableIpv6(ifInet6: string): Set<string> {
  const TENTATIVE = 0x40;
  const DADFAILED = 0x08;
  const out = new Set<string>();
  for (const line of ifInet6.split('\n')) {
    const [hex, , , , flags] = line.trim().split(/\s+/);
    if (!/^[0-9a-f]{32}$/.test(hex ?? '')) continue;
    if (parseInt(flags, 16) & (TENTATIVE | DADFAILED)) out.add(formatIpv6(BigInt(`0x${hex}`)));
  }
  return out;
}
