/**
 * `nic` devices, both instance types. The bridge is an lxq network's (lib/network/) or a host
 * bridge given as `parent`.
 *
 * What both drivers share: MAC addresses, names, the host end's name, the networks. How each type
 * plugs a NIC is the driver's (lib/drivers/container/devices.ts: a veth pair; lib/drivers/vm/devices.ts:
 * a tap and a `virtio-net-pci` device).
 *
 * The MAC address is made when the device is added (00:16:3e:…, LXD's prefix) and kept in the
 * record, so that a NIC keeps its address, and its DHCP lease, across starts.
 */
import { createHash, randomBytes } from 'node:crypto';

import { InvalidArgument } from '../core/errors';
import { parseBitRate } from '../core/units';
import type { NicFilter } from '../network/nic-filter';
import type { RateLimits } from '../network/tc';
import type { Networks } from '../network/networks';
import type { DeviceConfig, Devices, NicType } from './declarations';

/** Devices with a made-up MAC address for each NIC that has none. */
export function withHwaddrs(devices: Devices): Devices {
  const out: Devices = {};
  for (const [name, d] of Object.entries(devices)) {
    const mac = `00:16:3e:${[...randomBytes(3)].map((b) => b.toString(16).padStart(2, '0')).join(':')}`;
    out[name] = d.type === 'nic' && d.hwaddr === undefined ? { ...d, hwaddr: mac } : d;
  }
  return out;
}

/** The interface name inside the instance. */
export function nicName(name: string, d: DeviceConfig): string {
  return d.name ?? name;
}

/**
 * The host end of a NIC (veth or tap): `lxq` and a digest of the instance's directory and the
 * device, 11 bytes, stable across starts and processes, unique on the host.
 */
export function hostLink(instanceDir: string, device: string): string {
  return `lxq${createHash('sha256').update(`${instanceDir}\0${device}`).digest('hex').slice(0, 8)}`;
}

export function nics(devices: Devices): Array<[string, DeviceConfig]> {
  return Object.entries(devices)
    .filter(([, d]) => d.type === 'nic')
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
}

/** Brings up the networks the NICs are on (after a host reboot their bridge and dnsmasq are gone). */
export async function ensureNetworks(devices: Devices, networks: Networks): Promise<void> {
  const names = new Set(nics(devices).map(([, d]) => d.network).filter((n): n is string => n !== undefined));
  for (const n of names) await (await networks.get(n)).ensureUp();
}

/** Has dnsmasq learn (or forget) the NICs' MAC addresses, names and static leases. */
export async function syncNetworkHosts(devices: Devices, networks: Networks): Promise<void> {
  const names = new Set(nics(devices).map(([, d]) => d.network).filter((n): n is string => n !== undefined));
  for (const n of names) await (await networks.get(n).catch(() => undefined))?.writeHosts();
}

/** A NIC's type (`bridged` when it names an lxq network and no type). */
export function nicType(d: DeviceConfig): NicType {
  return (d.nictype ?? 'bridged') as NicType;
}

/** The host end of a NIC whose host end lxq names: `host_name`, else hostLink's. */
export function hostEnd(instanceDir: string, device: string, d: DeviceConfig): string {
  return d.host_name ?? hostLink(instanceDir, device);
}

/** A comma-separated list, each item checked by `parse` (an address or a subnet). */
export function addressList(where: string, key: string, text: string | undefined, parse: (s: string) => unknown): string[] {
  if (text === undefined) return [];
  const items = text.split(',').map((s) => s.trim());
  for (const item of items) {
    try {
      parse(item);
    } catch (e) {
      throw new InvalidArgument(`${where}: bad value for "${key}": ${JSON.stringify(item)}: ${(e as Error).message}`);
    }
  }
  return items;
}

/** The host end's addresses a routed NIC's default routes go through (LXD's `ipv4.host_address`, `ipv6.host_address`). */
export const ROUTED_GATEWAY4 = '169.254.0.1';
export const ROUTED_GATEWAY6 = 'fe80::1';

/** A routed NIC's static addresses, both families. */
export function staticAddresses(name: string, d: DeviceConfig): string[] {
  return [...addressList(name, 'ipv4.address', d['ipv4.address'], String), ...addressList(name, 'ipv6.address', d['ipv6.address'], String)];
}

/** `ip` arguments that add (`replace`) or remove (`del`) a routed NIC's proxy ARP/NDP entries on its parent (none without one). */
export function proxyNeighbourArgs(verb: 'replace' | 'del', name: string, d: DeviceConfig): string[][] {
  if (nicType(d) !== 'routed' || d.parent === undefined) return [];
  return staticAddresses(name, d).map((a) => [a.includes(':') ? '-6' : '-4', 'neigh', verb, 'proxy', a, 'dev', d.parent!]);
}

/** `ip` arguments that give a routed NIC's host end the gateway addresses of its default routes. */
export function gatewayAddressArgs(hostEnd: string, d: DeviceConfig): string[][] {
  if (nicType(d) !== 'routed') return [];
  const out: string[][] = [];
  if (d['ipv4.address'] !== undefined) out.push(['-4', 'addr', 'replace', `${ROUTED_GATEWAY4}/32`, 'dev', hostEnd]);
  if (d['ipv6.address'] !== undefined) out.push(['-6', 'addr', 'replace', `${ROUTED_GATEWAY6}/64`, 'dev', hostEnd, 'nodad']);
  return out;
}

/** A NIC's rate limits in bit/s (`limits.max` for both directions), or undefined when it has none. */
export function rateLimits(d: DeviceConfig): RateLimits | undefined {
  const rate = (key: string) => (d[key] === undefined ? undefined : parseBitRate(d[key]));
  const limits = { ingress: rate('limits.ingress') ?? rate('limits.max'), egress: rate('limits.egress') ?? rate('limits.max') };
  return limits.ingress === undefined && limits.egress === undefined ? undefined : limits;
}

/** Whether a NIC has any of the security filters (bridged NICs only). */
export function filtered(d: DeviceConfig): boolean {
  return ['security.mac_filtering', 'security.ipv4_filtering', 'security.ipv6_filtering'].some((k) => d[k] === 'true');
}

/**
 * A bridged NIC's filters on host end `dev`, or undefined without any: its MAC always, its static
 * `ipv4.address`/`ipv6.address` for the families filtered (the checks made sure they are given).
 */
export function nicFilter(dev: string, name: string, d: DeviceConfig): NicFilter | undefined {
  if (nicType(d) !== 'bridged' || !filtered(d)) return undefined;
  const only = (family: 4 | 6) => (d[`security.ipv${family}_filtering`] === 'true' ? addressList(name, `ipv${family}.address`, d[`ipv${family}.address`], String) : undefined);
  return { hostEnd: dev, hwaddr: d.hwaddr!, ipv4: only(4), ipv6: only(6) };
}
