/**
 * Networks, measured:
 * - container start with and without a NIC (start → RUNNING), and start → first address
 *   (DHCP from the network's dnsmasq) for a container and a VM;
 * - TCP throughput container → container over the bridge, against the same transfer over one
 *   container's loopback (the ceiling), with busybox `nc` on both ends (iperf3 is not in the
 *   busybox image);
 * - N containers on one bridge: time until all have an address, and per container.
 * Usage: node dist/bench/network.js [--quick]
 */
import { mkdtempSync, rmSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import { Host, Instance } from '../lib';
import { stats, time as timed } from './stats';

export async function main(opts: { quick: boolean }): Promise<string[]> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'lxq-bench-net-'));
  const host = await Host.open({ path: dir, images: process.env.LXQ_TEST_IMAGES ?? '/var/tmp/lxq-test-images' });
  const net = await host.networks.create(`lxqb${process.pid.toString(36)}`.slice(0, 15), { 'ipv4.nat': 'false' });
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
    const startPlain: number[] = [], startNic: number[] = [], toAddress: number[] = [];
    for (let i = 0; i < rounds; i++) {
      startPlain.push(await timed(() => plain.start()));
      await plain.stop({ force: true });
      const t0 = performance.now();
      await withNic.start();
      startNic.push(performance.now() - t0);
      await withNic.waitForAddress({ timeout: 30_000 });
      toAddress.push(performance.now() - t0);
      await withNic.stop({ force: true });
    }
    await host.images.ensure('vm/default');
    const vm = await host.create(`bn-vm-${process.pid}`, { type: 'vm', image: 'vm/default', devices: nic });
    made.push(vm);
    const vmAddress: number[] = [];
    for (let i = 0; i < (opts.quick ? 1 : 3); i++) {
      const t0 = performance.now();
      await vm.start();
      await vm.waitForAddress({ timeout: 120_000 });
      vmAddress.push(performance.now() - t0);
      await vm.stop({ force: true });
    }
    lines.push('### Start and first address (ms)', '', '| step | n | min | p50 | p99 |', '|---|---:|---:|---:|---:|');
    lines.push(`| container start, no NIC | ${fmt(startPlain)} |`, `| container start, one NIC (veth on the bridge) | ${fmt(startNic)} |`);
    lines.push(`| container start → first address (DHCP) | ${fmt(toAddress)} |`, `| VM start → first address (DHCP in the guest, seen by the agent or the lease) | ${fmt(vmAddress)} |`);

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
