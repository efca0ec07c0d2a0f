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
