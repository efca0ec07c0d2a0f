/**
 * Networks, measured:
 * - container start with and without a NIC (start → RUNNING), and start → first address
 *   (DHCP from the network's dnsmasq; IPv6 by SLAAC) for a container and a VM, beside LXD's
 *   container on a bridge network of a private LXD 5.0 (the same busybox rootfs and DHCP client);
 * - TCP throughput container → container over the bridge with Debian's iperf3 (in an image
 *   derived from debian/12), against iperf3 over the host's loopback (the ceiling); and with
 *   busybox `nc` against one container's loopback (--quick runs only this one);
 * - N containers on one bridge: time until all have an address, and per container.
 * Usage: node dist/bench/network.js [--quick]
 */
import { execFile, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';

import { Host, Instance } from '../lib';
import { formatCidr, pickFreeSubnet } from '../lib/network/addresses';
import { hostSubnets } from '../lib/network/iproute';
import { LxdClient } from '../lib/drivers/remote/client';
import { ensureBusyboxImage, ensurePool, ensureProfile, LxdDaemon, lxdBin, startLxd } from '../test/helpers/lxd';
import { stats, time as timed } from './stats';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const has = (bin: string) => promisify(execFile)('sh', ['-c', `command -v ${bin}`]).then(() => true, () => false);

/** What a container without an address and its network's dnsmasq say (for a failure's message). */
async function diagnose(i: Instance, networkDir: string): Promise<string> {
  const inside = await i.exec(['sh', '-c', 'ps; ip addr; ls /run'], { timeout: 10_000 }).then((r) => r.stdout.toString(), (e) => `exec failed: ${(e as Error).message}`);
  const log = await readFile(path.join(networkDir, 'dnsmasq.log'), 'utf8').catch(() => '(no dnsmasq log)');
  return `inside ${i.name}:\n${inside}\ndnsmasq (last lines):\n${log.trim().split('\n').slice(-20).join('\n')}`;
}

/** iperf3's JSON result: what the receiver got, MiB/s. */
const iperfMiBs = (json: string) => (JSON.parse(json) as { end: { sum_received: { bits_per_second: number } } }).end.sum_received.bits_per_second / 8 / 2 ** 20;

/**
 * LXD's container on a bridge network of its own LXD (a free /24, no NAT, no IPv6),
 * from lxq's busybox rootfs (whose init runs udhcpc): start → RUNNING, and start → the first
 * IPv4 address LXD's state reports (polled every 50 ms; lxq's waitForAddress polls at 100).
 */
async function lxdOnBridge(dir: string, rounds: number): Promise<{ start: number[]; address: number[] } | string> {
  if (!lxdBin()) return 'lxd is not installed';
  const nftTableBefore = await promisify(execFile)('nft', ['list', 'table', 'inet', 'lxd']).then(() => true, () => false);
  let daemon: LxdDaemon | undefined;
  const bridge = `lxqbl${process.pid.toString(36)}`.slice(0, 15);
  const client = () => new LxdClient({ socket: daemon!.socket });
  try {
    daemon = await startLxd(path.join(dir, 'lxd'), path.join(dir, 'lxd-log'));
    const c = client();
    try {
      await ensurePool(c, 'bench', 'lxq bench/network.ts');
      await ensureProfile(c, 'bench', 'bench', 'lxq bench/network.ts');
      await ensureBusyboxImage(c, 'bench-busybox', dir);
      // A subnet lxq picks (free of the host's routes and lxq's networks): LXD's own "auto" pings
      // candidate addresses, traffic to addresses no instance of this run has.
      const subnet = formatCidr(pickFreeSubnet(await hostSubnets()));
      await c.call('POST', '/1.0/networks', { name: bridge, type: 'bridge', config: { 'ipv4.address': subnet, 'ipv4.nat': 'false', 'ipv6.address': 'none' } });
      const name = `bnl-${process.pid}`;
      const inst = `/1.0/instances/${name}`;
      await c.call('POST', '/1.0/instances', { name, type: 'container', source: { type: 'image', alias: 'bench-busybox' }, profiles: ['bench'], devices: { eth0: { type: 'nic', network: bridge, name: 'eth0' } } });
      const out = { start: [] as number[], address: [] as number[] };
      try {
        for (let i = 0; i < rounds; i++) {
          const t0 = performance.now();
          await c.call('PUT', `${inst}/state`, { action: 'start', timeout: 30 });
          out.start.push(performance.now() - t0);
          for (;;) {
            const state = (await c.request('GET', `${inst}/state`)).metadata;
            const addrs = (state.network?.eth0?.addresses ?? []) as Array<{ family: string }>;
            if (addrs.some((a) => a.family === 'inet')) break;
            if (performance.now() - t0 > 30_000) throw new Error('LXD: no address within 30 s');
            await sleep(50);
          }
          out.address.push(performance.now() - t0);
          await c.call('PUT', `${inst}/state`, { action: 'stop', force: true });
        }
      } finally {
        await c.call('PUT', `${inst}/state`, { action: 'stop', force: true }).catch(() => undefined);
        await c.call('DELETE', inst).catch(() => undefined);
        await c.call('DELETE', `/1.0/networks/${bridge}`).catch(() => undefined);
      }
      return out;
    } finally {
      c.close();
    }
  } catch (e) {
    return `LXD: ${(e as Error).message}`;
  } finally {
    await daemon?.stop();
    // LXD's firewall table, where this run made it (LXD keeps it after its networks are gone).
    if (!nftTableBefore) await promisify(execFile)('nft', ['delete', 'table', 'inet', 'lxd']).catch(() => undefined);
  }
}

export async function main(opts: { quick: boolean }): Promise<string[]> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'lxq-bench-net-'));
  const host = await Host.open({ path: dir, images: process.env.LXQ_TEST_IMAGES ?? '/var/tmp/lxq-test-images', reap: true });
  const net = await host.networks.create(`lxqb${process.pid.toString(36)}`.slice(0, 15), { 'ipv4.nat': 'false', 'ipv6.address': 'auto' });
  const nic = { eth0: { type: 'nic' as const, network: net.name } };
  const lines: string[] = [];
  const made: Instance[] = [];
  const fmt = (xs: number[]) => {
    const s = stats(xs);
    return `${s.n} | ${s.min.toFixed(1)} | ${s.p50.toFixed(1)} | ${s.p99.toFixed(1)}`;
  };
  try {
    const rounds = opts.quick ? 2 : 5;
    const plain = await host.create(`bn-plain-${process.pid}`, { image: 'busybox' });
    const withNic = await host.create(`bn-nic-${process.pid}`, { image: 'busybox', devices: nic });
    made.push(plain, withNic);
    const startPlain: number[] = [], startNic: number[] = [], toAddress: number[] = [], toAddress6: number[] = [];
    for (let i = 0; i < rounds; i++) {
      startPlain.push(await timed(() => plain.start()));
      await plain.stop({ force: true });
      const t0 = performance.now();
      await withNic.start();
      startNic.push(performance.now() - t0);
      await withNic.waitForAddress({ timeout: 30_000 }).catch(async (e) => Promise.reject(new Error(`${(e as Error).message}\n${await diagnose(withNic, net.dir)}`)));
      toAddress.push(performance.now() - t0);
      await withNic.waitForAddress({ family: 'inet6', timeout: 30_000 });
      toAddress6.push(performance.now() - t0);
      await withNic.stop({ force: true });
    }
    await host.images.ensure('vm/default');
    const vm = await host.create(`bn-vm-${process.pid}`, { type: 'vm', image: 'vm/default', devices: nic });
    made.push(vm);
    const vmAddress: number[] = [], vmAddress6: number[] = [];
    for (let i = 0; i < (opts.quick ? 1 : 3); i++) {
      const t0 = performance.now();
      await vm.start();
      await vm.waitForAddress({ timeout: 120_000 });
      vmAddress.push(performance.now() - t0);
      await vm.waitForAddress({ family: 'inet6', timeout: 120_000 });
      vmAddress6.push(performance.now() - t0);
      await vm.stop({ force: true });
    }
    const lxd = await lxdOnBridge(dir, rounds);
    lines.push('### Start and first address (ms)', '', '| step | n | min | p50 | p99 |', '|---|---:|---:|---:|---:|');
    lines.push(`| container start, no NIC | ${fmt(startPlain)} |`, `| container start, one NIC (veth on the bridge) | ${fmt(startNic)} |`);
    lines.push(`| container start → first address (DHCP) | ${fmt(toAddress)} |`, `| container start → first IPv6 address (SLAAC, after duplicate detection) | ${fmt(toAddress6)} |`);
    if (typeof lxd === 'string') lines.push(`| LXD 5.0 container on an LXD bridge | not measured: ${lxd} | | | |`);
    else lines.push(`| LXD 5.0 container start, one NIC on an LXD bridge | ${fmt(lxd.start)} |`, `| LXD 5.0 container start → first address (DHCP, LXD's dnsmasq) | ${fmt(lxd.address)} |`);
    lines.push(`| VM start → first address (DHCP in the guest, seen by the agent or the lease) | ${fmt(vmAddress)} |`, `| VM start → first IPv6 address (SLAAC) | ${fmt(vmAddress6)} |`);
    if (typeof lxd !== 'string') {
      const ratio = (a: number[], b: number[]) => (stats(a).p50 / stats(b).p50).toFixed(2);
      lines.push('', `LXD / lxq at p50: start with a NIC ${ratio(lxd.start, startNic)}×, start → first address ${ratio(lxd.address, toAddress)}×.`);
    }

    // ---- throughput ----
    const mib = opts.quick ? 64 : 512;
    const a = await host.create(`bn-a-${process.pid}`, { image: 'busybox', devices: nic });
    const b = await host.create(`bn-b-${process.pid}`, { image: 'busybox', devices: nic });
    made.push(a, b);
    await Promise.all([a.start(), b.start()]);
    const bAddress = await b.waitForAddress();
    await a.waitForAddress();
    const transfer = async (to: Instance, from: Instance, address: string) => {
      const server = await to.spawn(['sh', '-c', 'nc -l -p 5001 > /dev/null']);
      await new Promise((r) => setTimeout(r, 300));
      const ms = await timed(() => from.exec(['sh', '-c', `dd if=/dev/zero bs=1M count=${mib} 2>/dev/null | nc ${address} 5001`], { timeout: 300_000 }));
      await server.exit;
      return mib / (ms / 1000);
    };
    const loop = await transfer(b, b, '127.0.0.1');
    const bridge = await transfer(b, a, bAddress);
    lines.push('', `### TCP, ${mib} MiB with busybox nc (MiB/s)`, '', '| path | MiB/s | vs loopback |', '|---|---:|---|');
    lines.push(`| one container's loopback (the ceiling) | ${loop.toFixed(0)} | 1.00× |`, `| container → container over the bridge (veth, bridge, veth) | ${bridge.toFixed(0)} | ${(bridge / loop).toFixed(2)}× |`);
    await Promise.all([a.stop({ force: true }), b.stop({ force: true })]);
    lines.push('', ...(opts.quick ? ['(iperf3: full run only)'] : await iperf3(host, nic, made)));

    // ---- many on one bridge ----
    const count = opts.quick ? 5 : 50;
    const many: Instance[] = [];
    for (let i = 0; i < count; i++) many.push(await host.create(`bn-m${i}-${process.pid}`, { image: 'busybox', devices: nic }));
    made.push(...many);
    const t0 = performance.now();
    await Promise.all(many.map((i) => i.start()));
    const started = performance.now() - t0;
    await Promise.all(many.map((i) => i.waitForAddress({ timeout: 120_000 })));
    const all = performance.now() - t0;
    lines.push('', `### ${count} containers on one bridge (ms)`, '', '| step | total | per container |', '|---|---:|---:|');
    lines.push(`| start all (concurrently) | ${started.toFixed(0)} | ${(started / count).toFixed(1)} |`, `| start → every container has its address | ${all.toFixed(0)} | ${(all / count).toFixed(1)} |`);
    lines.push(`| leases held by dnsmasq afterwards | ${(await net.leases()).length} | |`);
  } finally {
    for (const i of made) await i.delete({ force: true }).catch(() => undefined);
    await host.networks.delete(net.name).catch(() => undefined);
    rmSync(dir, { recursive: true, force: true });
  }
  return lines;
}

/**
 * iperf3, 5 s per path: container → container over the bridge (two containers of an image
 * derived from debian/12 with Debian's iperf3), against the host's own iperf3 over loopback.
 */
async function iperf3(host: Host, nic: Record<string, { type: 'nic'; network: string }>, made: Instance[]): Promise<string[]> {
  if (!(await has('iperf3'))) return ['(iperf3: not installed on the host; Debian: apt-get install iperf3)'];
  const seconds = 5;
  const port = 20_000 + (process.pid % 10_000);
  const onHost = async () => {
    const server = spawn('iperf3', ['-s', '-1', '-B', '127.0.0.1', '-p', String(port)], { stdio: 'ignore' });
    await sleep(300);
    const r = iperfMiBs((await promisify(execFile)('iperf3', ['-c', '127.0.0.1', '-p', String(port), '-t', String(seconds), '-J'])).stdout);
    await new Promise((done) => (server.exitCode !== null ? done(null) : server.once('exit', done)));
    return r;
  };
  await host.images.build('bench/iperf3', { from: 'debian/12', packages: ['iperf3'] });
  const [srv, cli] = await Promise.all(['s', 'c'].map((k) => host.create(`bn-i${k}-${process.pid}`, { image: 'bench/iperf3', devices: nic })));
  made.push(srv, cli);
  await Promise.all([srv.start(), cli.start()]);
  const [to] = await Promise.all([srv.waitForAddress({ timeout: 60_000 }), cli.waitForAddress({ timeout: 60_000 })]);
  const run = async (address: string, from: Instance) => {
    const s = await srv.spawn(['iperf3', '-s', '-1', '-p', '5201']);
    await sleep(500);
    const r = await from.exec(['iperf3', '-c', address, '-p', '5201', '-t', String(seconds), '-J'], { timeout: 60_000 });
    await s.exit;
    if (r.exitCode !== 0) throw new Error(`iperf3 in ${from.name}: ${r.stdout.toString().slice(0, 300)} ${r.stderr.toString().slice(0, 300)}`);
    return iperfMiBs(r.stdout.toString());
  };
  // Two interleaved rounds, the better of each path: other work on the host costs a run, never helps it.
  const best = { host: 0, loop: 0, bridge: 0 };
  for (let round = 0; round < 2; round++) {
    best.host = Math.max(best.host, await onHost());
    best.loop = Math.max(best.loop, await run('127.0.0.1', srv));
    best.bridge = Math.max(best.bridge, await run(to, cli));
  }
  const { host: hostLoop, loop, bridge } = best;
  return [
    `### TCP with iperf3, ${seconds} s per path, the better of 2 interleaved rounds (MiB/s)`,
    '',
    '| path | MiB/s | vs the host\'s loopback |',
    '|---|---:|---|',
    `| the host's loopback (the ceiling) | ${hostLoop.toFixed(0)} | 1.00× |`,
    `| one container's loopback | ${loop.toFixed(0)} | ${(loop / hostLoop).toFixed(2)}× |`,
    `| container → container over the bridge (veth, bridge, veth) | ${bridge.toFixed(0)} | ${(bridge / hostLoop).toFixed(2)}× |`,
  ];
}

if (require.main === module) {
  main({ quick: process.argv.includes('--quick') }).then(
    (lines) => {
      console.log(`Networks (${os.cpus().length} CPUs, ${os.cpus()[0].model}, Node ${process.version})\n`);
      console.log(lines.join('\n'));
    },
    (e) => {
      console.error(e);
      process.exit(1);
    },
  );
}
