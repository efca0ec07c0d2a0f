/**
 * Managed networks with real parts: a bridge, its dnsmasq (DHCP and DNS) and an nftables table,
 * with real containers and a VM on it. Traffic goes only to addresses lxq gave to instances this
 * file made, and to the bridge's own address; every bridge has a name of this run's own and is
 * deleted even when a test fails; the host's links, routes and other nftables tables are the
 * same after the file as before (compared at the end).
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import * as dgram from 'node:dgram';
import * as http from 'node:http';
import * as net from 'node:net';
import * as path from 'node:path';

import { AlreadyExists, Busy, Host, Instance, InvalidArgument, NotFound } from '../lib';
import type { VmInstance } from '../lib/drivers/vm/vm';
import { parseCidr6, slaacAddress } from '../lib/network/addresses';
import { describeNetworkKeys } from '../lib/network/keys';
import { sh, SHARED_IMAGES, tempHost, TestHost } from './helpers/host';

jest.setTimeout(180_000);

let t: TestHost;
const tag = Math.random().toString(16).slice(2, 8);
const netName = (n: string) => `lxq${tag}${n}`; // at most 15 bytes, unique to this run
const made: string[] = [];

/** The host's own network state, outside lxq's tables and links. */
function hostNetworkState(): string {
  const links = JSON.parse(execFileSync('ip', ['-json', 'link', 'show']).toString()) as Array<{ ifname: string; flags: string[]; mtu: number }>;
  const routes = [...JSON.parse(execFileSync('ip', ['-json', 'route', 'show', 'table', 'all']).toString()), ...JSON.parse(execFileSync('ip', ['-6', '-json', 'route', 'show', 'table', 'all']).toString())];
  const nft = JSON.parse(execFileSync('nft', ['-j', 'list', 'ruleset']).toString()) as { nftables: Array<Record<string, { table?: string; name?: string }>> };
  const foreign = nft.nftables.filter((o) => !Object.values(o).some((v) => (v.table ?? v.name ?? '').startsWith('lxq_')) && !('metainfo' in o));
  return JSON.stringify({ links: links.filter((l) => !l.ifname.startsWith('lxq')).map((l) => [l.ifname, l.flags, l.mtu]), routes: routes.filter((r: { dev?: string }) => !r.dev?.startsWith('lxq')), foreign });
}
const linkExists = (name: string) => spawnSync('ip', ['link', 'show', 'dev', name]).status === 0;
/** A static udp echo server (test/helpers/udp-echo.c), built once per run. */
let udpEcho: string | undefined;
function udpEchoBinary(): string {
  if (udpEcho) return udpEcho;
  const binary = path.join(t.dir, 'udp-echo');
  execFileSync('gcc', ['-static', '-O2', '-o', binary, path.join(__dirname, 'helpers', 'udp-echo.c')]);
  return (udpEcho = binary);
}
/** One datagram to the host's loopback `port` and the first reply to it. */
function udpAsk(port: number, text: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = dgram.createSocket('udp4');
    const timer = setTimeout(() => (s.close(), reject(new Error(`no udp reply on 127.0.0.1:${port}`))), 5_000);
    s.on('message', (m) => (clearTimeout(timer), s.close(), resolve(m.toString())));
    s.send(text, port, '127.0.0.1');
  });
}
function httpGet(url: string): Promise<string> {
  return new Promise((resolve, reject) => {
    http.get(url, { timeout: 5_000 }, (res) => {
      let body = '';
      res.on('data', (d) => (body += d));
      res.on('end', () => resolve(body));
    }).on('error', reject);
  });
}

let before: string;
let forwarding: string;
let forwarding6: string;

beforeAll(async () => {
  before = hostNetworkState();
  forwarding = readFileSync('/proc/sys/net/ipv4/ip_forward', 'utf8');
  forwarding6 = readFileSync('/proc/sys/net/ipv6/conf/all/forwarding', 'utf8');
  t = await tempHost();
});
afterAll(async () => {
  for (const i of await t.host.list().catch(() => [])) await i.delete({ force: true }).catch(() => undefined);
  for (const n of made) await t.host.networks.delete(n).catch(() => undefined);
  for (const n of made) if (linkExists(n)) execFileSync('ip', ['link', 'delete', 'dev', n]);
  writeFileSync('/proc/sys/net/ipv4/ip_forward', forwarding);
  writeFileSync('/proc/sys/net/ipv6/conf/all/forwarding', forwarding6);
  await t?.dispose();
  expect(hostNetworkState()).toBe(before);
});

async function network(suffix: string, config: Record<string, string> = {}) {
  const name = netName(suffix);
  made.push(name);
  return t.host.networks.create(name, { 'ipv4.nat': 'false', ...config });
}

describe('bad input: a typed error, and no link, rule or process left', () => {
  test('names, keys, subnets', async () => {
    await expect(t.host.networks.create('a-name-far-too-long')).rejects.toThrow(/invalid network name .* 1-15/);
    await expect(t.host.networks.create('bad/name')).rejects.toThrow(InvalidArgument);
    await expect(t.host.networks.create(netName('k'), { 'ipv4.adress': 'auto' } as never)).rejects.toThrow(/unknown network key "ipv4.adress".*did you mean "ipv4.address"/);
    await expect(t.host.networks.create(netName('k'), { 'ipv4.address': '10.0.0.0/24' })).rejects.toThrow(/network's own or broadcast address/);
    await expect(t.host.networks.create(netName('k'), { 'ipv4.dhcp': 'maybe' })).rejects.toThrow(/bad value for network key "ipv4.dhcp"/);
    // The host's own subnet (its default route's link).
    const hostRoute = (JSON.parse(execFileSync('ip', ['-json', '-4', 'route', 'show']).toString()) as Array<{ dst: string; prefsrc?: string }>).find((r) => r.dst !== 'default' && r.prefsrc);
    if (hostRoute) {
      const [net, prefix] = hostRoute.dst.split('/');
      const inside = net.replace(/\.\d+$/, '.77');
      await expect(t.host.networks.create(netName('k'), { 'ipv4.address': `${inside}/${prefix}` })).rejects.toThrow(/overlaps a route or address of the host/);
    }
    await expect(t.host.networks.create(netName('k'), { 'ipv6.address': 'fd42:1:2::1/48' })).rejects.toThrow(/bad value for network key "ipv6.address": the prefix must be \/64/);
    await expect(t.host.networks.create(netName('k'), { 'ipv6.address': 'fd42:1:2:3::/64' })).rejects.toThrow(/the subnet's own address/);
    await expect(t.host.networks.create(netName('k'), { 'ipv6.address': 'fe80::1/64' })).rejects.toThrow(/link-local/);
    await expect(t.host.networks.create(netName('k'), { 'ipv6.address': '10.1.2.3/24' })).rejects.toThrow(/expected an IPv6 address with a prefix/);
    await expect(t.host.networks.create(netName('k'), { 'ipv6.nat': 'yes' })).rejects.toThrow(/bad value for network key "ipv6.nat"/);
    // The host's own IPv6 subnet, where it has one.
    const hostRoute6 = (JSON.parse(execFileSync('ip', ['-json', '-6', 'route', 'show']).toString()) as Array<{ dst: string }>).find((r) => r.dst.endsWith('/64') && !r.dst.startsWith('fe80:'));
    if (hostRoute6) {
      await expect(t.host.networks.create(netName('k'), { 'ipv6.address': hostRoute6.dst.replace(/::\/64$/, '::77/64') })).rejects.toThrow(/ipv6.address .* overlaps a route or address of the host/);
    }
    expect(linkExists(netName('k'))).toBe(false);
    expect(await t.host.networks.list()).toEqual([]);
  });

  test('a subnet another lxq network has; a name in use; a network in use; bad NICs', async () => {
    const a = await network('a');
    await expect(t.host.networks.create(netName('b'), { 'ipv4.address': a.cidr.replace(/\.1\//, '.5/') })).rejects.toThrow(new RegExp(`overlaps network ${a.name}`));
    await expect(t.host.networks.create(a.name)).rejects.toThrow(AlreadyExists);
    expect(linkExists(netName('b'))).toBe(false);
    const outside = '192.0.2.200';
    await expect(t.host.create(t.name('nic'), { image: 'busybox', devices: { eth0: { type: 'nic', network: a.name, 'ipv4.address': outside } } })).rejects.toThrow(/is not a free host address of network/);
    await expect(t.host.create(t.name('nic'), { image: 'busybox', devices: { eth0: { type: 'nic', network: 'lxqnosuchnet' } } })).rejects.toThrow(/"network" lxqnosuchnet does not exist/);
    await expect(t.host.create(t.name('nic'), { image: 'busybox', devices: { eth0: { type: 'nic', network: a.name, hwaddr: '01:00:00:00:00:01' } } })).rejects.toThrow(/unicast MAC/);
    const fixed = a.cidr.replace(/\.1\/24$/, '.40');
    const c = await t.host.create(t.name('nic'), { image: 'busybox', devices: { eth0: { type: 'nic', network: a.name, 'ipv4.address': fixed } } });
    await expect(t.host.create(t.name('nic'), { image: 'busybox', devices: { eth0: { type: 'nic', network: a.name, 'ipv4.address': fixed } } })).rejects.toThrow(/already given to device "eth0" of/);
    const err = await t.host.networks.delete(a.name).catch((e) => e);
    expect(err).toBeInstanceOf(Busy);
    expect(err.message).toMatch(new RegExp(`used by ${c.name}`));
    await expect(t.host.networks.update(a.name, { 'ipv4.address': 'auto' })).rejects.toThrow(Busy);
    await c.delete();
    await t.host.networks.delete(a.name);
    expect(linkExists(a.name)).toBe(false);
    await expect(t.host.networks.get(a.name)).rejects.toThrow(NotFound);
  });
});

describe('instances on one bridge', () => {
  let c1: Instance, c2: Instance, vm: Instance;
  let fixed: string;
  let net: Awaited<ReturnType<typeof network>>;
  beforeAll(async () => {
    net = await network('br', { 'ipv6.address': 'auto' });
    fixed = net.cidr.replace(/\.1\/24$/, '.50');
    c1 = await t.host.create(t.name('web'), { image: 'busybox', devices: { eth0: { type: 'nic', network: net.name, 'ipv4.address': fixed } } });
    c2 = await t.host.create(t.name('cli'), { image: 'busybox', devices: { eth0: { type: 'nic', network: net.name } } });
    vm = await t.host.create(t.name('vm'), { type: 'vm', image: 'vm/default', devices: { eth0: { type: 'nic', network: net.name } } });
    await Promise.all([c1.start(), c2.start(), vm.start()]);
  }, 300_000);

  test('the parts run: bridge with its address, dnsmasq; the record is in the host dir', async () => {
    const parts = await net.parts();
    expect(parts.bridge).toBe(true);
    expect(parts.dnsmasq).toBeGreaterThan(0);
    const addr = JSON.parse(execFileSync('ip', ['-json', 'addr', 'show', 'dev', net.name]).toString())[0].addr_info.find((a: { family: string }) => a.family === 'inet');
    expect(`${addr.local}/${addr.prefixlen}`).toBe(net.cidr);
    expect(JSON.parse(readFileSync(path.join(t.dir, 'networks', net.name, 'network.json'), 'utf8')).config['ipv4.address']).toBe(net.cidr);
    const addr6 = JSON.parse(execFileSync('ip', ['-json', '-6', 'addr', 'show', 'dev', net.name, 'scope', 'global']).toString())[0].addr_info[0];
    expect(`${addr6.local}/${addr6.prefixlen}`).toBe(net.cidr6);
    expect(net.cidr6).toMatch(/^fd[0-9a-f]{2}:[0-9a-f:]+::1\/64$/);
    // The host takes no router advertisement from its bridge: no instance can route the host.
    expect(readFileSync(`/proc/sys/net/ipv6/conf/${net.name}/accept_ra`, 'utf8').trim()).toBe('0');
  });

  test('static and dynamic leases; waitForAddress for both types', async () => {
    expect(await c1.waitForAddress({ timeout: 30_000 })).toBe(fixed);
    const a2 = await c2.waitForAddress({ timeout: 30_000 });
    expect(a2.startsWith(net.address.replace(/\.1$/, '.'))).toBe(true);
    const av = await vm.waitForAddress({ timeout: 60_000 });
    expect(av.startsWith(net.address.replace(/\.1$/, '.'))).toBe(true);
    const leases = await net.leases();
    expect(leases.map((l) => l.address).sort()).toEqual([fixed, a2, av].sort());
    expect(leases.find((l) => l.address === fixed)?.hwaddr).toBe(c1.devices.eth0.hwaddr);
  });

  test('state() lists each interface: MAC, MTU, addresses with prefix, counters', async () => {
    await c2.waitForAddress();
    const eth0 = (await c2.state()).network.interfaces.find((i) => i.name === 'eth0')!;
    expect(eth0.hwaddr).toBe(c2.devices.eth0.hwaddr);
    expect(eth0.mtu).toBe(1500);
    expect(eth0.addresses).toContainEqual({ family: 'inet', address: await c2.waitForAddress(), prefix: 24 });
    expect(eth0.counters.packetsReceived).toBeGreaterThan(0);
    await (vm as VmInstance).waitForAgent();
    await vm.waitForAddress();
    const veth0 = (await vm.state()).network.interfaces.find((i) => i.name === 'eth0')!;
    expect(veth0.hwaddr).toBe(vm.devices.eth0.hwaddr);
    expect(veth0.addresses).toContainEqual(expect.objectContaining({ family: 'inet', prefix: 24 }));
  });

  test('container → container and container ↔ VM by DNS name; host → instance over HTTP', async () => {
    await Promise.all([c1.waitForAddress(), c2.waitForAddress(), vm.waitForAddress()]);
    expect((await sh(c1, 'mkdir -p /www && echo "hello from $(hostname)" > /www/index.html && httpd -p 8080 -h /www && echo up')).out).toBe('up\n');
    expect((await sh(c2, `wget -qO- http://${c1.name}.lxq:8080/`)).out).toBe(`hello from ${c1.name}\n`);
    expect((await sh(vm, `wget -qO- http://${c1.name}.lxq:8080/`)).out).toBe(`hello from ${c1.name}\n`);
    expect((await sh(c2, `ping -c 1 -W 5 ${vm.name}.lxq >/dev/null && echo reached`)).out).toBe('reached\n');
    expect(await httpGet(`http://${fixed}:8080/`)).toBe(`hello from ${c1.name}\n`);
    // The bridge's own address answers DNS for the instances.
    expect((await sh(c2, `nslookup ${c1.name}.lxq ${net.address}`)).out).toContain(fixed);
  });

  test('IPv6: SLAAC addresses for both types, AAAA names on the bridge, traffic by address and name', async () => {
    const c6 = parseCidr6(net.cidr6!);
    const [a1, a2, av] = await Promise.all([c1, c2, vm].map((i) => i.waitForAddress({ family: 'inet6', timeout: 60_000 })));
    expect(a1).toBe(slaacAddress(c6, c1.devices.eth0.hwaddr!));
    expect(a2).toBe(slaacAddress(c6, c2.devices.eth0.hwaddr!));
    expect(av).toBe(slaacAddress(c6, vm.devices.eth0.hwaddr!));
    const eth0 = (await c1.state()).network.interfaces.find((i) => i.name === 'eth0')!;
    expect(eth0.addresses).toContainEqual({ family: 'inet6', address: a1, prefix: 64 });
    expect((await sh(c1, 'mkdir -p /www6 && echo "six from $(hostname)" > /www6/index.html && httpd -p 8086 -h /www6 && echo up')).out).toBe('up\n');
    expect((await sh(c2, `wget -qO- http://[${a1}]:8086/`)).out).toBe(`six from ${c1.name}\n`);
    expect((await sh(vm, `wget -qO- http://[${a1}]:8086/`)).out).toBe(`six from ${c1.name}\n`);
    expect((await sh(c2, `ping -c 1 -W 5 ${av} >/dev/null && echo reached`)).out).toBe('reached\n');
    // The AAAA record (dnsmasq's ra-names: once the SLAAC address answers its ping), asked of
    // the bridge's IPv6 address; and the host reaching an instance over IPv6.
    const aaaa = `for i in $(seq 60); do nslookup -type=AAAA ${c1.name}.lxq ${net.address6} | grep -q '${a1}' && echo found && break; sleep 0.5; done`;
    expect((await sh(c2, aaaa)).out).toBe('found\n');
    expect(await httpGet(`http://[${a1}]:8086/`)).toBe(`six from ${c1.name}\n`);
  });

  test('IPv6: the host connects to a fresh container right after waitForAddress, every time', async () => {
    // dnsmasq's ra-names pings each SLAAC address as soon as the DHCPv4 lease is granted, before
    // the container has it: the host's connection right after waitForAddress joined that doomed
    // neighbour resolution and failed with EHOSTUNREACH (at the first round, without the fix).
    for (let round = 0; round < 5; round++) {
      const c = await t.host.create(t.name('six'), { image: 'busybox', devices: { eth0: { type: 'nic', network: net.name } } });
      try {
        await c.start();
        await c.waitForAddress({ timeout: 30_000 });
        expect((await sh(c, 'mkdir -p /www && echo "round from $(hostname)" > /www/index.html && httpd -p 80 -h /www && echo up')).out).toBe('up\n');
        const a6 = await c.waitForAddress({ family: 'inet6', timeout: 60_000 });
        expect(await httpGet(`http://[${a6}]/`)).toBe(`round from ${c.name}\n`);
      } finally {
        await c.delete({ force: true });
      }
    }
  }, 240_000);

  test('hot-plug and unplug a NIC on a running container and a running VM', async () => {
    const second = await network('hp');
    try {
      for (const i of [c2, vm]) {
        await i.addDevice('eth1', { type: 'nic', network: second.name });
        const deadline = Date.now() + 60_000;
        let address: string | undefined;
        while (!address && Date.now() < deadline) {
          address = (await i.state()).network.interfaces.find((n) => n.name === 'eth1')?.addresses.find((a) => a.family === 'inet')?.address;
          if (!address) await new Promise((r) => setTimeout(r, 200));
        }
        expect(address?.startsWith(second.address.replace(/\.1$/, '.'))).toBe(true);
        expect(await httpGet(`http://${fixed}:8080/`)).toBe(`hello from ${c1.name}\n`); // the first NIC works on
        await i.removeDevice('eth1');
        expect((await i.state()).network.interfaces.map((n) => n.name)).not.toContain('eth1');
      }
      expect(execFileSync('ip', ['-o', 'link', 'show', 'master', second.name]).toString()).toBe('');
    } finally {
      await t.host.networks.delete(second.name);
    }
  });

  test('the network outlives a Node process killed with SIGKILL: dnsmasq and the leases are found again', async () => {
    const pid = (await net.parts()).dnsmasq;
    const leases = await net.leases();
    const script = `
      const { Host } = require(${JSON.stringify(path.join(__dirname, '..', 'lib'))});
      (async () => {
        const host = await Host.open({ path: ${JSON.stringify(t.dir)}, images: ${JSON.stringify(SHARED_IMAGES)} });
        await (await host.get(${JSON.stringify(c2.name)})).stop({ force: true });
        process.kill(process.pid, 'SIGKILL');
      })();`;
    const r = spawnSync(process.execPath, ['-r', path.join(__dirname, 'helpers', 'ts-register.js'), '-e', script], { timeout: 60_000 });
    expect(r.signal).toBe('SIGKILL');
    const again = await (await Host.open({ path: t.dir, images: SHARED_IMAGES })).networks.get(net.name);
    expect((await again.parts()).dnsmasq).toBe(pid);
    expect((await again.leases()).map((l) => l.address).sort()).toEqual(leases.map((l) => l.address).sort());
    await c2.start();
    expect(await c2.waitForAddress({ timeout: 60_000 })).toBe(leases.find((l) => l.hwaddr === c2.devices.eth0.hwaddr)?.address);
  });

  test('a part killed (dnsmasq) comes back when an instance on the network starts', async () => {
    const pid = (await net.parts()).dnsmasq!;
    process.kill(pid, 'SIGKILL');
    // Gone once it has died and been reaped (not at once on a loaded machine).
    for (const end = Date.now() + 60_000; (await net.parts()).dnsmasq !== null && Date.now() < end; ) await new Promise((r) => setTimeout(r, 100));
    expect((await net.parts()).dnsmasq).toBeNull();
    await c2.stop({ force: true });
    await c2.start();
    expect((await net.parts()).dnsmasq).toBeGreaterThan(0);
    expect(await c2.waitForAddress({ timeout: 60_000 })).toBeTruthy();
  });

  test('update: a live key changes in place; delete leaves no link, process, rule or file', async () => {
    await t.host.networks.update(net.name, { 'ipv4.dhcp.ranges': `${net.address.replace(/\.1$/, '.100')}-${net.address.replace(/\.1$/, '.120')}` });
    expect((await net.parts()).dnsmasq).toBeGreaterThan(0);
    const pid = (await net.parts()).dnsmasq!;
    // A deleted instance's lease is released at once (its address is free again).
    const gone = c1.devices.eth0.hwaddr;
    expect((await net.leases()).some((l) => l.hwaddr === gone)).toBe(true);
    await c1.delete({ force: true });
    for (const end = Date.now() + 60_000; (await net.leases()).some((l) => l.hwaddr === gone) && Date.now() < end; ) await new Promise((r) => setTimeout(r, 100));
    expect((await net.leases()).map((l) => l.hwaddr)).not.toContain(gone);
    for (const i of [c2, vm]) await i.delete({ force: true });
    await t.host.networks.delete(net.name);
    expect(linkExists(net.name)).toBe(false);
    // Gone (or a zombie its parent has not reaped yet: no command line any more).
    expect(spawnSync('cat', [`/proc/${pid}/cmdline`]).stdout.toString()).toBe('');
    expect(spawnSync('nft', ['list', 'table', 'ip', `lxq_${net.name}`]).status).not.toBe(0);
    expect(() => readFileSync(path.join(t.dir, 'networks', net.name, 'network.json'))).toThrow();
  });
});

describe('proxy devices: a host port into the instance', () => {
  const freePort = () =>
    new Promise<number>((resolve) => {
      const s = net.createServer().listen(0, '127.0.0.1', () => {
        const { port } = s.address() as net.AddressInfo;
        s.close(() => resolve(port));
      });
    });
  const getUnix = (socketPath: string) =>
    new Promise<string>((resolve, reject) => {
      http.get({ socketPath, path: '/', timeout: 5_000 }, (res) => {
        let body = '';
        res.on('data', (d) => (body += d));
        res.on('end', () => resolve(body));
      }).on('error', reject);
    });

  test('a container without a NIC: the connection is made in its own network namespace (its loopback)', async () => {
    const port = await freePort();
    const c = await t.host.create(t.name('px'), { image: 'busybox', devices: { web: { type: 'proxy', listen: `tcp:127.0.0.1:${port}`, connect: 'tcp:127.0.0.1:80' } } });
    try {
      await c.start();
      expect((await sh(c, 'mkdir -p /www && echo "inside $(hostname)" > /www/index.html && httpd -p 127.0.0.1:80 -h /www && echo up')).out).toBe('up\n');
      expect(await httpGet(`http://127.0.0.1:${port}/`)).toBe(`inside ${c.name}\n`);
      // Added live, listening on a unix socket of the host; removed live.
      const sock = path.join(t.dir, 'web.sock');
      await c.addDevice('unixweb', { type: 'proxy', listen: `unix:${sock}`, connect: 'tcp:127.0.0.1:80' });
      expect(await getUnix(sock)).toBe(`inside ${c.name}\n`);
      await c.removeDevice('unixweb');
      await expect(getUnix(sock)).rejects.toThrow();
      // A port already bound: refused, nothing changed.
      const holder = net.createServer().listen(0, '127.0.0.1');
      await new Promise((r) => holder.once('listening', r));
      const taken = (holder.address() as net.AddressInfo).port;
      await expect(c.addDevice('taken', { type: 'proxy', listen: `tcp:127.0.0.1:${taken}`, connect: 'tcp:127.0.0.1:80' })).rejects.toThrow(/"listen" tcp:127.0.0.1:\d+ is already in use/);
      holder.close();
      expect(Object.keys(c.devices)).toEqual(['web']);
      // udp: each peer of the host's socket gets its own socket inside; replies come back to it.
      await c.files.push(udpEchoBinary(), '/bin/udp-echo', { mode: 0o755 });
      expect((await sh(c, 'udp-echo 127.0.0.1 5353 && echo up')).out).toBe('up\n');
      const udpPort = await freePort();
      await c.addDevice('dns', { type: 'proxy', listen: `udp:127.0.0.1:${udpPort}`, connect: 'udp:127.0.0.1:5353' });
      expect(await Promise.all([udpAsk(udpPort, 'one'), udpAsk(udpPort, 'two')])).toEqual(['echo:one', 'echo:two']);
      await expect(c.addDevice('mixed', { type: 'proxy', listen: 'udp:127.0.0.1:5354', connect: 'tcp:127.0.0.1:53' })).rejects.toThrow(/"listen" is udp and "connect" is tcp: udp is forwarded to udp only/);
      await c.removeDevice('dns');
      await expect(udpAsk(udpPort, 'gone')).rejects.toThrow(/no udp reply/);
      // Gone when the instance stops, back when it starts.
      await c.stop({ force: true });
      await expect(httpGet(`http://127.0.0.1:${port}/`)).rejects.toThrow(/ECONNREFUSED/);
      await c.start();
      await sh(c, 'httpd -p 127.0.0.1:80 -h /www');
      expect(await httpGet(`http://127.0.0.1:${port}/`)).toBe(`inside ${c.name}\n`);
    } finally {
      await c.delete({ force: true });
    }
    await expect(httpGet(`http://127.0.0.1:${port}/`)).rejects.toThrow(/ECONNREFUSED/);
  });

  test('a VM: the connection goes to the guest\'s address on its network', async () => {
    const n = await network('px');
    const port = await freePort();
    const vm = await t.host.create(t.name('pxvm'), {
      type: 'vm',
      image: 'vm/default',
      devices: { eth0: { type: 'nic', network: n.name }, web: { type: 'proxy', listen: `tcp:127.0.0.1:${port}`, connect: 'tcp:127.0.0.1:80' } },
    });
    try {
      await vm.start();
      await vm.waitForAddress({ timeout: 60_000 });
      expect((await sh(vm, 'mkdir -p /www && echo "inside the vm" > /www/index.html && httpd -p 80 -h /www && echo up')).out).toBe('up\n');
      expect(await httpGet(`http://127.0.0.1:${port}/`)).toBe('inside the vm\n');
      await vm.files.push(udpEchoBinary(), '/bin/udp-echo', { mode: 0o755 });
      expect((await sh(vm, 'udp-echo 0.0.0.0 5353 && echo up')).out).toBe('up\n');
      const udpPort = await freePort();
      await vm.addDevice('dns', { type: 'proxy', listen: `udp:127.0.0.1:${udpPort}`, connect: 'udp:127.0.0.1:5353' });
      expect(await udpAsk(udpPort, 'vm')).toBe('echo:vm');
    } finally {
      await vm.delete({ force: true });
      await t.host.networks.delete(n.name);
    }
  });
});

test('nictype bridged: a NIC on a host bridge lxq does not manage (no DHCP there: the link and its MAC)', async () => {
  const bridge = netName('hb');
  made.push(bridge);
  execFileSync('ip', ['link', 'add', 'name', bridge, 'type', 'bridge']);
  execFileSync('ip', ['link', 'set', 'dev', bridge, 'up']);
  const c = await t.host.create(t.name('hb'), { image: 'busybox', devices: { eth0: { type: 'nic', nictype: 'bridged', parent: bridge } } });
  try {
    await c.start();
    const eth0 = (await c.state()).network.interfaces.find((i) => i.name === 'eth0');
    expect(eth0?.hwaddr).toBe(c.devices.eth0.hwaddr);
    expect(execFileSync('ip', ['-o', 'link', 'show', 'master', bridge]).toString()).toMatch(/lxq[0-9a-f]{8}/);
    await expect(t.host.create(t.name('hb'), { image: 'busybox', devices: { eth0: { type: 'nic', nictype: 'bridged', parent: 'lxqnosuchbr' } } })).rejects.toThrow(/"parent" lxqnosuchbr is not a link of this host/);
  } finally {
    await c.delete({ force: true });
    execFileSync('ip', ['link', 'delete', 'dev', bridge]);
  }
});

test('a DHCP client pid file left from an earlier boot does not pass for a running client', async () => {
  const n = await network('pid');
  const c = await t.host.create(t.name('pid'), { image: 'busybox', devices: { eth0: { type: 'nic', network: n.name } } });
  try {
    // pid 1 is always alive: the image's DHCP loop must not take the stale file for its client.
    await c.files.write('/run/udhcpc.eth0.pid', '1\n');
    await c.start();
    const address = await c.waitForAddress({ timeout: 30_000 });
    expect((await sh(c, 'ip -4 addr show eth0')).out).toContain(address);
  } finally {
    await c.delete({ force: true });
    await t.host.networks.delete(n.name);
  }
});

test('ipv4.nat: masquerade in a table of lxq\'s own, gone with the network', async () => {
  const n = await network('nat', { 'ipv4.nat': 'true' });
  const table = execFileSync('nft', ['list', 'table', 'ip', `lxq_${n.name}`]).toString();
  expect(table).toMatch(/masquerade/);
  expect(table).toContain(`ip saddr ${n.cidr.replace(/\.1\//, '.0/')}`);
  await t.host.networks.delete(n.name);
  expect(spawnSync('nft', ['list', 'table', 'ip', `lxq_${n.name}`]).status).not.toBe(0);
});

test('ipv6.nat: masquerade in an ip6 table of lxq\'s own, gone with the network', async () => {
  const n = await network('nat6', { 'ipv6.address': 'auto', 'ipv6.nat': 'true' });
  expect(await n.parts()).toMatchObject({ nat: false, nat6: true });
  const table = execFileSync('nft', ['list', 'table', 'ip6', `lxq_${n.name}`]).toString();
  expect(table).toContain(`ip6 saddr ${n.cidr6!.replace(/::1\/64$/, '::/64')} ip6 daddr != ${n.cidr6!.replace(/::1\/64$/, '::/64')} masquerade`);
  await t.host.networks.update(n.name, { 'ipv6.nat': 'false' });
  expect(spawnSync('nft', ['list', 'table', 'ip6', `lxq_${n.name}`]).status).not.toBe(0);
  await t.host.networks.delete(n.name);
  expect(linkExists(n.name)).toBe(false);
});

test('the README network table is the one generated from the declarations', () => {
  const readme = readFileSync(path.join(__dirname, '..', 'README.md'), 'utf8');
  expect(/<!-- network:begin -->\n([\s\S]*?)\n<!-- network:end -->/.exec(readme)?.[1]).toBe(describeNetworkKeys());
});
