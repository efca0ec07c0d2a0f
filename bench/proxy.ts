/**
 * Proxy device throughput against a direct connection, side by side in one run: iperf3 (the
 * host's own, bind-mounted into a busybox container: test/helpers/iperf.ts) sends from the
 * container to the host (`-R`) over
 * - `direct`: to the container's static address on this bench's own lxq network;
 * - `proxy process`: a proxy device (`tcp:127.0.0.1:<port>` on the host to the container's
 *   loopback), copied by lxq's proxy process (splice(2) in the kernel, native/splice.cc);
 * - `Node copy`: what the proxy process did before, for comparison in the same run: a Node
 *   process of this bench's own on the host's loopback piping each connection (`pipe()`) to the
 *   container's static address;
 * - `nat`: a `nat: true` proxy device (the bridge's address to the container's static address),
 *   DNAT rules in the kernel.
 * Traffic goes only to the loopback, the bridge's address and the address lxq gave the container.
 * Usage: node dist/bench/proxy.js [--quick] (--quick: 2 s per path, one round; else 5 s, the
 * better of 2 interleaved rounds)
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import { Host, type Instance } from '../lib';
import { IPERF_DISKS } from '../test/helpers/iperf';
import { fromContainer } from './nic-types';

/** A Node process copying through user space, as lxq's proxy process did before splice: its port on the loopback. */
async function nodeCopy(to: string, port: number): Promise<{ port: number; stop: () => void }> {
  const script = `const net = require('node:net');
    const s = net.createServer({ allowHalfOpen: true }, (c) => {
      const i = net.connect({ host: ${JSON.stringify(to)}, port: ${port}, allowHalfOpen: true });
      c.on('error', () => i.destroy()); i.on('error', () => c.destroy());
      c.pipe(i).pipe(c);
    }).listen(0, '127.0.0.1', () => console.log(s.address().port));`;
  const child = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
  const line = await new Promise<string>((resolve, reject) => {
    child.stdout.once('data', (d: Buffer) => resolve(d.toString().trim()));
    child.once('exit', () => reject(new Error('the Node copy process exited')));
  });
  return { port: Number(line), stop: () => child.kill() };
}

async function main(quick: boolean): Promise<string[]> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'lxq-bench-proxy-'));
  const host = await Host.open({ path: dir, images: process.env.LXQ_TEST_IMAGES ?? '/var/tmp/lxq-test-images', reap: true });
  const tag = process.pid.toString(36);
  const bridge = `lxqbp${tag}`.slice(0, 15);
  let c: Instance | undefined;
  let copy: { port: number; stop: () => void } | undefined;
  try {
    const net = await host.networks.create(bridge, { 'ipv4.nat': 'false', 'ipv6.address': 'none' });
    const own = net.address.replace(/\.1$/, '.50');
    const [viaProxy, viaNat] = [20_000 + (process.pid % 10_000), 30_000 + (process.pid % 10_000)];
    c = await host.create(`bp-${tag}`, {
      image: 'busybox',
      devices: {
        ...IPERF_DISKS,
        eth0: { type: 'nic', network: net.name, 'ipv4.address': own },
        px: { type: 'proxy', listen: `tcp:127.0.0.1:${viaProxy}`, connect: 'tcp:127.0.0.1:5201' },
        nat: { type: 'proxy', nat: 'true', listen: `tcp:${net.address}:${viaNat}`, connect: `tcp:${own}:5201` },
      },
    });
    await c.start();
    await c.waitForAddress({ timeout: 60_000 });
    copy = await nodeCopy(own, 5201);
    const paths: Array<[string, string, number]> = [
      ['direct', own, 5201],
      ['proxy process (splice)', '127.0.0.1', viaProxy],
      ['Node copy (before)', '127.0.0.1', copy.port],
      ['nat (DNAT)', net.address, viaNat],
    ];
    const seconds = quick ? 2 : 5;
    const best = paths.map(() => 0);
    const load: number[] = [];
    for (let round = 0; round < (quick ? 1 : 2); round++) {
      for (let i = 0; i < paths.length; i++) {
        load.push(os.loadavg()[0]);
        const r = await fromContainer(c, paths[i][1], seconds, paths[i][2]);
        process.stderr.write(`${paths[i][0]}: ${r.toFixed(1)} MiB/s\n`);
        if (!(r <= best[i])) best[i] = r;
      }
    }
    return [
      `### TCP with iperf3, container → host, ${seconds} s per path, the better of ${quick ? 1 : 2} interleaved rounds (MiB/s; load average ${Math.min(...load).toFixed(1)}–${Math.max(...load).toFixed(1)})`,
      '',
      '| path | MiB/s | vs direct |',
      '|---|---:|---|',
      ...paths.map(([name], i) => `| ${name} | ${best[i].toFixed(1)} | ${(best[i] / best[0]).toFixed(2)}× |`),
    ];
  } finally {
    copy?.stop();
    await c?.delete({ force: true }).catch(() => undefined);
    await host.networks.delete(bridge).catch(() => undefined);
    await host.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

if (require.main === module) {
  main(process.argv.includes('--quick')).then(
    (lines) => {
      console.log(`Proxy devices (${os.cpus().length} CPUs, ${os.cpus()[0].model}, Node ${process.version})\n`);
      console.log(lines.join('\n'));
    },
    (e) => {
      console.error(e);
      process.exit(1);
    },
  );
}
