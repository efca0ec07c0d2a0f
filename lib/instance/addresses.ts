/**
 * Where a local instance's address is found for waitForAddress: what the instance itself reports
 * (its network namespace, a VM's guest agent), else the DHCP lease an lxq network gave it in this
 * run of the instance.
 */
import { processStartedAt } from '../core/proc';
import type { Devices } from '../devices/declarations';
import { unusableIpv6 } from '../network/addresses';
import { refreshNeighbour } from '../network/iproute';
import type { Networks } from '../network/networks';
import { type AddressFamily, ofFamily } from './common';
import type { InstanceState, NetworkInterface } from './state';

/** What the search needs of the instance. */
export interface AddressSource {
  readonly devices: Readonly<Devices>;
  readonly networks: Networks;
  /**
   * True where state() always sees the instance's addresses (a container's network namespace):
   * then a DHCP lease, which the client may not have applied yet, never answers.
   */
  readonly ownAddressesComplete: boolean;
  state(): Promise<InstanceState>;
  /** The instance's /proc/net/if_inet6 (its kernel's IPv6 address flags). */
  readIfInet6(): Promise<string>;
}

/** A search for an address of `family` on the instance, one look per call (see CommonInstance.addressSearch). */
export function localAddressSearch(source: AddressSource, family: AddressFamily): () => Promise<string | undefined> {
  const isFamily = (a: string) => ofFamily(a, family);
  let startedAt: Date | null | undefined;
  return async () => {
    const s = await source.state();
    // An IPv6 address counts once duplicate detection has passed: before, nothing can use it.
    const unusable = family === 'inet6' && s.network.addresses.some(isFamily) ? unusableIpv6(await source.readIfInet6().catch(() => '')) : new Set<string>();
    const own = s.network.addresses.find((a) => isFamily(a) && !unusable.has(a));
    if (own) {
      if (family === 'inet6') await hostNeighbourReady(source, s.network.interfaces, own);
      return own;
    }
    if (source.ownAddressesComplete) return undefined;
    // Where the instance's own addresses may not be seen yet (a VM's agent not up), a lease
    // counts once granted in this run of the instance (its init or QEMU started before it),
    // not one kept from an earlier boot.
    startedAt ??= s.pid === null ? undefined : await processStartedAt(s.pid);
    if (!startedAt) return undefined;
    return leasedAddress(source.devices, source.networks, family, startedAt);
  };
}

/** An address of `family` an lxq network's DHCP gave one of the instance's NICs since `startedAt` (its init or QEMU started: this run's). */
export async function leasedAddress(devices: Readonly<Devices>, networks: Networks, family: AddressFamily, startedAt: Date): Promise<string | undefined> {
  const nics = Object.values(devices).flatMap((d) => (d.type === 'nic' && d.network !== undefined ? [d] : []));
  const macs = new Set(nics.map((d) => d.hwaddr.toLowerCase()));
  const since = Math.floor(startedAt.getTime() / 1000) * 1000;
  for (const n of new Set(nics.map((d) => d.network!))) {
    const leases = (await (await networks.get(n).catch(() => undefined))?.leases()) ?? [];
    const lease = leases.find((l) => macs.has(l.hwaddr.toLowerCase()) && ofFamily(l.address, family) && l.grantedAt.getTime() >= since);
    if (lease) return lease.address;
  }
  return undefined;
}

/**
 * The host's neighbour entry for a just-usable IPv6 address of a NIC on an lxq network, brought
 * up to date (see refreshNeighbour: dnsmasq's probe of the address, begun before the instance
 * had it, would fail the caller's first connection with EHOSTUNREACH).
 */
async function hostNeighbourReady(source: AddressSource, interfaces: NetworkInterface[], address: string): Promise<void> {
  const hwaddr = interfaces.find((i) => i.addresses.some((a) => a.address === address))?.hwaddr.toLowerCase();
  const nic = Object.values(source.devices).find((d) => d.type === 'nic' && d.network !== undefined && d.hwaddr.toLowerCase() === hwaddr);
  if (!hwaddr || nic?.type !== 'nic' || nic.network === undefined) return;
  const network = await source.networks.get(nic.network).catch(() => undefined);
  // Best effort: the network may be going away; a failure here is no reason to fail the wait.
  if (network) await refreshNeighbour(network.bridge, address, hwaddr).catch(() => undefined);
}
