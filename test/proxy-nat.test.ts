/**
 * Proxy devices with `nat: true`: DNAT rules in a table of lxq's own per running instance, no
 * proxy process. A real container with a static address on this file's own lxq network, servers
 * inside; reached from the host through the bridge's own address (tcp, a port range, udp; IPv6
 * through the bridge's IPv6 address on a network of the test's own). The
 * rules come with the start, go with the stop, a removed device and the delete, and a process that
 * died leaves them only until the next Host.open after the instance's end. Traffic goes only to
 * the bridge's address and to the address lxq gave the container.
 *
 * Not from the host's loopback: the kernel drops loopback traffic DNATed out of another link
 * unless that link has route_localnet, which lxq does not set (it would open the host's loopback
 * services to the bridge's instances); such a listen address is refused.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import * as dgram from 'node:dgram';
import { existsSync, readFileSync } from 'node:fs';
import * as http from 'node:http';
import * as path from 'node:path';

import { type Instance, InvalidArgument } from '../lib';
import { hostLink } from '../lib/devices/nic';
import type { BaseInstance } from '../lib/instance/base';
import { formatIpv6, parseIpv6 } from '../lib/network/addresses';
import { proxyNatTable } from '../lib/network/proxy-nat';
import { runNode, sh, SHARED_IMAGES, tempHost, type TestHost } from './helpers/host';

jest.setTimeout(240_000);

let t: TestHost;
const tag = Math.random().toString(16).slice(2, 8);
/**
 * The proxy tables of this file's own instances, made or only named (other test files and other
 * lxq hosts may make and remove tables of their own meanwhile: a whole-list comparison failed
 * beside them).
 */
const nftTables = () => {
  const own = new Set(named.map((n) => `table inet ${proxyNatTable(path.join(t.dir, 'instances', n))}`));
  return execFileSync('nft', ['list', 'tables']).toString().split('\n').filter((l) => own.has(l)).sort();
};
/** Every instance name this file uses, for nftTables. */
const named: string[] = [];
const nameOf = (prefix: string) => {
  const n = t.name(prefix);
  named.push(n);
  return n;
};
const natTable = (i: Instance) => spawnSync('nft', ['list', 'table', 'inet', proxyNatTable((i as BaseInstance).dir)]);
const ok = async (i: Instance, script: string) => {
  const r = await sh(i, script);
  if (r.code !== 0) throw new Error(`${script}: exit ${r.code}: ${r.err}`);
  return r.out;
};
const get = (host: string, port: number) =>
  new Promise<string>((resolve, reject) => {
    http.get({ host, port, path: '/', agent: false, timeout: 10_000 }, (res) => {
      let body = '';
      res.on('data', (d) => (body += d));
      res.on('end', () => resolve(body));
    }).on('error', reject).on('timeout', function (this: http.ClientRequest) {
      this.destroy(new Error('timeout'));
    });
  });
const refused = (p: Promise<unknown>) => p.then(() => 'answered', (e: NodeJS.ErrnoException) => e.code ?? e.message);
/** One datagram and the first reply to it (a datagram may be lost: a few tries). */
async function udpAsk(host: string, port: number, text: string): Promise<string> {
  for (let n = 0; n < 5; n++) {
    const reply = await new Promise<string | undefined>((resolve) => {
      const s = dgram.createSocket('udp4');
      const done = (v: string | undefined) => {
        clearTimeout(timer);
        s.close();
        resolve(v);
      };
      const timer = setTimeout(() => done(undefined), 3_000);
      s.on('message', (m) => done(m.toString()));
      s.on('error', () => done(undefined));
      s.send(text, port, host);
    });
    if (reply !== undefined) return reply;
  }
  throw new Error('no udp reply');
}
const port = () => 20_000 + Math.floor(Math.random() * 20_000);

let before: string[];
let net: { name: string; address: string };
beforeAll(async () => {
  before = nftTables();
  t = await tempHost();
  const name = `lxq${tag}n`;
  net = await t.host.networks.create(name, { 'ipv4.nat': 'false' });
});
afterAll(async () => {
  for (const i of await t.host.list().catch(() => [])) await i.delete({ force: true }).catch(() => undefined);
  await t?.dispose();
  expect(nftTables()).toEqual(before);
});

test('tcp, a port range, udp: forwarded by rules of its own table from the bridge\'s address; live add and remove; gone at stop and delete', async () => {
  const own = net.address.replace(/\.1$/, '.50');
  const [p, q, u, r] = [port(), port(), port(), port()];
  const c = await t.host.create(nameOf('nat'), {
    image: 'busybox',
    devices: {
      eth0: { type: 'nic', network: net.name, 'ipv4.address': own },
      web: { type: 'proxy', nat: 'true', listen: `tcp:${net.address}:${p}`, connect: `tcp:${own}:80` },
      range: { type: 'proxy', nat: 'true', listen: `tcp:${net.address}:${q}-${q + 1}`, connect: 'tcp:0.0.0.0:8080-8081' },
      dns: { type: 'proxy', nat: 'true', listen: `udp:${net.address}:${u}`, connect: `udp:${own}:5353` },
    },
  });
  const beforeStart = nftTables();
  expect(natTable(c).status).not.toBe(0);
  await c.start();
  expect(await c.waitForAddress({ timeout: 60_000 })).toBe(own);
  const rules = natTable(c).stdout.toString();
  expect(rules).toContain(`ip daddr ${net.address} tcp dport ${p} dnat ip to ${own}:80`);
  expect(rules).toContain(`ip daddr ${net.address} udp dport ${u} dnat ip to ${own}:5353`);
  expect(nftTables().filter((l) => !beforeStart.includes(l))).toEqual([`table inet ${proxyNatTable((c as BaseInstance).dir)}`]);
  // No proxy process: the kernel forwards.
  expect(spawnSync('flock', ['-n', path.join((c as BaseInstance).dir, 'proxy.lock'), 'true']).status).toBe(0);
  execFileSync('gcc', ['-static', '-O2', '-o', path.join(t.dir, 'udp-echo'), path.join(__dirname, 'helpers', 'udp-echo.c')]);
  await c.files.push(path.join(t.dir, 'udp-echo'), '/bin/udp-echo', { mode: 0o755 });
  await ok(c, `for d in 80 8080 8081; do mkdir -p /www$d && echo "port $d" > /www$d/index.html && httpd -p ${own}:$d -h /www$d; done; udp-echo ${own} 5353`);
  expect(await get(net.address, p)).toBe('port 80\n');
  expect(await get(net.address, q)).toBe('port 8080\n');
  expect(await get(net.address, q + 1)).toBe('port 8081\n');
  expect(await udpAsk(net.address, u, 'one')).toBe('echo:one');
  // Live: removed, its rules with it; added, its rule written; the others served throughout.
  await c.removeDevice('range');
  expect(natTable(c).stdout.toString()).not.toContain(`dport ${q}`);
  expect(await refused(get(net.address, q))).toBe('ECONNREFUSED');
  await c.addDevice('more', { type: 'proxy', nat: 'true', listen: `tcp:${net.address}:${r}`, connect: `tcp:${own}:8081` });
  expect(await get(net.address, r)).toBe('port 8081\n');
  expect(await get(net.address, p)).toBe('port 80\n');
  // A live change that names no static address: refused, nothing changed.
  await expect(c.addDevice('bad', { type: 'proxy', nat: 'true', listen: `tcp:${net.address}:${port()}`, connect: 'tcp:10.254.254.254:80' })).rejects.toThrow(/device "bad": "connect": 10.254.254.254 must be one of the instance's static IPv4 addresses/);
  expect(Object.keys(c.devices).sort()).toEqual(['dns', 'eth0', 'more', 'web']);
  await c.stop({ force: true });
  expect(natTable(c).status).not.toBe(0);
  expect(nftTables()).toEqual(beforeStart);
  expect(await refused(get(net.address, p))).toBe('ECONNREFUSED');
  await c.start();
  expect(natTable(c).stdout.toString()).toContain(`dport ${r} dnat ip to ${own}:8081`);
  await c.delete({ force: true });
  expect(nftTables()).toEqual(beforeStart);
});

test('IPv6: a static IPv6 address reached through the bridge\'s IPv6 address, beside IPv4 on the same NIC; from another instance on the bridge too', async () => {
  // A network of its own with IPv6 (the file's has none), removed at the end.
  const net6 = await t.host.networks.create(`lxq${tag}6`, { 'ipv4.nat': 'false', 'ipv6.address': 'auto', 'ipv6.nat': 'false' });
  const own = net6.address.replace(/\.1$/, '.52');
  const v6 = formatIpv6(parseIpv6(net6.address6!));
  const own6 = formatIpv6(parseIpv6(v6) + 0x51n); // ::52 in the bridge's /64
  const [p4, p6] = [port(), port()];
  const a = await t.host.create(nameOf('nat6'), {
    image: 'busybox',
    devices: {
      eth0: { type: 'nic', network: net6.name, 'ipv4.address': own, 'ipv6.address': own6, 'security.ipv6_filtering': 'true' }, // (lxq's rule for a static IPv6 address)
      web: { type: 'proxy', nat: 'true', listen: `tcp:${net6.address}:${p4}`, connect: `tcp:${own}:80` },
      web6: { type: 'proxy', nat: 'true', listen: `tcp:[${v6}]:${p6}`, connect: `tcp:[${own6}]:80` },
    },
  });
  try {
    await a.start();
    await a.waitForAddress({ timeout: 60_000 });
    expect(natTable(a).stdout.toString()).toContain(`ip6 daddr ${v6} tcp dport ${p6} dnat ip6 to [${own6}]:80`);
    await ok(a, 'mkdir -p /www && echo "inside $(hostname)" > /www/index.html && httpd -p 80 -h /www');
    // A bridged NIC's static IPv6 address is not handed out (no stateful DHCPv6, as LXD without
    // it): configured inside as its user would, then usable (duplicate detection over).
    await ok(a, `ip -6 addr add ${own6}/64 dev eth0`);
    const usable = async () => (await ok(a, 'ip -6 -o addr show dev eth0')).split('\n').some((l) => / inet6 ([0-9a-f:]+)\//.test(l) && formatIpv6(parseIpv6(/ inet6 ([0-9a-f:]+)\//.exec(l)![1])) === own6 && !l.includes('tentative'));
    const deadline = Date.now() + 60_000;
    while (!(await usable())) {
      if (Date.now() > deadline) throw new Error(`${own6} never usable in ${a.name}: ${await ok(a, 'ip -6 -o addr')}`);
      await new Promise((r) => setTimeout(r, 200));
    }
    expect(await get(net6.address, p4)).toBe(`inside ${a.name}\n`);
    expect(await get(v6, p6)).toBe(`inside ${a.name}\n`);
    // The instance itself through its own listen addresses: its bridge port is in hairpin mode (as LXD's).
    expect(readFileSync(`/sys/class/net/${hostLink((a as BaseInstance).dir, 'eth0')}/brport/hairpin_mode`, 'utf8').trim()).toBe('1');
    expect((await ok(a, `printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 10 ${net6.address} ${p4} | tail -1`)).trim()).toBe(`inside ${a.name}`);
    // Over IPv6 from its static address (the masquerade that brings the answer back matches it, as
    // LXD's rule: a connection from another of its addresses, SLAAC's, gets no answer). busybox's nc
    // cannot choose its source: a route does.
    await ok(a, `ip -6 route add ${v6} dev eth0 src ${own6}`);
    expect((await ok(a, `printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 10 ${v6} ${p6} | tail -1`)).trim()).toBe(`inside ${a.name}`);
    // From another instance on the bridge, through the listen addresses (hairpin; this host has
    // br_netfilter loaded, as LXD expects for it). busybox's wget crashes in this image: nc.
    const b = await t.host.create(nameOf('nathp'), { image: 'busybox', devices: { eth0: { type: 'nic', network: net6.name } } });
    try {
      await b.start();
      await b.waitForAddress({ timeout: 60_000 });
      expect((await ok(b, `printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 10 ${net6.address} ${p4} | tail -1`)).trim()).toBe(`inside ${a.name}`);
      // Over IPv6 once its SLAAC address is usable.
      const until6 = Date.now() + 60_000;
      while (!/ inet6 fd[0-9a-f:]+\/64 scope global(?!.*tentative)/.test(await ok(b, 'ip -6 -o addr show dev eth0'))) {
        if (Date.now() > until6) throw new Error(`${b.name} has no usable global IPv6 address`);
        await new Promise((r) => setTimeout(r, 200));
      }
      expect((await ok(b, `printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 10 ${v6} ${p6} | tail -1`)).trim()).toBe(`inside ${a.name}`);
    } finally {
      await b.delete({ force: true });
    }
  } finally {
    await a.delete({ force: true });
    await t.host.networks.delete(net6.name);
  }
});

test('a process that dies with its instance running: the rules stay while it runs, and the next Host.open after its end sweeps them', async () => {
  const own = net.address.replace(/\.1$/, '.51');
  const name = nameOf('natk');
  const script = `
    const lxq = require(${JSON.stringify(path.join(__dirname, '..', 'lib'))});
    (async () => {
      const host = await lxq.Host.open({ path: ${JSON.stringify(t.dir)}, images: ${JSON.stringify(SHARED_IMAGES)} });
      const c = await host.create(${JSON.stringify(name)}, { image: 'busybox', devices: {
        eth0: { type: 'nic', network: ${JSON.stringify(net.name)}, 'ipv4.address': ${JSON.stringify(own)} },
        web: { type: 'proxy', nat: 'true', listen: 'tcp:${net.address}:${port()}', connect: 'tcp:${own}:80' },
      } });
      await c.start();
      process.kill(process.pid, 'SIGKILL');
    })();`;
  await runNode(['-r', path.join(__dirname, 'helpers', 'ts-register.js'), '-e', script]).catch(() => undefined); // killed by itself, its instance running
  const c = await t.host.get(name);
  expect(await c.status()).toBe('running');
  expect(natTable(c).status).toBe(0);
  // The instance's process the rules are bound to, from their mark.
  const mark = path.join('/run/lxq/proxy-nat', proxyNatTable((c as BaseInstance).dir));
  const bound = Number(readFileSync(mark, 'utf8').split(' ')[0]);
  expect(existsSync(`/proc/${bound}`)).toBe(true);
  // Stopped behind lxq's back (as a poweroff inside would): no lxq process removes the table at
  // that moment; the next Host.open does (any host's: the sweep is host-wide, so another test
  // file's Host.open meanwhile may be the one).
  await sh(c, 'poweroff -f').catch(() => undefined); // the exec may end with the container
  const deadline = Date.now() + 120_000;
  while ((await c.status()) !== 'stopped' || existsSync(`/proc/${bound}`)) {
    if (Date.now() > deadline) throw new Error('the container did not stop');
    await new Promise((r) => setTimeout(r, 200));
  }
  const { Host } = await import('../lib');
  const other = await Host.open({ path: t.dir, images: SHARED_IMAGES });
  await other.close();
  expect(natTable(c).status).not.toBe(0);
});

test('bad input: a typed error naming the key, nothing started and no rule left', async () => {
  const tables = nftTables();
  const nic = { type: 'nic', network: net.name } as const;
  const bad: Array<[Record<string, string>, RegExp]> = [
    [{ listen: `tcp:127.0.0.1:${port()}`, connect: 'tcp:0.0.0.0:80' }, /"listen": 127.0.0.1 is a loopback address, which nat mode cannot forward/],
    [{ listen: `tcp:0.0.0.0:${port()}`, connect: 'tcp:0.0.0.0:80' }, /cannot listen on the wildcard address 0.0.0.0 in nat mode/],
    [{ listen: 'unix:/run/lxq-nat-test.sock', connect: 'tcp:0.0.0.0:80' }, /"nat": proxying unix <-> tcp is not supported when using NAT/],
    [{ listen: `tcp:${net.address}:${port()}`, connect: 'tcp:0.0.0.0:80', proxy_protocol: 'true' }, /"proxy_protocol": the PROXY header can only be sent to tcp servers in non-nat mode/],
    [{ listen: `tcp:${net.address}:${port()}`, connect: 'tcp:0.0.0.0:80', bind: 'instance' }, /"nat": only host-bound proxies can use NAT/],
    [{ listen: `tcp:${net.address}:${port()}`, connect: 'tcp:[fd00::1]:80' }, /cannot mix IP versions/],
  ];
  for (const [keys, why] of bad) {
    const made = t.host.create(nameOf('natbad'), { image: 'busybox', devices: { eth0: nic, p: { type: 'proxy', nat: 'true', ...keys } as never } });
    await expect(made).rejects.toThrow(InvalidArgument);
    await expect(made).rejects.toThrow(why);
  }
  // No static address: refused at the start, before anything runs (LXD checks it there too).
  const c = await t.host.create(nameOf('natnone'), { image: 'busybox', devices: { eth0: nic, p: { type: 'proxy', nat: 'true', listen: `tcp:${net.address}:${port()}`, connect: 'tcp:0.0.0.0:80' } } });
  await expect(c.start()).rejects.toThrow(/device "p": "connect": the instance has no static IPv4 address/);
  await expect(c.start()).rejects.toThrow(InvalidArgument);
  expect(await c.status()).toBe('stopped');
  expect(nftTables()).toEqual(tables);
  await c.delete();
});
