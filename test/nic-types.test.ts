/**
 * NIC types other than bridged, in real containers. The parents are this file's own veth pairs
 * (unique names), their other ends on this file's own lxq network, whose dnsmasq gives the
 * instances their addresses: traffic goes only between instances, to addresses lxq gave them.
 * Every link made here is deleted even when a test fails; the host's links (but lxq's), routes,
 * qdiscs and nftables tables are the same after the file as before.
 */
import { execFileSync } from 'node:child_process';
import * as http from 'node:http';

import { type Instance, InvalidArgument, NotSupported } from '../lib';
import { egressMissing } from '../lib/network/tc';
import { sh, tempHost, type TestHost } from './helpers/host';
import { knock } from './helpers/knock';
import { linkExists, OwnLinks } from './helpers/links';

jest.setTimeout(240_000);

let t: TestHost;
const links = new OwnLinks(); // this file's host links, deleted even after a failure
const linkName = (n: string) => links.name(n);
let before: string;
let bridge: string;

const run = (cmd: string, args: string[]) => execFileSync(cmd, args).toString();

/** The host's own network state: links but lxq's, with their details; routes; qdiscs; nftables tables but lxq's. */
function hostNetworkState(): string {
  const links = (JSON.parse(run('ip', ['-d', '-json', 'link', 'show'])) as Array<{ ifname: string; flags: string[]; mtu: number; linkinfo?: unknown }>)
    .filter((l) => !l.ifname.startsWith('lxq'))
    .map((l) => [l.ifname, l.flags, l.mtu, l.linkinfo]);
  const routes = [run('ip', ['-json', 'route', 'show', 'table', 'all']), run('ip', ['-6', '-json', 'route', 'show', 'table', 'all'])]
    .flatMap((j) => JSON.parse(j) as Array<{ dev?: string }>)
    .filter((r) => !r.dev?.startsWith('lxq'));
  const qdiscs = (JSON.parse(run('tc', ['-json', 'qdisc', 'show'])) as Array<{ dev: string }>).filter((q) => !q.dev.startsWith('lxq'));
  const tables = run('nft', ['list', 'tables']).split('\n').filter((l) => l && !/ lxq_/.test(l));
  return JSON.stringify({ links, routes, qdiscs, tables });
}

/** A veth pair of this file's own: `a` for an instance to use as its parent, `b` on this file's network. */
const vethParent = (suffix: string) => links.vethParent(suffix, bridge);


beforeAll(async () => {
  before = hostNetworkState();
  t = await tempHost();
  bridge = links.track('br');
  await t.host.networks.create(bridge, { 'ipv4.nat': 'false', 'ipv6.address': 'none' });
});
afterAll(async () => {
  for (const i of await t.host.list().catch(() => [])) await i.delete({ force: true }).catch(() => undefined);
  await t?.dispose();
  links.removeAll();
  expect(hostNetworkState()).toBe(before);
});

describe('macvlan', () => {
  let parent: string;
  let c1: Instance, c2: Instance;
  beforeAll(async () => {
    parent = vethParent('m');
    const nic = { type: 'nic', nictype: 'macvlan', parent } as const;
    c1 = await t.host.create(t.name('mv'), { image: 'busybox', devices: { eth0: nic } });
    c2 = await t.host.create(t.name('mv'), { image: 'busybox', devices: { eth0: nic } });
    await Promise.all([c1.start(), c2.start()]);
  });

  test('two containers on one parent: DHCP through it, and they reach each other', async () => {
    const [a1, a2] = await Promise.all([c1.waitForAddress({ timeout: 60_000 }), c2.waitForAddress({ timeout: 60_000 })]);
    expect((await sh(c1, `ping -c 1 -W 5 ${a2}`)).code).toBe(0);
    expect((await sh(c2, `ping -c 1 -W 5 ${a1}`)).code).toBe(0);
    const eth0 = (await c1.state()).network.interfaces.find((i) => i.name === 'eth0')!;
    expect(eth0.hwaddr).toBe(c1.devices.eth0.hwaddr);
    expect(eth0.addresses).toContainEqual(expect.objectContaining({ family: 'inet', address: a1 }));
    expect(eth0.counters.packetsReceived).toBeGreaterThan(0);
    expect((await sh(c1, 'cat /sys/class/net/eth0/iflink; cat /sys/class/net/eth0/ifindex')).out.split('\n')[0]).not.toBe('');
    // A macvlan's lower link is the parent: no host end of lxq's.
    expect(run('ip', ['-o', 'link', 'show', 'master', bridge])).not.toMatch(/lxq[0-9a-f]{8}/);
  });

  test('hot-plug into a running container and out again', async () => {
    await c1.addDevice('mv1', { type: 'nic', nictype: 'macvlan', parent, name: 'mv1' });
    expect((await sh(c1, 'cat /sys/class/net/mv1/address')).out.trim()).toBe(c1.devices.mv1.hwaddr);
    await c1.removeDevice('mv1');
    expect((await sh(c1, 'test -e /sys/class/net/mv1 || echo gone')).out).toBe('gone\n');
  });
});

/** Waits for `check` to pass (it throws until then), for up to `ms`. */
async function until<T>(check: () => Promise<T> | T, ms = 30_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    try {
      return await check();
    } catch (e) {
      if (Date.now() > deadline) throw e;
      await new Promise((r) => setTimeout(r, 250));
    }
  }
}

/** A /24 (IPv4) or /64 (IPv6, ULA) the host neither routes nor has an address in: this file's own range. */
function freeRange(family: 4 | 6): string {
  const taken = run('ip', [`-${family}`, 'route', 'show', 'table', 'all']) + run('ip', [`-${family}`, 'addr', 'show']);
  for (;;) {
    const r = Math.floor(Math.random() * 65536);
    // Groups written as ip prints them (no leading zero), since tests compare its output with these strings.
    const range = family === 4 ? `198.18.${r % 256}` : `fd${(r % 256).toString(16).padStart(2, '0')}:${r.toString(16)}:7a7a:${parseInt(links.tag.slice(0, 4), 16).toString(16)}`;
    if (!taken.includes(range)) return range;
  }
}

/** An HTTP server on port 8080 in the container (busybox httpd), serving "ok". */
async function serve(i: Instance): Promise<void> {
  expect((await sh(i, 'mkdir -p /www && echo ok > /www/index.html && httpd -p 8080 -h /www && echo up')).out).toBe('up\n');
}
/** GET / from the host at `address` (IPv4, or IPv6 with its %link when link-local), port 8080. */
function get(address: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: address, family: address.includes(':') ? 6 : 4, port: 8080, path: '/', timeout: 5_000 }, (res) => {
      let body = '';
      res.on('data', (d) => (body += d));
      res.on('end', () => resolve(body));
    });
    req.on('timeout', () => req.destroy(new Error(`no answer from [${address}]:8080`)));
    req.on('error', reject);
  });
}

/** The host end's IPv6 link-local address once it is usable (no longer tentative). */
const linkLocal = (i: Instance, ifname: string) =>
  until(async () => {
    const out = (await sh(i, `ip -6 -o addr show dev ${ifname} scope link`)).out;
    if (!out.includes('inet6') || out.includes('tentative')) throw new Error(`${ifname} has no usable link-local address yet: ${out}`);
    return /inet6 ([0-9a-f:]+)\//.exec(out)![1];
  });

describe('p2p and routed', () => {
  test('p2p: the host end on no bridge, with its routes and queue; host ↔ container over it', async () => {
    const host = links.track('p0');
    const range = `${freeRange(4)}.0/24`;
    const c = await t.host.create(t.name('p2p'), { image: 'busybox', devices: { eth0: { type: 'nic', nictype: 'p2p', host_name: host, 'ipv4.routes': range, 'queue.tx.length': 2000, 'limits.ingress': '10Mbit' } } });
    await c.start();
    const info = (JSON.parse(run('ip', ['-d', '-json', 'link', 'show', 'dev', host])) as Array<{ master?: string; txqlen: number; linkinfo: { info_kind: string } }>)[0];
    expect(info.master).toBeUndefined();
    expect(info.txqlen).toBe(2000);
    expect(info.linkinfo.info_kind).toBe('veth');
    expect(run('ip', ['-4', 'route', 'show', range])).toMatch(new RegExp(`dev ${host}`));
    // The rate limit of what goes in to the container: an htb class on the host end.
    expect(run('tc', ['class', 'show', 'dev', host])).toMatch(/htb 1:10 root .*rate 10Mbit/);
    // The container's link-local address (from the MAC lxq gave it) answers the host through the host end.
    const ll = await linkLocal(c, 'eth0');
    await serve(c);
    expect(await until(() => get(`${ll}%${host}`))).toBe('ok\n');
    const eth0 = (await c.state()).network.interfaces.find((i) => i.name === 'eth0')!;
    expect(eth0.hwaddr).toBe(c.devices.eth0.hwaddr);
    expect(eth0.addresses).toContainEqual(expect.objectContaining({ family: 'inet6', address: ll }));
    expect(eth0.counters.packetsReceived).toBeGreaterThan(0);
    await c.stop({ force: true });
    expect(linkExists(host)).toBe(false);
    expect(run('ip', ['-4', 'route', 'show', range])).toBe('');
  });

  test('routed: static addresses inside, host routes to them, the default route via the host end', async () => {
    const v6 = `${freeRange(6)}::10`;
    const v4 = `${freeRange(4)}.10`;
    const parent = vethParent('r');
    const c = await t.host.create(t.name('rt'), { image: 'busybox', devices: { eth0: { type: 'nic', nictype: 'routed', parent, 'ipv6.address': v6, 'ipv4.address': v4 } } });
    await c.start();
    // The parent answers for the addresses (proxy ARP/NDP), while the container runs.
    expect(run('ip', ['-4', 'neigh', 'show', 'proxy', 'dev', parent])).toContain(v4);
    expect(run('ip', ['-6', 'neigh', 'show', 'proxy', 'dev', parent])).toContain(v6);
    const host = run('ip', ['-6', 'route', 'show', `${v6}/128`]).match(/dev (lxq[0-9a-f]{8})/)![1];
    expect(run('ip', ['-4', 'route', 'show', `${v4}/32`])).toMatch(new RegExp(`dev ${host}`));
    expect(run('ip', ['-6', 'addr', 'show', 'dev', host])).toMatch(/inet6 fe80::1\/64/);
    expect((await sh(c, 'ip -6 route show default')).out).toMatch(/default via fe80::1 dev eth0/);
    // The host reaches the container at its static address, through the route lxq made to this file's own range.
    await serve(c);
    expect(await until(() => get(v6))).toBe('ok\n');
    const eth0 = (await c.state()).network.interfaces.find((i) => i.name === 'eth0')!;
    expect(eth0.addresses).toContainEqual(expect.objectContaining({ family: 'inet6', address: v6, prefix: 128 }));
    // The static IPv4 address too, once the image's DHCP loop has looked at eth0 (and left it alone: its client's deconfig would flush it).
    await until(async () => expect((await sh(c, 'test -e /run/lxq-static.eth0 && echo seen')).out).toBe('seen\n'));
    expect(await until(() => get(v4))).toBe('ok\n');
    expect((await c.state()).network.interfaces.find((i) => i.name === 'eth0')!.addresses).toContainEqual(expect.objectContaining({ family: 'inet', address: v4, prefix: 32 }));
    await c.stop({ force: true });
    expect(run('ip', ['neigh', 'show', 'proxy', 'dev', parent])).toBe('');
    expect(linkExists(host)).toBe(false);
    expect(run('ip', ['-6', 'route', 'show', `${v6}/128`])).toBe('');
  });
});

describe('physical', () => {
  test('a host link moved in (DHCP through it, reaching a macvlan container), refused twice, given back on stop', async () => {
    const parent = vethParent('x');
    const c = await t.host.create(t.name('ph'), { image: 'busybox', devices: { eth0: { type: 'nic', nictype: 'physical', parent } } });
    const peer = await t.host.create(t.name('ph'), { image: 'busybox', devices: { eth0: { type: 'nic', nictype: 'macvlan', parent: vethParent('y') } } });
    await Promise.all([c.start(), peer.start()]);
    expect(linkExists(parent)).toBe(false);
    const [a, b] = await Promise.all([c.waitForAddress({ timeout: 60_000 }), peer.waitForAddress({ timeout: 60_000 })]);
    expect((await sh(c, `ping -c 1 -W 5 ${b}`)).code).toBe(0);
    expect((await sh(peer, `ping -c 1 -W 5 ${a}`)).code).toBe(0);
    await expect(t.host.create(t.name('ph'), { image: 'busybox', devices: { eth0: { type: 'nic', nictype: 'physical', parent } } })).rejects.toThrow(/is in another network namespace/);
    await c.stop({ force: true });
    await until(() => expect(linkExists(parent)).toBe(true));
    await expect(c.addDevice('eth1', { type: 'nic', nictype: 'physical', parent: linkName('yb') })).rejects.toThrow(/is a port of/);
  });
});

describe('a VM with a macvlan, a p2p and a routed NIC', () => {
  test('DHCP through the macvtap and a container on the same parent reaching it; the host over the p2p and routed taps', async () => {
    const parent = vethParent('v');
    const p2p = links.track('vp');
    const v6 = `${freeRange(6)}::20`;
    const vm = await t.host.create(t.name('vm'), {
      type: 'vm',
      image: 'vm/default',
      devices: {
        eth0: { type: 'nic', nictype: 'macvlan', parent },
        eth1: { type: 'nic', nictype: 'p2p', host_name: p2p, 'limits.ingress': '20Mbit' },
        eth2: { type: 'nic', nictype: 'routed', 'ipv6.address': v6 },
      },
    });
    const c = await t.host.create(t.name('vmpeer'), { image: 'busybox', devices: { eth0: { type: 'nic', nictype: 'macvlan', parent } } });
    await Promise.all([vm.start(), c.start()]);
    const [av] = await Promise.all([vm.waitForAddress({ timeout: 120_000 }), c.waitForAddress({ timeout: 60_000 })]);
    expect((await sh(c, `ping -c 1 -W 5 ${av}`)).code).toBe(0);
    expect(run('ip', ['-d', '-o', 'link', 'show', 'master', bridge])).not.toContain('macvtap');
    expect(run('tc', ['class', 'show', 'dev', p2p])).toMatch(/rate 20Mbit/);
    // The guest's interfaces, by the MACs lxq gave them.
    const ifaces = await until(async () => {
      const list = (await vm.state()).network.interfaces;
      const by = (dev: string) => list.find((i) => i.hwaddr === vm.devices[dev].hwaddr)!;
      expect(by('eth0').addresses).toContainEqual(expect.objectContaining({ family: 'inet', address: av }));
      expect(by('eth1').addresses.some((a) => a.family === 'inet6' && a.address.startsWith('fe80:'))).toBe(true);
      return { p2p: by('eth1'), routed: by('eth2') };
    }, 60_000);
    await serve(vm);
    const ll = ifaces.p2p.addresses.find((a) => a.family === 'inet6' && a.address.startsWith('fe80:'))!.address;
    expect(await until(() => get(`${ll}%${p2p}`))).toBe('ok\n');
    expect(await sh(c, `wget -qO- http://${av}:8080/`)).toMatchObject({ out: 'ok\n' });
    // A routed NIC: the host routes the address to the tap, which holds the gateway; the guest configures itself (as with LXD).
    const tap = run('ip', ['-6', 'route', 'show', `${v6}/128`]).match(/dev (lxq[0-9a-f]{8})/)![1];
    expect(run('ip', ['-6', 'addr', 'show', 'dev', tap])).toMatch(/inet6 fe80::1\/64/);
    expect((await sh(vm, `ip -6 addr add ${v6}/128 dev ${ifaces.routed.name} && ip -6 route add default via fe80::1 dev ${ifaces.routed.name} && echo ok`)).out).toBe('ok\n');
    expect(await until(() => get(v6))).toBe('ok\n');
    // state(): each NIC's guest interface by its MAC, its tap or macvtap on the host; the macvtap's counters move after the host connects to the lease.
    const nicOf = async (dev: string) => (await vm.state()).devices.find((d) => d.name === dev)!.nic!;
    // (The guest's interfaces come from its agent, which a loaded machine may make late: null then, asked again.)
    await until(async () => expect(await nicOf('eth1')).toMatchObject({ nictype: 'p2p', hostName: p2p, interface: expect.objectContaining({ hwaddr: vm.devices.eth1.hwaddr }) }), 60_000);
    expect(await nicOf('eth2')).toMatchObject({ nictype: 'routed', hostName: tap });
    const mv = await until(async () => {
      const n = await nicOf('eth0');
      expect(n.interface?.hwaddr).toBe(vm.devices.eth0.hwaddr);
      return n;
    }, 60_000);
    expect(run('ip', ['-d', 'link', 'show', 'dev', mv.hostName!])).toContain('macvtap');
    await until(async () => {
      for (let n = 0; n < 3; n++) expect(await knock(av)).toBe(true);
      const now = (await nicOf('eth0')).interface!.counters;
      expect(now.packetsReceived).toBeGreaterThanOrEqual(mv.interface!.counters.packetsReceived + 3);
      expect(now.packetsSent).toBeGreaterThanOrEqual(mv.interface!.counters.packetsSent + 3);
    }, 60_000);
    await expect(vm.addDevice('eth3', { type: 'nic', nictype: 'macvlan', parent })).rejects.toThrow(/add it while the VM is stopped/);
    await vm.stop({ force: true });
    expect(linkExists(p2p)).toBe(false);
    expect(linkExists(tap)).toBe(false);
    expect(run('ip', ['-d', '-o', 'link', 'show']).split('\n').filter((l) => l.includes(`@${parent}:`) && l.includes('macvtap'))).toEqual([]);
  });
});

describe('bad input: a typed error, and nothing left', () => {
  test('a missing parent, kernel features the host lacks, a physical NIC carrying the default route, VMs', async () => {
    const mk = (devices: Record<string, unknown>, type?: 'vm') => t.host.create(t.name('bad'), { image: type ? 'vm/default' : 'busybox', type, devices } as never);
    // Other programs on this host may add links meanwhile: the ones of this file are compared.
    const ownLinks = () =>
      JSON.stringify(
        (JSON.parse(run('ip', ['-d', '-json', 'link', 'show'])) as Array<{ ifname: string; flags: string[]; master?: string; linkinfo?: { info_kind?: string } }>)
          .filter((l) => l.ifname.startsWith(`lxq${links.tag}`))
          .map((l) => [l.ifname, l.flags, l.master, l.linkinfo?.info_kind]),
      );
    const was = ownLinks();
    await expect(mk({ eth0: { type: 'nic', nictype: 'macvlan', parent: linkName('none') } })).rejects.toThrow(new RegExp(`"parent" ${linkName('none')} is not a link of this host`));
    await expect(mk({ eth0: { type: 'nic', nictype: 'macvlan' } })).rejects.toThrow(/a macvlan NIC needs "parent"/);
    await expect(mk({ eth0: { type: 'nic', nictype: 'p2p', network: bridge } })).rejects.toThrow(/"network" does not apply to a p2p NIC/);
    await expect(mk({ eth0: { type: 'nic', nictype: 'routed' } })).rejects.toThrow(/needs "ipv4.address" or "ipv6.address"/);
    await expect(mk({ eth0: { type: 'nic', nictype: 'routed', 'ipv4.address': '10.1.2.300' } })).rejects.toThrow(InvalidArgument);
    await expect(mk({ eth0: { type: 'nic', nictype: 'p2p', 'ipv4.routes': '10.1.2.0' } })).rejects.toThrow(/bad value for "ipv4.routes"/);
    await expect(mk({ eth0: { type: 'nic', nictype: 'macvlan', parent: bridge, vlan: 5000 } })).rejects.toThrow(/"vlan": expected a VLAN id/);
    await expect(mk({ eth0: { type: 'nic', nictype: 'p2p', 'limits.ingress': '10 Mbps' } })).rejects.toThrow(/bad value for "limits.ingress": expected a rate/);
    await expect(mk({ eth0: { type: 'nic', nictype: 'p2p', 'limits.max': '1Gbit', 'limits.egress': '1Mbit' } })).rejects.toThrow(/"limits.max" sets both directions/);
    await expect(mk({ eth0: { type: 'nic', nictype: 'macvlan', parent: bridge, 'limits.max': '1Gbit' } })).rejects.toThrow(/"limits.max" does not apply to a macvlan NIC/);
    // Where the kernel has no ifb link or mirred action (probed on links of lxq's own), what an instance sends cannot be limited.
    if (await egressMissing()) await expect(mk({ eth0: { type: 'nic', nictype: 'p2p', 'limits.egress': '1Mbit' } })).rejects.toThrow(/cannot be limited/);
    const ipvlan = mk({ eth0: { type: 'nic', nictype: 'ipvlan', parent: bridge, 'ipv4.address': '10.1.2.3' } });
    await expect(ipvlan).rejects.toThrow(NotSupported);
    await expect(ipvlan).rejects.toThrow(/no ipvlan link type/);
    await expect(mk({ eth0: { type: 'nic', nictype: 'macvlan', parent: bridge, vlan: 5 } })).rejects.toThrow(/no 802.1Q vlan link type/);
    const route = (JSON.parse(run('ip', ['-json', '-4', 'route', 'show', 'default'])) as Array<{ dev?: string }>)[0]?.dev;
    if (route) await expect(mk({ eth0: { type: 'nic', nictype: 'physical', parent: route } })).rejects.toThrow(/carries the host's default route/);
    await expect(mk({ eth0: { type: 'nic', nictype: 'physical', parent: bridge } }, 'vm')).rejects.toThrow(NotSupported);
    expect((await t.host.list()).filter((i) => i.name.startsWith('bad-'))).toEqual([]);
    expect(ownLinks()).toBe(was);
  });
});
