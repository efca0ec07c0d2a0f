/**
 * `nic` devices, both instance types. The bridge is an lxq network's (lib/network/) or a host
 * bridge given as `parent`.
 *
 * - Containers: a veth pair; at start from liblxc's `lxc.net.N.*` (the host end named by lxq, so
 *   that it can be found), on a running container made with iproute2 and its peer moved into the
 *   container's network namespace.
 * - VMs: a tap on the bridge (QEMU opens it by name) and a `virtio-net-pci` device, at launch or
 *   through QMP `netdev_add` + `device_add`.
 *
 * The MAC address is made when the device is added (00:16:3e:…, LXD's prefix) and kept in the
 * record, so that a NIC keeps its address, and its DHCP lease, across starts.
 */
import { createHash, randomBytes } from 'node:crypto';

import type { LxcItem } from '../container/lxc-config';
import { deleteLink, plugVeth } from '../network/iproute';
import type { Networks } from '../network/networks';
import type { DeviceConfig, Devices } from './declarations';
import type { DeviceSource } from './validate';

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

/** liblxc's items for a container's NICs, `lxc.net.0` on, in device name order. */
export function lxcNicItems(instanceDir: string, devices: Devices, sources: Map<string, DeviceSource>): LxcItem[] {
  const items: LxcItem[] = [];
  let i = 0;
  for (const [name, d] of nics(devices)) {
    const src = sources.get(name);
    if (!src?.bridge) continue;
    const k = `lxc.net.${i++}`;
    items.push(
      [`${k}.type`, 'veth'],
      [`${k}.link`, src.bridge],
      [`${k}.name`, nicName(name, d)],
      [`${k}.hwaddr`, d.hwaddr!],
      [`${k}.mtu`, String(src.mtu)],
      [`${k}.veth.pair`, hostLink(instanceDir, name)],
      [`${k}.flags`, 'up'],
    );
  }
  return items;
}

export async function plugContainerNic(instanceDir: string, pid: number, name: string, d: DeviceConfig, src: DeviceSource): Promise<void> {
  if (!src.bridge) return;
  await plugVeth(hostLink(instanceDir, name), src.bridge, pid, { name: nicName(name, d), hwaddr: d.hwaddr!, mtu: src.mtu ?? 1500 });
}

/** Deleting the host end of a veth pair deletes its peer inside the container too. */
export async function unplugContainerNic(instanceDir: string, name: string): Promise<void> {
  await deleteLink(hostLink(instanceDir, name));
}

/** QMP `netdev_add` / `-netdev` arguments of a VM's NIC (its tap made first). */
export function netdevArgs(instanceDir: string, name: string): Record<string, unknown> {
  return { type: 'tap', id: `net-${name}`, ifname: hostLink(instanceDir, name), script: 'no', downscript: 'no' };
}

/** QMP `device_add` / `-device` arguments of a VM's NIC, on root port `bus`. */
export function nicDeviceArgs(name: string, d: DeviceConfig, src: DeviceSource, bus: string): Record<string, unknown> {
  return { driver: 'virtio-net-pci', id: `dev-${name}`, netdev: `net-${name}`, mac: d.hwaddr, host_mtu: src.mtu ?? 1500, bus };
}
