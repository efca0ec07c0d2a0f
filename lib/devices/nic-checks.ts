/**
 * NIC devices checked before anything is done with them: their shape per NIC type (which keys
 * the type takes, which it needs, each address and route), and what the host has for them (the
 * parent link, the kernel's link types, the host's default route). Nothing here changes the host:
 * the kernel's link types are probed by asking for a link without its lower link, which the
 * kernel refuses either way ("unknown type" or "needs a link").
 */
import type { InstanceType } from '../config/options';
import { InvalidArgument, NotFound, NotSupported } from '../core/errors';
import { parseBitRate } from '../core/units';
import { parseCidr, parseCidr6, parseIpv4, parseIpv6 } from '../network/addresses';
import { defaultRouteLinks, link, linkTypeSupported } from '../network/iproute';
import type { Networks } from '../network/networks';
import { egressMissing } from '../network/tc';
import { DEVICE_TYPES, type DeviceConfig, type DeviceKeySpec, type NicType } from './declarations';
import { addressList, nicType } from './nic';

/** What a NIC has on the host: its bridge (`bridged`), its lower or moved link (`parent`), its MTU. */
export interface NicSource {
  kind: 'dir' | 'missing';
  nictype?: NicType;
  bridge?: string;
  parent?: string;
  mtu?: number;
}

/** A link's name (IFNAMSIZ). */
export const IFNAME = /^[A-Za-z][A-Za-z0-9_.-]{0,14}$/;

/** Each key's values of a NIC, for its type; throws InvalidArgument naming the key. */
export function checkNicShape(instanceType: InstanceType, name: string, d: DeviceConfig): void {
  const where = `device "${name}"`;
  const type = nicType(d);
  if (d.nictype === undefined && d.network === undefined) throw new InvalidArgument(`${where}: give "network" (an lxq network) or a "nictype" (${DEVICE_TYPES.nic.keys.nictype.values.join(', ')})`);
  for (const key of Object.keys(d)) {
    const only = (DEVICE_TYPES.nic.keys as Record<string, DeviceKeySpec>)[key]?.nictypes;
    if (only && !only.includes(type)) throw new InvalidArgument(`${where}: "${key}" does not apply to a ${type} NIC (only to ${only.join(', ')})`);
  }
  const need = (key: string, why: string) => {
    if (d[key] === undefined) throw new InvalidArgument(`${where}: a ${type} NIC needs "${key}" (${why})`);
  };
  if (type === 'bridged' && (d.network === undefined) === (d.parent === undefined)) throw new InvalidArgument(`${where}: give "network" (an lxq network) or "nictype": "bridged" with "parent" (a host bridge), one of them`);
  if (type === 'bridged') checkBridgedAddresses(where, d);
  if (type === 'macvlan' || type === 'physical' || type === 'ipvlan') need('parent', 'the host link it is made on or is');
  if ((type === 'routed' || type === 'ipvlan') && d['ipv4.address'] === undefined && d['ipv6.address'] === undefined) {
    throw new InvalidArgument(`${where}: a ${type} NIC needs "ipv4.address" or "ipv6.address" (its static addresses: the host routes them to it)`);
  }
  if (type === 'physical' && instanceType === 'vm') throw new NotSupported(`${where}: a physical NIC in a VM needs PCI passthrough (VFIO) of the host's device, which lxq does not do; use it in a container`);
  const ifname = d.name ?? name;
  if (!IFNAME.test(ifname)) {
    throw new InvalidArgument(`${where}: ${d.name === undefined ? `the device name "${name}" cannot be an interface name; give "name"` : `bad value for "name": ${JSON.stringify(ifname)} is not an interface name (1-15 letters, digits, "_", "." and "-")`}`);
  }
  if (d.hwaddr !== undefined && (!/^([0-9a-f]{2}:){5}[0-9a-f]{2}$/i.test(d.hwaddr) || (parseInt(d.hwaddr.slice(0, 2), 16) & 1) === 1)) {
    throw new InvalidArgument(`${where}: bad value for "hwaddr": expected a unicast MAC address such as "00:16:3e:12:34:56", got ${JSON.stringify(d.hwaddr)}`);
  }
  for (const family of [4, 6] as const) {
    const n = addressList(where, `ipv${family}.address`, d[`ipv${family}.address`], family === 4 ? parseIpv4 : parseIpv6).length;
    if (type === 'bridged' && n > 1) throw new InvalidArgument(`${where}: "ipv${family}.address" of a bridged NIC is one address`);
  }
  addressList(where, 'ipv4.routes', d['ipv4.routes'], parseCidr);
  addressList(where, 'ipv6.routes', d['ipv6.routes'], parseCidr6);
  for (const k of ['network', 'parent', 'host_name'] as const) {
    if (d[k] !== undefined && !/^[A-Za-z][A-Za-z0-9_-]{0,14}$/.test(d[k])) throw new InvalidArgument(`${where}: bad value for "${k}": ${JSON.stringify(d[k])} is not a link name`);
  }
  if (d.mtu !== undefined && (Number(d.mtu) < 1280 || Number(d.mtu) > 65535)) throw new InvalidArgument(`${where}: bad value for "mtu": expected 1280 to 65535, got ${d.mtu}`);
  if (d['queue.tx.length'] !== undefined && (Number(d['queue.tx.length']) < 1 || Number(d['queue.tx.length']) > 1_000_000)) throw new InvalidArgument(`${where}: bad value for "queue.tx.length": expected 1 to 1000000, got ${d['queue.tx.length']}`);
  for (const key of ['limits.ingress', 'limits.egress', 'limits.max']) {
    if (d[key] === undefined) continue;
    try {
      parseBitRate(d[key]);
    } catch (e) {
      throw new InvalidArgument(`${where}: bad value for "${key}": ${(e as Error).message}`);
    }
  }
  if (d['limits.max'] !== undefined && (d['limits.ingress'] !== undefined || d['limits.egress'] !== undefined)) throw new InvalidArgument(`${where}: "limits.max" sets both directions: give it or "limits.ingress"/"limits.egress", not both`);
  if (d.vlan !== undefined && (Number(d.vlan) < 1 || Number(d.vlan) > 4094)) throw new InvalidArgument(`${where}: bad value for "vlan": expected a VLAN id from 1 to 4094, got ${d.vlan}`);
}

/**
 * A bridged NIC's static addresses, as LXD has them: `ipv4.address` is a static lease of an lxq
 * network, or (on a host bridge) the address IPv4 filtering lets through; `ipv6.address` is only
 * the address IPv6 filtering lets through (lxq's networks have no stateful DHCPv6). Filtering a
 * family needs its address.
 */
function checkBridgedAddresses(where: string, d: DeviceConfig): void {
  const on = (key: string) => d[key] === 'true';
  if (d['ipv4.address'] !== undefined && d.network === undefined && !on('security.ipv4_filtering')) {
    throw new InvalidArgument(`${where}: "ipv4.address" is a static lease of an lxq network: it needs "network" (or "security.ipv4_filtering", which lets only it through)`);
  }
  if (d['ipv6.address'] !== undefined && !on('security.ipv6_filtering')) throw new InvalidArgument(`${where}: "ipv6.address" of a bridged NIC is what "security.ipv6_filtering" lets through: give it with that key (lxq's networks have no stateful DHCPv6)`);
  for (const family of [4, 6]) {
    if (on(`security.ipv${family}_filtering`) && d[`ipv${family}.address`] === undefined) {
      throw new InvalidArgument(`${where}: "security.ipv${family}_filtering" needs a static "ipv${family}.address" (the one address the instance may send from)`);
    }
  }
}

/** What probing needs beyond the host's links: the host's networks, and whose devices these are. */
export interface NicProbeEnv {
  networks: Networks;
  instance: string;
}

/** The kernel feature a NIC needs, refused with NotSupported where the kernel has not got it. */
async function needKernel(where: string, d: DeviceConfig, instanceType: InstanceType): Promise<void> {
  const type = nicType(d);
  if (type === 'ipvlan') {
    if (!(await linkTypeSupported('ipvlan'))) throw new NotSupported(`${where}: this host's kernel has no ipvlan link type (CONFIG_IPVLAN): an ipvlan NIC cannot be made; use macvlan or routed`);
    throw new NotSupported(`${where}: ipvlan NICs are not implemented by lxq yet`);
  }
  if (d.vlan !== undefined) {
    if (!(await linkTypeSupported('vlan'))) throw new NotSupported(`${where}: this host's kernel has no 802.1Q vlan link type (CONFIG_VLAN_8021Q): "vlan" cannot be served`);
    throw new NotSupported(`${where}: "vlan" is not implemented by lxq yet`);
  }
  if (d['limits.egress'] !== undefined || d['limits.max'] !== undefined) {
    const missing = await egressMissing();
    if (missing) throw new NotSupported(`${where}: this host's kernel has no ${missing}: "${d['limits.max'] !== undefined ? 'limits.max' : 'limits.egress'}" (what the instance sends) cannot be limited; "limits.ingress" can`);
  }
  const kind = type === 'macvlan' ? (instanceType === 'vm' ? 'macvtap' : 'macvlan') : undefined;
  if (kind && !(await linkTypeSupported(kind))) throw new NotSupported(`${where}: this host's kernel has no ${kind} link type: a macvlan NIC cannot be made`);
}

/** A physical NIC's link: on the host, not carrying a default route of the host, not a bridge port. */
async function checkPhysical(where: string, parent: string): Promise<void> {
  const routes = await defaultRouteLinks();
  if (routes.has(parent)) throw new InvalidArgument(`${where}: "parent" ${parent} carries the host's default route: moving it into an instance would cut the host off`);
  const info = await link(parent);
  if (info?.master) throw new InvalidArgument(`${where}: "parent" ${parent} is a port of ${info.master}: take it off that bridge first`);
  if (parent === 'lo') throw new InvalidArgument(`${where}: "parent" lo is the host's loopback`);
}

/**
 * A NIC's host side: an lxq network's bridge (which must exist), a host bridge, or the parent link
 * of a macvlan, physical or routed NIC. With `check`, every condition is checked (refusing with
 * InvalidArgument or NotSupported) for an instance of type `checkFor`; without, what is there is read (a physical NIC's link is
 * inside the running container, and still its parent).
 */
export async function probeNic(name: string, d: DeviceConfig, env: NicProbeEnv, checkFor?: InstanceType): Promise<NicSource> {
  const where = `device "${name}"`;
  const nictype = nicType(d);
  const check = checkFor !== undefined;
  if (checkFor) await needKernel(where, d, checkFor);
  if (d.network !== undefined) {
    const network = await env.networks.get(d.network).catch((e) => {
      if (!check) return undefined;
      throw e instanceof NotFound ? new InvalidArgument(`${where}: "network" ${d.network} does not exist (create it with host.networks.create)`) : e;
    });
    if (!network) return { kind: 'missing' };
    if (check && d['ipv4.address'] !== undefined) await network.checkStaticAddress(d['ipv4.address'], { instance: env.instance, device: name });
    return { kind: 'dir', nictype, bridge: network.bridge, mtu: Number(d.mtu ?? network.mtu) };
  }
  if (check && d.host_name !== undefined && (await link(d.host_name))) throw new InvalidArgument(`${where}: "host_name" ${d.host_name} is already a link of this host`);
  if (d.parent === undefined) return { kind: 'dir', nictype, mtu: Number(d.mtu ?? 1500) };
  const parent = await link(d.parent);
  if (!parent && check) {
    throw new InvalidArgument(`${where}: "parent" ${d.parent} is not a link of this host${nictype === 'physical' ? ' (it does not exist, or is in another network namespace, e.g. another instance\'s)' : ''}`);
  }
  if (check && nictype === 'physical') await checkPhysical(where, d.parent);
  if (nictype === 'bridged') return parent ? { kind: 'dir', nictype, bridge: d.parent, mtu: Number(d.mtu ?? parent.mtu) } : { kind: 'missing' };
  return { kind: 'dir', nictype, parent: d.parent, mtu: Number(d.mtu ?? parent?.mtu ?? 1500) };
}
