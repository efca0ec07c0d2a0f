/**
 * `state()`'s live status of a running container's devices: each NIC type's interface (its
 * counters moving after the host sends to an address lxq gave the container) and host link, a
 * disk's mount read from the container's mount table (and gone after a live remove), a unix-char
 * node, a proxy's listener served by the proxy process. Busybox containers; the NICs' parents are
 * this file's own veth pairs on its own lxq network, removed even when a test fails; traffic goes
 * only to addresses lxq gave the containers.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';

import type { DeviceState, Instance, NetworkInterface } from '../lib';
import { hostPerFile } from './helpers/host';
import { knock } from './helpers/knock';
import { OwnLinks } from './helpers/links';
import { until } from './helpers/wait';

jest.setTimeout(240_000);

const links = new OwnLinks(); // this file's host links, deleted even after a failure
const run = (cmd: string, args: string[]) => execFileSync(cmd, args).toString();
let bridge: string;
const shared = mkdtempSync(path.join(os.tmpdir(), 'lxq-devstate-'));

const t = hostPerFile({
  setUp: async (h) => {
    bridge = links.track('br');
    await h.host.networks.create(bridge, { 'ipv4.nat': 'false', 'ipv6.address': 'none' });
  },
  tearDown: async (h) => {
    for (const i of await h.host.list().catch(() => [])) await i.delete({ force: true }).catch(() => undefined);
    links.removeAll();
    rmSync(shared, { recursive: true, force: true });
  },
});

/** A veth pair of this file's own: `a` for an instance to use as its parent, `b` on this file's network. */
const vethParent = (suffix: string) => links.vethParent(suffix, bridge);

/** A /64 ULA the host neither routes nor has an address in, written as ip prints it. */
function freeUla(): string {
  const taken = run('ip', ['-6', 'route', 'show', 'table', 'all']) + run('ip', ['-6', 'addr', 'show']);
  for (;;) {
    const r = Math.floor(Math.random() * 65536);
    const range = `fd${(r % 256).toString(16).padStart(2, '0')}:${r.toString(16)}:7b7b:${parseInt(links.tag.slice(0, 4), 16).toString(16)}`;
    if (!taken.includes(range)) return range;
  }
}

const device = async (i: Instance, name: string): Promise<DeviceState> => (await i.state()).devices.find((d) => d.name === name)!;

/**
 * Connects from the host to `address` until 3 connections in a row were answered (each a
 * packet in and one out of the NIC) and the NIC's interface has received and sent at least 3
 * more packets (and more bytes) than before.
 */
async function countersMove(i: Instance, dev: string, address: string): Promise<NetworkInterface> {
  const before = (await device(i, dev)).nic!.interface!.counters;
  let after = before;
  await until(`${dev}'s counters to move after connections to ${address}`, async () => {
    for (let n = 0; n < 3; n++) if (!(await knock(address))) return false;
    after = (await device(i, dev)).nic!.interface!.counters;
    return after.packetsReceived >= before.packetsReceived + 3 && after.packetsSent >= before.packetsSent + 3;
  }, 120_000, 500);
  expect(after.bytesReceived).toBeGreaterThan(before.bytesReceived);
  expect(after.bytesSent).toBeGreaterThan(before.bytesSent);
  return (await device(i, dev)).nic!.interface!;
}

/** The usable IPv6 link-local address of `ifname` inside (no longer tentative). */
async function linkLocal(i: Instance, ifname: string): Promise<string> {
  let found = '';
  await until(`${ifname}'s link-local address`, async () => {
    const out = (await i.exec(['ip', '-6', '-o', 'addr', 'show', 'dev', ifname, 'scope', 'link'])).stdout.toString();
    found = /inet6 ([0-9a-f:]+)\//.exec(out)?.[1] ?? '';
    return found !== '' && !out.includes('tentative');
  });
  return found;
}

describe('NICs of each type', () => {
  test('bridged: the interface by its name inside, its veth host end on the bridge, counters moving', async () => {
    const c = await t.host.create(t.name('br'), { image: 'busybox', devices: { eth0: { type: 'nic', network: bridge } } });
    await c.start();
    const address = await c.waitForAddress({ timeout: 60_000 });
    const nic = (await device(c, 'eth0')).nic!;
    expect(nic).toMatchObject({ nictype: 'bridged', hostName: expect.stringMatching(/^lxq[0-9a-f]{8}$/) });
    expect(run('ip', ['-o', 'link', 'show', 'master', bridge])).toContain(`${nic.hostName}@`);
    expect(nic.interface).toMatchObject({ name: 'eth0', hwaddr: c.devices.eth0.hwaddr });
    const eth0 = await countersMove(c, 'eth0', address);
    expect(eth0.addresses).toContainEqual(expect.objectContaining({ family: 'inet', address }));
    // Stopped: no interface, no host end.
    await c.stop({ force: true });
    expect((await device(c, 'eth0')).nic).toBeUndefined();
  });

  test('p2p and routed: their host ends (named, routed to); counters moving after connections to the link-local and the static address', async () => {
    const p2p = links.track('p0');
    const v6 = `${freeUla()}::10`;
    const c = await t.host.create(t.name('pr'), {
      image: 'busybox',
      devices: { eth0: { type: 'nic', nictype: 'p2p', host_name: p2p }, eth1: { type: 'nic', nictype: 'routed', 'ipv6.address': v6 } },
    });
    await c.start();
    const [p, r] = [(await device(c, 'eth0')).nic!, (await device(c, 'eth1')).nic!];
    expect(p).toMatchObject({ nictype: 'p2p', hostName: p2p, interface: expect.objectContaining({ name: 'eth0' }) });
    expect(r.nictype).toBe('routed');
    expect(run('ip', ['-6', 'route', 'show', `${v6}/128`])).toContain(`dev ${r.hostName}`);
    await countersMove(c, 'eth0', `${await linkLocal(c, 'eth0')}%${p2p}`);
    await until('the routed address usable inside', async () => !(await c.exec(['ip', '-6', '-o', 'addr', 'show', 'dev', 'eth1'])).stdout.toString().includes('tentative'));
    const eth1 = await countersMove(c, 'eth1', v6);
    expect(eth1.addresses).toContainEqual(expect.objectContaining({ family: 'inet6', address: v6, prefix: 128 }));
    await c.stop({ force: true });
  });

  test('macvlan and physical: no host link of their own (the link is inside); counters moving after connections to their leases', async () => {
    const mv = await t.host.create(t.name('mv'), { image: 'busybox', devices: { eth0: { type: 'nic', nictype: 'macvlan', parent: vethParent('m') } } });
    const ph = await t.host.create(t.name('ph'), { image: 'busybox', devices: { eth0: { type: 'nic', nictype: 'physical', parent: vethParent('p') } } });
    await Promise.all([mv.start(), ph.start()]);
    const [a, b] = await Promise.all([mv.waitForAddress({ timeout: 60_000 }), ph.waitForAddress({ timeout: 60_000 })]);
    expect((await device(mv, 'eth0')).nic).toMatchObject({ nictype: 'macvlan', hostName: null, interface: expect.objectContaining({ name: 'eth0', hwaddr: mv.devices.eth0.hwaddr }) });
    expect((await device(ph, 'eth0')).nic).toMatchObject({ nictype: 'physical', hostName: null, interface: expect.objectContaining({ name: 'eth0' }) });
    await countersMove(mv, 'eth0', a);
    await countersMove(ph, 'eth0', b);
    await Promise.all([mv.stop({ force: true }), ph.stop({ force: true })]);
  });
});

describe('disks, unix devices and proxies', () => {
  test('a disk\'s mount (read-only, its source\'s directory), gone with a live remove; a unix-char node; a proxy listening', async () => {
    const port = await new Promise<number>((resolve) => {
      const s = net.createServer().listen(0, '127.0.0.1', () => {
        const p = (s.address() as net.AddressInfo).port;
        s.close(() => resolve(p));
      });
    });
    const c = await t.host.create(t.name('dk'), {
      image: 'busybox',
      devices: {
        data: { type: 'disk', source: shared, path: '/mnt/data', readonly: 'true' },
        zero: { type: 'unix-char', source: '/dev/zero', path: '/dev/lxqzero' },
        web: { type: 'proxy', listen: `tcp:127.0.0.1:${port}`, connect: 'tcp:127.0.0.1:80' },
      },
    });
    const stopped = await device(c, 'data');
    expect(stopped.mount).toBeUndefined();
    await c.start();
    const data = await device(c, 'data');
    expect(data.mount).toMatchObject({ target: '/mnt/data', readOnly: true });
    // A bind mount: the shared directory within its filesystem (the host path, when that filesystem is mounted at /).
    expect(shared.endsWith(data.mount!.root)).toBe(true);
    expect((await device(c, 'zero')).nodes).toEqual(['/dev/lxqzero']);
    const web = (await device(c, 'web')).proxy!;
    expect(web.pid).toEqual(expect.any(Number));
    expect(web.listeners).toEqual([{ address: `tcp:127.0.0.1:${port}`, listening: true }]);

    await c.removeDevice('data');
    expect((await c.state()).devices.map((d) => d.name)).not.toContain('data');
    expect((await c.exec(['cat', '/proc/self/mountinfo'])).stdout.toString()).not.toContain(' /mnt/data ');
    await c.addDevice('data2', { type: 'disk', source: shared, path: '/mnt/data2' });
    expect((await device(c, 'data2')).mount).toMatchObject({ target: '/mnt/data2', readOnly: false });

    await c.stop({ force: true });
    const after = await c.state();
    expect(after.devices.find((d) => d.name === 'web')!.proxy).toEqual({ pid: null, listeners: [{ address: `tcp:127.0.0.1:${port}`, listening: false }] });
    expect(after.devices.find((d) => d.name === 'zero')!.nodes).toBeUndefined();
  });
});
