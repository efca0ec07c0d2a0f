/**
 * A VM's NICs on the host, by NIC type; the guest sees a `virtio-net-pci` device for each.
 *
 * - `bridged`: a tap on the bridge, opened by QEMU by name.
 * - `p2p`: a tap on no bridge, with `ipv4.routes`/`ipv6.routes` routed to it.
 * - `routed`: a tap with a host route to each of the instance's static addresses and the
 *   gateway addresses 169.254.0.1 / fe80::1 (the guest configures its addresses and default
 *   route itself, as with LXD); with a `parent`, proxy ARP/NDP entries on it for the addresses.
 * - `macvlan`: a macvtap on `parent` (bridge mode). QEMU cannot open a macvtap by name: lxq opens
 *   its character device (/dev/tap<ifindex>) and QEMU inherits it (`fd=`). So a macvlan NIC is
 *   made at launch only: handing a running QEMU a descriptor needs SCM_RIGHTS on its monitor.
 */
import { promises as fs } from 'node:fs';

import { NotSupported } from '../../core/errors';
import type { DeviceConfig } from '../../devices/declarations';
import { addressList, gatewayAddressArgs, hostEnd, hostLink, nicFilter, nicType, proxyNeighbourArgs, rateLimits, staticAddresses } from '../../devices/nic';
import { releaseHostEnd, setUpHostEnd } from '../../network/host-ends';
import type { DeviceSource } from '../../devices/validate';
import { createMacvtap, createTap, deleteLink, ip } from '../../network/iproute';
import type { QmpCommands } from '../../qmp';

/** A NIC's tap (or macvtap) name on the host. */
export function vmHostEnd(vmDir: string, name: string, d: DeviceConfig): string {
  return nicType(d) === 'macvlan' ? hostLink(vmDir, name) : hostEnd(vmDir, name, d);
}

/** What a tap needs beyond being made: routes, its queue, filters and rate limits, a routed NIC's gateway addresses and proxy entries. */
async function tuneTap(tap: string, name: string, d: DeviceConfig): Promise<void> {
  for (const r of addressList(name, 'ipv4.routes', d['ipv4.routes'], String)) await ip(['-4', 'route', 'replace', r, 'dev', tap]);
  for (const r of addressList(name, 'ipv6.routes', d['ipv6.routes'], String)) await ip(['-6', 'route', 'replace', r, 'dev', tap]);
  if (d['queue.tx.length'] !== undefined) await ip(['link', 'set', 'dev', tap, 'txqueuelen', d['queue.tx.length']]);
  await setUpHostEnd(tap, { filter: nicFilter(tap, name, d), limits: rateLimits(d) });
  if (nicType(d) !== 'routed') return;
  for (const args of gatewayAddressArgs(tap, d)) await ip(args);
  for (const a of staticAddresses(name, d)) await ip([a.includes(':') ? '-6' : '-4', 'route', 'replace', a, 'dev', tap]);
  for (const args of proxyNeighbourArgs('replace', name, d)) await ip(args);
}

/**
 * Makes a NIC's host side and returns its `-netdev`/`netdev_add` arguments. A macvlan NIC's
 * character device is opened and added to `fds` (QEMU inherits it as fd 3 + its index there);
 * without `fds` (a running VM) a macvlan NIC is refused.
 */
export async function makeVmNic(vmDir: string, name: string, d: DeviceConfig, src: DeviceSource, fds?: fs.FileHandle[]): Promise<QmpCommands['netdev_add']['args']> {
  const tap = vmHostEnd(vmDir, name, d);
  const id = `net-${name}`;
  if (nicType(d) === 'macvlan') {
    if (!fds) throw new NotSupported(`device "${name}": a macvlan NIC is given to a VM's QEMU when it starts; add it while the VM is stopped`);
    const dev = await createMacvtap(tap, src.parent!, d.hwaddr!, src.mtu ?? 1500);
    const handle = await fs.open(dev, 'r+').catch(async (e) => {
      await deleteLink(tap).catch(() => undefined);
      throw e;
    });
    fds.push(handle);
    return { type: 'tap', id, fd: String(2 + fds.length) };
  }
  await createTap(tap, src.bridge, src.mtu ?? 1500);
  try {
    await tuneTap(tap, name, d);
  } catch (e) {
    await releaseVmNic(vmDir, name, d);
    throw e;
  }
  return { type: 'tap', id, ifname: tap, script: 'no', downscript: 'no' };
}

/** Removes a NIC's host side: its tap (with its routes and addresses), its filters, a routed NIC's proxy entries. */
export async function releaseVmNic(vmDir: string, name: string, d: DeviceConfig): Promise<void> {
  await deleteLink(vmHostEnd(vmDir, name, d)).catch(() => undefined);
  if (nicType(d) !== 'macvlan') await releaseHostEnd(vmHostEnd(vmDir, name, d));
  for (const args of proxyNeighbourArgs('del', name, d)) await ip(args).catch(() => undefined);
}
