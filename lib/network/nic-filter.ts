/**
 * A bridged NIC's security filters (`security.mac_filtering`, `security.ipv4_filtering`,
 * `security.ipv6_filtering`), as LXD's nftables driver writes them (its `in.`/`fwd.` chains, here `nic_in`/`nic_fwd`, of
 * the bridge family, hooks input and forward at priority -200), keyed on the host end (the veth's
 * or tap's name). Each filtered NIC has a table of its own (`bridge lxq_nic_<host end>`), so that
 * adding, replacing and removing it is one transaction that touches no other NIC's rules and no
 * table but lxq's.
 *
 * What the instance sends with another source MAC is dropped, and ARP whose sender MAC is
 * another, and neighbour advertisements for another MAC. With IPv4 filtering, only DHCP discovery
 * (from 0.0.0.0) and IPv4/ARP from its own address pass; with IPv6 filtering, only DHCPv6 and
 * router solicitations from its link-local address, and IPv6/NDP from its own address (router
 * advertisements from it are dropped). With either, frames that are none of ARP, IPv4, IPv6 are
 * dropped.
 */
import { InvalidArgument } from '../core/errors';
import { parseIpv4, parseIpv6 } from './addresses';
import { nft } from './nftables';

/** What a NIC may send from: undefined for a family means any address of it. */
export interface NicFilter {
  /** The host end: the veth's or tap's name on the host. */
  hostEnd: string;
  hwaddr: string;
  ipv4?: string[];
  ipv6?: string[];
}

export function filterTable(hostEnd: string): string {
  return `lxq_nic_${hostEnd}`;
}

function checked(f: NicFilter): NicFilter {
  const where = `the NIC filter of ${JSON.stringify(f.hostEnd)}`;
  if (!/^[A-Za-z0-9_.-]{1,15}$/.test(f.hostEnd)) throw new InvalidArgument(`${where}: not an interface name`);
  if (!/^([0-9a-f]{2}:){5}[0-9a-f]{2}$/i.test(f.hwaddr)) throw new InvalidArgument(`${where}: ${JSON.stringify(f.hwaddr)} is not a MAC address`);
  // Each address is written back from its parsed form: nothing of the input reaches the script as is.
  const v4 = f.ipv4?.map((a) => a.trim()).map((a) => (parseIpv4(a), a));
  const v6 = f.ipv6?.map((a) => a.trim()).map((a) => (parseIpv6(a), a));
  return { hostEnd: f.hostEnd, hwaddr: f.hwaddr.toLowerCase(), ipv4: v4, ipv6: v6 };
}

const hex128 = (a: string) => `0x${parseIpv6(a).toString(16).padStart(32, '0')}`;

/** The rules of one chain, `input` (to the host) or `forward` (to other ports of the bridge). */
function chainRules(f: NicFilter, hook: 'input' | 'forward'): string[] {
  const i = `iifname "${f.hostEnd}"`;
  const rules = [
    `${i} ether saddr != ${f.hwaddr} drop`,
    `${i} ether type arp arp saddr ether != ${f.hwaddr} drop`,
    // The target link-layer address option of a neighbour advertisement: nftables has no name for it.
    `${i} ether type ip6 icmpv6 type 136 @nh,528,48 != 0x${f.hwaddr.replace(/:/g, '')} drop`,
  ];
  if (f.ipv4) {
    if (hook === 'input') rules.push(`${i} ether type ip ip saddr 0.0.0.0 ip daddr 255.255.255.255 udp dport 67 accept`);
    for (const a of f.ipv4) rules.push(`${i} ether type arp arp saddr ip ${a} accept`, `${i} ether type ip ip saddr ${a} accept`);
    rules.push(`${i} ether type arp drop`, `${i} ether type ip drop`);
  }
  if (f.ipv6) {
    if (hook === 'input') {
      rules.push(`${i} ether type ip6 ip6 saddr fe80::/10 ip6 daddr ff02::1:2 udp dport 547 accept`, `${i} ether type ip6 ip6 saddr fe80::/10 ip6 daddr ff02::2 icmpv6 type 133 accept`);
    }
    rules.push(`${i} ether type ip6 icmpv6 type 134 drop`);
    for (const a of f.ipv6) rules.push(`${i} ether type ip6 icmpv6 type 136 @nh,384,128 ${hex128(a)} accept`, `${i} ether type ip6 ip6 saddr ${a} accept`);
    rules.push(`${i} ether type ip6 drop`);
  }
  if (f.ipv4 || f.ipv6) rules.push(`${i} ether type != { arp, ip, ip6 } drop`);
  return rules;
}

/** The NIC's table as an nftables script that replaces it whole. */
export function filterRuleset(filter: NicFilter): string {
  const f = checked(filter);
  const t = `bridge ${filterTable(f.hostEnd)}`;
  const chain = (name: string, hook: 'input' | 'forward') => [
    `  chain ${name} {`,
    `    type filter hook ${hook} priority -200; policy accept;`,
    ...chainRules(f, hook).map((r) => `    ${r}`),
    '  }',
  ];
  return [`table ${t}`, `delete table ${t}`, `table ${t} {`, ...chain('nic_in', 'input'), ...chain('nic_fwd', 'forward'), '}', ''].join('\n');
}

/** Sets (or replaces) the NIC's filters. */
export async function applyNicFilter(filter: NicFilter): Promise<void> {
  await nft(filterRuleset(filter));
}

/** Removes the NIC's filters, if any (declaring the table first makes the removal one step either way). */
export async function removeNicFilter(hostEnd: string): Promise<void> {
  if (!/^[A-Za-z0-9_.-]{1,15}$/.test(hostEnd)) throw new InvalidArgument(`${JSON.stringify(hostEnd)} is not an interface name`);
  const t = `bridge ${filterTable(hostEnd)}`;
  await nft(`table ${t}\ndelete table ${t}\n`);
}
