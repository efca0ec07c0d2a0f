/**
 * TCP throughput with iperf3 per NIC type, against the bridged one: a busybox container per type
 * (the host's own iperf3 bind-mounted in, test/helpers/iperf.ts) sends to the host (`iperf3 -R`
 * from the host: the container is the sender), over
 * - `bridged`: a veth on this bench's own lxq network, to the container's DHCP address;
 * - `macvlan`: a macvlan on one end of a veth pair of the bench's own whose other end is on that
 *   bridge (the host reaches it through the pair), to its DHCP address;
 * - `p2p`: a veth whose host end is on no bridge, to the container's link-local address;
 * - `routed`: a veth whose host end is on no bridge, to the container's static IPv6 address (a /128
 *   route lxq adds); IPv6, as its static IPv4 address was missing inside (the busybox image's DHCP
 *   client running on eth0, likely; not confirmed);
 * and, the cost of a limit, the bridged NIC again with `limits.max: 100Mbit` (ingress htb, egress
 * ifb + htb). Traffic goes only to addresses lxq gave this bench's containers. Every link made
 * here is deleted at the end.
 * Usage: node dist/bench/nic-types.js [--quick] (--quick: 2 s per path, one round; else 5 s, the
 * better of 2 interleaved rounds)
 */
import { execFile, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';

import { Host, type Instance } from '../lib';
import { IPERF_DISKS, IPERF_ENV, iperfBits } from '../test/helpers/iperf';

const execFileP = promisify(execFile);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** MiB/s the host received in `seconds` of TCP sent by `c` (its iperf3 server on 5201, the host's client with -R to `address`:`port`). */
export async function fromContainer(c: Instance, address: string, seconds: number, port = 5201): Promise<number> {
  const server = await c.spawn(['iperf3', '-s', '-1', '-p', '5201'], { env: IPERF_ENV });
  await sleep(500);
  try {
    const { stdout } = await execFileP('iperf3', ['-c', address, '-p', String(port), '-t', String(seconds), '-R', '-J', '--connect-timeout', '5000'], { timeout: (seconds + 30) * 1000 });
    await server.exit;
    return iperfBits(stdout) / 8 / 2 ** 20;
  } catch (e) {
    process.stderr.write(`${c.name}: iperf3 to ${address}: ${(e as Error).message.slice(0, 300)}\n`);
    return NaN; // the server stays until the container is deleted
  }
}

/** `address` once usable in `c` (its duplicate detection over). */
async function usable6(c: Instance, address: string): Promise<string> {
  for (let i = 0; i < 100; i++) {
    const out = (await c.exec(['ip', '-6', '-o', 'addr', 'show', 'dev', 'eth0'])).stdout.toString();
    if (out.includes(`${address}/128`) && !out.includes('tentative')) return address;
    await sleep(200);
  }
  throw new Error(`${c.name}: ${address} not usable on eth0`);
}

/** The container's IPv6 link-local address on `ifname`, once usable. */
async function linkLocal(c: Instance, ifname: string): Promise<string> {
  for (let i = 0; i < 100; i++) {
    const out = (await c.exec(['ip', '-6', '-o', 'addr', 'show', 'dev', ifname, 'scope', 'link'])).stdout.toString();
    const m = /inet6 ([0-9a-f:]+)\//.exec(out);
    if (m && !out.includes('tentative')) return m[1];
    await sleep(200);
  }
  throw new Error(`${c.name}: no usable link-local address on ${ifname}`);
}

async function main(quick: boolean): Promise<string[]> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'lxq-bench-nic-'));
  const host = await Host.open({ path: dir, images: process.env.LXQ_TEST_IMAGES ?? '/var/tmp/lxq-test-images', reap: true });
  const tag = process.pid.toString(36);
  const [bridge, pa, pb, p2p] = ['bn', 'pa', 'pb', 'pp'].map((s) => `lxq${s}${tag}`.slice(0, 15));
  const made: Instance[] = [];
  // A ULA of this run's own (fd00::/8, random 40-bit global id), routed by lxq to the container's host end.
  // Written as ip prints it (no leading zero in a group, as the WHATWG URL parser writes IPv6), since usable6 compares the two.
  const routed6 = new URL(`http://[fd${randomBytes(5).toString('hex').replace(/(..)(....)(....)/, '$1:$2:$3')}::10]`).hostname.slice(1, -1);
  try {
    const net = await host.networks.create(bridge, { 'ipv4.nat': 'false', 'ipv6.address': 'none' });
    await execFileP('ip', ['link', 'add', 'name', pa, 'type', 'veth', 'peer', 'name', pb]);
    await execFileP('ip', ['link', 'set', 'dev', pb, 'master', net.bridge, 'up']);
    await execFileP('ip', ['link', 'set', 'dev', pa, 'up']);
    const nics = {
      bridged: { type: 'nic', network: net.name },
      macvlan: { type: 'nic', nictype: 'macvlan', parent: pa },
      p2p: { type: 'nic', nictype: 'p2p', host_name: p2p },
      // IPv6: a routed container's static IPv4 address was missing inside (the busybox image's lxq-dhcp, likely; not confirmed).
      routed: { type: 'nic', nictype: 'routed', 'ipv6.address': routed6 },
      'bridged, limits.max 100Mbit': { type: 'nic', network: net.name, 'limits.max': '100Mbit' },
    } as const;
    const step = (what: string) => process.stderr.write(`${new Date().toISOString()} ${what}\n`);
    step('create');
    const cs = await Promise.all(Object.values(nics).map((eth0, i) => host.create(`bn-nic${i}-${tag}`, { image: 'busybox', devices: { ...IPERF_DISKS, eth0 } })));
    made.push(...cs);
    step('start');
    await Promise.all(cs.map((c) => c.start()));
    step('addresses');
    const addresses = await Promise.all(
      Object.keys(nics).map((type, i) => (type === 'p2p' ? linkLocal(cs[i], 'eth0').then((a) => `${a}%${p2p}`) : type === 'routed' ? usable6(cs[i], routed6) : cs[i].waitForAddress({ timeout: 60_000 }))),
    );
    const seconds = quick ? 2 : 5;
    const best = Object.keys(nics).map(() => 0);
    const load: number[] = [];
    // Interleaved rounds, the better of each: other work on the host costs a run, never helps it.
    for (let round = 0; round < (quick ? 1 : 2); round++) {
      for (let i = 0; i < cs.length; i++) {
        step(`iperf3 ${Object.keys(nics)[i]}`);
        load.push(os.loadavg()[0]);
        const r = await fromContainer(cs[i], addresses[i], seconds);
        step(`  ${r.toFixed(1)} MiB/s`);
        if (!(r <= best[i])) best[i] = r;
      }
    }
    return [
      `### TCP with iperf3, container → host, ${seconds} s per path, the better of ${quick ? 1 : 2} interleaved rounds (MiB/s; load average ${Math.min(...load).toFixed(1)}–${Math.max(...load).toFixed(1)})`,
      '',
      '| NIC type | path | MiB/s | vs bridged |',
      '|---|---|---:|---|',
      ...Object.keys(nics).map((type, i) => `| ${type} | ${PATHS[type as keyof typeof nics]} | ${best[i].toFixed(1)} | ${(best[i] / best[0]).toFixed(2)}× |`),
    ];
  } finally {
    for (const c of made) await c.delete({ force: true }).catch(() => undefined);
    await host.networks.delete(bridge).catch(() => undefined);
    spawnSync('ip', ['link', 'delete', 'dev', pa]);
    rmSync(dir, { recursive: true, force: true });
  }
}

const PATHS = {
  bridged: 'veth, bridge',
  macvlan: 'macvlan, veth pair, bridge',
  p2p: 'veth (host end on no bridge)',
  routed: 'veth (host end on no bridge), a /128 route (IPv6)',
  'bridged, limits.max 100Mbit': 'veth, ifb (egress shaping), bridge',
};

if (require.main === module) {
  main(process.argv.includes('--quick')).then(
    (lines) => {
      console.log(`NIC types (${os.cpus().length} CPUs, ${os.cpus()[0].model}, Node ${process.version})\n`);
      console.log(lines.join('\n'));
    },
    (e) => {
      console.error(e);
      process.exit(1);
    },
  );
}
