/**
 * A container's NICs, by NIC type. At start liblxc makes them from the config (`lxc.net.N`); on
 * a running container lxq makes them with iproute2 and moves them into its network namespace.
 *
 * - `bridged`: a veth pair, the host end on the bridge.
 * - `p2p`: a veth pair, the host end on the host (on no bridge), with `ipv4.routes`/`ipv6.routes`
 *   routed to it.
 * - `routed`: a veth pair: the instance's static addresses inside, a host route to each through
 *   the host end, and a default route inside via 169.254.0.1 / fe80::1, which the host end holds
 *   (LXD's `ipv4.host_address`, `ipv6.host_address`); with a `parent`, proxy ARP/NDP entries on
 *   it for the addresses, so that its network reaches them (where the host forwards), as LXD's;
 *   they outlive the veth, and are removed when lxq stops or deletes the container (one that
 *   stopped itself keeps them until then: liblxc's post-stop hook did not run under lxq's runner).
 *   Not liblxc's router mode: it refuses to start unless the host forwards, which host ↔ instance
 *   traffic does not need.
 * - `macvlan`: a macvlan link on `parent` in bridge mode (instances on one parent reach each
 *   other; the host, through that parent, does not).
 * - `physical`: the host link `parent` itself, moved in; liblxc gives it back (its own name
 *   again) when the container stops, and lxq when the device is removed from a running one.
 */
import type { LxcItem } from './lxc-config';
import { NotSupported } from '../../core/errors';
import type { DeviceConfig, Devices } from '../../devices/declarations';
import { addressList, gatewayAddressArgs, hostEnd, hostLink, nicFilter, nicName, nics, nicType, proxyNeighbourArgs, rateLimits, ROUTED_GATEWAY4, ROUTED_GATEWAY6 } from '../../devices/nic';
import { releaseHostEnd, setUpHostEnd } from '../../network/host-ends';
import type { DeviceSource } from '../../devices/validate';
import { deleteLink, ip, ipIn, plugMacvlan, plugVeth, moveInto, returnLink } from '../../network/iproute';

/** Whether a NIC's host side is there (a network's bridge, a parent) so that it can be made. */
function present(d: DeviceConfig, src: DeviceSource | undefined): boolean {
  return src !== undefined && src.kind !== 'missing' && (nicType(d) !== 'bridged' || src.bridge !== undefined);
}

/** The liblxc items of one NIC, `k` its prefix (`lxc.net.N`). */
function nicItems(k: string, instanceDir: string, name: string, d: DeviceConfig, src: DeviceSource): LxcItem[] {
  const type = nicType(d);
  const items: LxcItem[] = [];
  const where = `device "${name}"`;
  if (type === 'macvlan') items.push([`${k}.type`, 'macvlan'], [`${k}.link`, src.parent!], [`${k}.macvlan.mode`, 'bridge']);
  else if (type === 'physical') items.push([`${k}.type`, 'phys'], [`${k}.link`, src.parent!]);
  else {
    items.push([`${k}.type`, 'veth']);
    if (type === 'bridged') items.push([`${k}.link`, src.bridge!]);
    items.push([`${k}.veth.pair`, hostEnd(instanceDir, name, d)]);
  }
  items.push([`${k}.name`, nicName(name, d)]);
  if (d.hwaddr !== undefined) items.push([`${k}.hwaddr`, d.hwaddr]);
  if (type !== 'physical' || d.mtu !== undefined) items.push([`${k}.mtu`, String(src.mtu ?? 1500)]);
  if (type === 'routed') {
    const v4 = addressList(where, 'ipv4.address', d['ipv4.address'], String);
    const v6 = addressList(where, 'ipv6.address', d['ipv6.address'], String);
    for (const a of v4) items.push([`${k}.ipv4.address`, `${a}/32`], [`${k}.veth.ipv4.route`, `${a}/32`]);
    for (const a of v6) items.push([`${k}.ipv6.address`, `${a}/128`], [`${k}.veth.ipv6.route`, `${a}/128`]);
    if (v4.length && d['ipv4.gateway'] !== 'none') items.push([`${k}.ipv4.gateway`, ROUTED_GATEWAY4]);
    if (v6.length && d['ipv6.gateway'] !== 'none') items.push([`${k}.ipv6.gateway`, ROUTED_GATEWAY6]);
  }
  for (const r of addressList(where, 'ipv4.routes', d['ipv4.routes'], String)) items.push([`${k}.veth.ipv4.route`, r]);
  for (const r of addressList(where, 'ipv6.routes', d['ipv6.routes'], String)) items.push([`${k}.veth.ipv6.route`, r]);
  items.push([`${k}.flags`, 'up']);
  return items;
}

/** liblxc's items for a container's NICs, `lxc.net.0` on, in device name order. */
export function lxcNicItems(instanceDir: string, devices: Devices, sources: Map<string, DeviceSource>): LxcItem[] {
  const items: LxcItem[] = [];
  let i = 0;
  for (const [name, d] of nics(devices)) {
    const src = sources.get(name);
    if (present(d, src)) items.push(...nicItems(`lxc.net.${i++}`, instanceDir, name, d, src!));
  }
  return items;
}

/**
 * What liblxc has no key for, on the host end of a running container's NICs: `queue.tx.length`,
 * rate limits, and a routed NIC's gateway addresses (the default route inside goes through them).
 */
export async function tuneHostEnds(instanceDir: string, devices: Devices): Promise<void> {
  for (const [name, d] of nics(devices)) {
    const host = hostEnd(instanceDir, name, d);
    if (d['queue.tx.length'] !== undefined && hasHostEnd(d)) await ip(['link', 'set', 'dev', host, 'txqueuelen', d['queue.tx.length']]);
    if (hasHostEnd(d)) await setUpHostEnd(host, { filter: nicFilter(host, name, d), limits: rateLimits(d) });
    for (const args of [...gatewayAddressArgs(host, d), ...proxyNeighbourArgs('replace', name, d)]) await ip(args);
  }
}

/** Whether lxq makes the NIC's host end (a veth's), where its filters and limits go. */
const hasHostEnd = (d: DeviceConfig) => nicType(d) !== 'macvlan' && nicType(d) !== 'physical';

/** Removes what tuneHostEnds made that outlives the container's NICs: a routed NIC's proxy entries on its parent, filters. */
export async function releaseHostEnds(instanceDir: string, devices: Devices): Promise<void> {
  for (const [name, d] of nics(devices)) {
    for (const args of proxyNeighbourArgs('del', name, d)) await ip(args).catch(() => undefined);
    if (hasHostEnd(d)) await releaseHostEnd(hostEnd(instanceDir, name, d));
  }
}

/** Adds a NIC to the running container whose init is `pid`. */
export async function plugContainerNic(instanceDir: string, pid: number, name: string, d: DeviceConfig, src: DeviceSource): Promise<void> {
  if (!present(d, src)) return;
  const type = nicType(d);
  const inside = { name: nicName(name, d), hwaddr: d.hwaddr, mtu: src.mtu ?? 1500 };
  if (type === 'routed') throw new NotSupported(`device "${name}": a routed NIC is made when the container starts; add it while the container is stopped`);
  if (type === 'macvlan') return plugMacvlan(src.parent!, pid, hostLink(instanceDir, name), inside);
  if (type === 'physical') return moveInto(src.parent!, pid, { name: inside.name, hwaddr: d.hwaddr, mtu: d.mtu === undefined ? undefined : Number(d.mtu) });
  const host = hostEnd(instanceDir, name, d);
  await plugVeth(host, src.bridge, pid, inside);
  try {
    for (const r of addressList(`device "${name}"`, 'ipv4.routes', d['ipv4.routes'], String)) await ip(['-4', 'route', 'add', r, 'dev', host]);
    for (const r of addressList(`device "${name}"`, 'ipv6.routes', d['ipv6.routes'], String)) await ip(['-6', 'route', 'add', r, 'dev', host]);
    if (d['queue.tx.length'] !== undefined) await ip(['link', 'set', 'dev', host, 'txqueuelen', d['queue.tx.length']]);
    await setUpHostEnd(host, { filter: nicFilter(host, name, d), limits: rateLimits(d) });
  } catch (e) {
    await deleteLink(host).catch(() => undefined);
    await releaseHostEnd(host).catch(() => undefined);
    throw e;
  }
}

/**
 * Removes a NIC from the running container whose init is `pid`: deleting a veth's host end
 * deletes its peer inside (and the routes through it); a macvlan is deleted inside; a physical
 * link goes back to the host.
 */
export async function unplugContainerNic(instanceDir: string, pid: number, name: string, d: DeviceConfig, src: DeviceSource): Promise<void> {
  const type = nicType(d);
  if (type === 'macvlan') return ipIn(pid, ['link', 'delete', 'dev', nicName(name, d)]);
  if (type === 'physical') return returnLink(pid, nicName(name, d), src.parent ?? d.parent!);
  await deleteLink(hostEnd(instanceDir, name, d));
  await releaseHostEnd(hostEnd(instanceDir, name, d));
}
