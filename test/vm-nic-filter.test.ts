/**
 * security.mac_filtering and security.ipv4_filtering on a VM's bridged NIC (its tap), one VM
 * boot: the table on the tap from the start; from inside the guest, its own address and MAC
 * reach the bridge's address, another IPv4 address or another MAC does not; the table goes
 * with the stop. Traffic goes only to the bridge's address of this file's own network.
 */
import { execFileSync, spawnSync } from 'node:child_process';

import type { Instance } from '../lib';
import type { BaseInstance } from '../lib/instance/base';
import { hostEnd } from '../lib/devices/nic';
import { sh as shIn, tempHost, type TestHost } from './helpers/host';

jest.setTimeout(300_000);

let t: TestHost;
let v: Instance;
let net: { name: string; address: string };
let own = '';
let tap = '';
const tag = Math.random().toString(16).slice(2, 8);
/** The tap's filter table in the list of tables (empty when it has none). */
const tapTable = () => execFileSync('nft', ['list', 'tables']).toString().split('\n').filter((l) => l === `table bridge lxq_nic_${tap}`);
const table = (dev: string) => spawnSync('nft', ['list', 'table', 'bridge', `lxq_nic_${dev}`]);
const sh = (script: string) => shIn(v, script, 120_000);
const ok = async (script: string) => {
  const r = await sh(script);
  if (r.code !== 0) throw new Error(`${script}: exit ${r.code}: ${r.err}`);
};
/** Whether the bridge's address answers a ping from the guest within a few tries (a neighbour's entry may be renewed first). */
const reaches = async (tries: number) => (await sh(`for n in $(seq ${tries}); do ping -c 1 -W 2 ${net.address} >/dev/null 2>&1 && exit 0; done; exit 1`)).code === 0;

beforeAll(async () => {
  t = await tempHost();
  const name = `lxq${tag}v`;
  net = await t.host.networks.create(name, { 'ipv4.nat': 'false', 'ipv6.address': 'none' });

  own = net.address.replace(/\.1$/, '.70');
  const eth0 = { type: 'nic', network: net.name, 'ipv4.address': own, 'security.mac_filtering': 'true', 'security.ipv4_filtering': 'true' } as const;
  v = await t.host.create(t.name('vf'), { type: 'vm', image: 'vm/default', devices: { eth0 } });
  tap = hostEnd((v as BaseInstance).dir, 'eth0', v.devices.eth0);
  expect(tapTable()).toEqual([]);
  await v.start();
}, 300_000);

afterAll(async () => {
  await t?.dispose();
  // Its tap's table is gone (only it: other test files make and remove tables of their own meanwhile).
  if (tap) expect(tapTable()).toEqual([]);
});

test("the tap's table holds the rules; the guest gets its address and reaches the bridge from it", async () => {
  const rules = table(tap).stdout.toString();
  expect(rules).toContain(`iifname "${tap}" ether saddr != `);
  expect(rules).toContain(`arp saddr ip ${own} accept`);
  expect(await v.waitForAddress({ family: 'inet', timeout: 240_000 })).toBe(own);
  expect(await reaches(10)).toBe(true);
});

test('another IPv4 address does not pass, its own again does', async () => {
  const spoof = net.address.replace(/\.1$/, '.80');
  const swap = (to: string) => `ip -4 addr flush dev eth0 && ip addr add ${to}/24 dev eth0 && ip neigh flush dev eth0`;
  await ok(swap(spoof));
  try {
    expect(await reaches(2)).toBe(false);
  } finally {
    await ok(swap(own));
  }
  expect(await reaches(10)).toBe(true);
});

test('another MAC does not pass, its own again does', async () => {
  const mac = (await sh('cat /sys/class/net/eth0/address')).out.trim();
  const setMac = (m: string) => `ip link set dev eth0 address ${m} && ip neigh flush dev eth0`;
  await ok(setMac('00:16:3e:7a:7a:7b'));
  try {
    expect(await reaches(2)).toBe(false);
  } finally {
    await ok(setMac(mac));
  }
  expect(await reaches(10)).toBe(true);
});

test('stop removes the table', async () => {
  await v.stop({ force: true });
  expect(table(tap).status).not.toBe(0);
});
