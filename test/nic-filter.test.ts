/**
 * security.mac_filtering, security.ipv4_filtering, security.ipv6_filtering on bridged NICs, in
 * real containers on this file's own lxq network: a filtered container can send from its own
 * MAC and addresses and from no other (a spoofed IPv4/IPv6 address or MAC does not reach the
 * bridge's address or the other container), where an unfiltered one doing the same still can.
 * Traffic goes only to the bridge's address and to addresses lxq gave this file's instances.
 * The filters are a table of lxq's own per NIC; nothing of them is left after stop, unplug or
 * delete, nor after a process that died (the next Host.open sweeps it).
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';

import { Host, type Instance, InvalidArgument } from '../lib';
import { hostLink } from '../lib/devices/nic';
import type { BaseInstance } from '../lib/instance/base';
import { egressLink } from '../lib/network/tc';
import { sh, SHARED_IMAGES, tempHost, type TestHost } from './helpers/host';

jest.setTimeout(240_000);

let t: TestHost;
const tag = Math.random().toString(16).slice(2, 8);
/** Every instance name this file uses. */
const named: string[] = [];
const nameOf = (prefix: string) => {
  const n = t.name(prefix);
  named.push(n);
  return n;
};
/**
 * The NIC filter tables of this file's own host ends, made or only named (other test files make and
 * remove tables of their own meanwhile: only these are compared).
 */
const ownTables = () => {
  const ends = new Set([`lxq${tag}z`, ...named.flatMap((n) => ['eth0', 'eth1'].map((d) => hostLink(path.join(t.dir, 'instances', n), d)))]);
  return execFileSync('nft', ['list', 'tables']).toString().split('\n').filter((l) => l.startsWith('table bridge lxq_nic_') && ends.has(l.slice('table bridge lxq_nic_'.length))).sort();
};
const table = (dev: string) => spawnSync('nft', ['list', 'table', 'bridge', `lxq_nic_${dev}`]);
/** Runs `script` in `i`, which must succeed. */
const ok = async (i: Instance, script: string) => {
  const r = await sh(i, script);
  if (r.code !== 0) throw new Error(`${script}: exit ${r.code}: ${r.err}`);
};
/** Waits until IPv6 address `a` of `i` is usable (no longer tentative: its duplicate detection over). */
const usable6 = (i: Instance, a: string) => ok(i, `for n in $(seq 100); do ip -6 addr show dev eth0 | grep -q '${a}/64 scope global *$' && exit 0; sleep 0.2; done; ip -6 addr show dev eth0; exit 1`);
/** Whether `to` answers a ping from `i` within a few tries (a neighbour's entry may be renewed first). */
const reaches = async (i: Instance, to: string, tries = 3, from?: string) =>
  (await sh(i, `for n in $(seq ${tries}); do ping -c 1 -W 2 ${from ? `-I ${from} ` : ''}${to} >/dev/null 2>&1 && exit 0; done; exit 1`)).code === 0;

let before: string[];
let net: { name: string; address: string; address6?: string; cidr: string; cidr6?: string };
beforeAll(async () => {
  before = ownTables();
  t = await tempHost();
  const name = `lxq${tag}f`;
  net = await t.host.networks.create(name, { 'ipv4.nat': 'false', 'ipv6.address': 'auto' });
});
afterAll(async () => {
  for (const i of await t.host.list().catch(() => [])) await i.delete({ force: true }).catch(() => undefined);
  await t?.dispose();
  expect(ownTables()).toEqual(before);
});

describe('a filtered container and an unfiltered one on one bridge', () => {
  let c1: Instance, c2: Instance;
  let own: string, own6: string, spoof: string, spoof6: string, dev: string;
  beforeAll(async () => {
    const prefix = net.address.replace(/\.1$/, '.');
    [own, spoof] = [`${prefix}50`, `${prefix}60`];
    const p6 = net.address6!.replace(/::1$/, '::');
    [own6, spoof6] = [`${p6}50`, `${p6}60`];
    const nic = { type: 'nic', network: net.name, 'ipv4.address': own, 'ipv6.address': own6, 'security.ipv4_filtering': 'true', 'security.ipv6_filtering': 'true' } as const;
    c1 = await t.host.create(nameOf('flt'), { image: 'busybox', devices: { eth0: nic } });
    c2 = await t.host.create(nameOf('open'), { image: 'busybox', devices: { eth0: { type: 'nic', network: net.name } } });
    dev = hostLink((c1 as BaseInstance).dir, 'eth0');
    expect(hostLink(path.join(t.dir, 'instances', c1.name), 'eth0')).toBe(dev); // what ownTables looks for
    expect(table(dev).status).not.toBe(0); // nothing before the start
    await Promise.all([c1.start(), c2.start()]);
  }, 240_000);

  test('its table: the rules on its host end; DHCP still gives it its address; its own addresses pass', async () => {
    const rules = table(dev).stdout.toString();
    expect(rules).toContain(`iifname "${dev}" ether saddr != `);
    expect(rules).toContain(`arp saddr ip ${own} accept`);
    expect(rules).toContain(`ip6 saddr ${own6} accept`);
    expect(await c1.waitForAddress({ timeout: 60_000 })).toBe(own);
    const a2 = await c2.waitForAddress({ timeout: 60_000 });
    expect(await reaches(c1, net.address)).toBe(true);
    expect(await reaches(c1, a2)).toBe(true);
    // Its own IPv6 address is one it sets itself (lxq's networks give IPv6 by SLAAC, which the filter drops).
    await ok(c1, `ip -6 addr add ${own6}/64 dev eth0`);
    await usable6(c1, own6);
    expect(await reaches(c1, net.address6!, 10, own6)).toBe(true);
  });

  test('another IPv4 address does not pass; for the unfiltered container it does', async () => {
    const a2 = await c2.waitForAddress();
    // Flushed, not deleted: deleting the primary address deletes its secondaries.
    const swap = (_from: string, to: string) => `ip -4 addr flush dev eth0 && ip addr add ${to}/24 dev eth0 && ip neigh flush dev eth0`;
    await ok(c1, swap(own, spoof));
    try {
      expect(await reaches(c1, net.address, 2)).toBe(false);
      expect(await reaches(c1, a2, 2)).toBe(false);
    } finally {
      await ok(c1, swap(spoof, own));
    }
    expect(await reaches(c1, net.address, 10)).toBe(true);
    // The same change in the unfiltered container: its traffic passes (what stopped c1's was the filter).
    await ok(c2, swap(a2, spoof));
    try {
      expect(await reaches(c2, own, 10)).toBe(true);
    } finally {
      await ok(c2, swap(spoof, a2));
    }
  });

  test('another IPv6 address does not pass', async () => {
    await ok(c1, `ip -6 addr add ${spoof6}/64 dev eth0`);
    try {
      await usable6(c1, spoof6); // its duplicate detection over: what is dropped is dropped by the filter
      expect(await reaches(c1, net.address6!, 2, spoof6)).toBe(false);
    } finally {
      await ok(c1, `ip -6 addr del ${spoof6}/64 dev eth0`);
    }
    expect(await reaches(c1, net.address6!, 10, own6)).toBe(true);
  });

  test('another MAC does not pass; for the unfiltered container it does', async () => {
    const mac = (await sh(c1, 'cat /sys/class/net/eth0/address')).out.trim();
    const other = '00:16:3e:7a:7a:7a';
    const setMac = (m: string) => `ip link set dev eth0 address ${m} && ip neigh flush dev eth0`;
    await ok(c1, setMac(other));
    try {
      expect(await reaches(c1, net.address, 2)).toBe(false);
    } finally {
      await ok(c1, setMac(mac));
    }
    expect(await reaches(c1, net.address, 10)).toBe(true);
    const mac2 = (await sh(c2, 'cat /sys/class/net/eth0/address')).out.trim();
    await ok(c2, setMac(other));
    try {
      expect(await reaches(c2, net.address, 10)).toBe(true);
    } finally {
      await ok(c2, setMac(mac2));
    }
  });

  test('hot-plug and unplug: the table comes and goes with the NIC', async () => {
    await c2.addDevice('eth1', { type: 'nic', network: net.name, 'security.mac_filtering': 'true' });
    const dev1 = hostLink((c2 as BaseInstance).dir, 'eth1');
    expect(table(dev1).stdout.toString()).toContain(`iifname "${dev1}" ether saddr != `);
    await c2.removeDevice('eth1');
    expect(table(dev1).status).not.toBe(0);
  });

  test('stop removes the table, start makes it again, delete leaves nothing', async () => {
    await c1.stop({ force: true });
    expect(table(dev).status).not.toBe(0);
    await c1.start();
    expect(table(dev).status).toBe(0);
    await c1.delete({ force: true });
    expect(table(dev).status).not.toBe(0);
  });
});

test('a table and ifb link whose host end is gone (its process died) are removed by the next Host.open', async () => {
  // As a killed process leaves them: the mark, the table and the egress ifb link of a host end that no longer exists.
  const dev = `lxq${tag}z`;
  execFileSync('nft', ['-f', '-'], { input: `table bridge lxq_nic_${dev} {\n chain in { type filter hook input priority -200; policy accept; iifname "${dev}" drop; }\n}\n` });
  execFileSync('ip', ['link', 'add', 'name', egressLink(dev), 'type', 'ifb']);
  mkdirSync('/run/lxq/host-ends', { recursive: true });
  writeFileSync(`/run/lxq/host-ends/${dev}`, '');
  const h = await Host.open({ path: t.dir, images: SHARED_IMAGES });
  expect(h).toBeDefined();
  expect(table(dev).status).not.toBe(0);
  expect(existsSync(`/run/lxq/host-ends/${dev}`)).toBe(false);
  expect(spawnSync('ip', ['link', 'show', 'dev', egressLink(dev)]).status).not.toBe(0);
});

test('bad input: a typed error, nothing made', async () => {
  const mk = (eth0: Record<string, string>) => t.host.create(nameOf('bad'), { image: 'busybox', devices: { eth0: { type: 'nic', ...eth0 } as never } });
  await expect(mk({ network: net.name, 'security.ipv4_filtering': 'true' })).rejects.toThrow(/"security.ipv4_filtering" needs a static "ipv4.address"/);
  await expect(mk({ network: net.name, 'security.ipv6_filtering': 'true' })).rejects.toThrow(/"security.ipv6_filtering" needs a static "ipv6.address"/);
  await expect(mk({ network: net.name, 'ipv6.address': 'fd00::5' })).rejects.toThrow(InvalidArgument);
  await expect(mk({ network: net.name, 'security.mac_filtering': 'yes' })).rejects.toThrow(/expected "true" or "false"/);
  await expect(mk({ nictype: 'p2p', 'security.mac_filtering': 'true' })).rejects.toThrow(/does not apply to a p2p NIC/);
  expect(ownTables()).toEqual(before);
});
