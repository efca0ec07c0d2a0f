/**
 * limits.ingress, limits.egress and limits.max of bridged NICs, measured with iperf3 (the host's
 * own binary, given to a busybox container by bind mounts) between a container and its network's
 * bridge address, on this file's own lxq network: what passes is within 20 % of the limit. What
 * the container sends is shaped on an ifb link of lxq's own, which goes with the NIC.
 */
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';

import type { Instance } from '../lib';
import { hostLink } from '../lib/devices/nic';
import type { BaseInstance } from '../lib/instance/base';
import { egressLink, egressMissing } from '../lib/network/tc';
import { tempHost, type TestHost } from './helpers/host';
import { IPERF_DISKS, IPERF_ENV, iperfBits } from './helpers/iperf';

jest.setTimeout(300_000);

let t: TestHost;
const tag = Math.random().toString(16).slice(2, 8);
const linkExists = (name: string) => spawnSync('ip', ['link', 'show', 'dev', name]).status === 0;
let net: { name: string; address: string };


/** Mbit/s the receiver got in 5 s of TCP from `c` to the bridge's address (`reverse`: from the bridge to `c`). */
async function measure(c: Instance, reverse: boolean): Promise<number> {
  const port = String(20_000 + Math.floor(Math.random() * 30_000));
  // --forceflush: its "listening" line is written at once, not when a pipe's buffer fills.
  const server = spawn('iperf3', ['-s', '-1', '--forceflush', '-B', net.address, '-p', port], { stdio: ['ignore', 'pipe', 'pipe'] });
  try {
    await new Promise<void>((resolve, reject) => {
      let out = '';
      const timer = setTimeout(() => reject(new Error(`iperf3 server: not listening after 60 s: ${out}`)), 60_000);
      server.stdout.on('data', (d) => (out += d) && out.includes('Server listening') && (clearTimeout(timer), resolve()));
      server.once('exit', (code) => (clearTimeout(timer), reject(new Error(`iperf3 server exited (${code}): ${out}`))));
    });
    const r = await c.exec(['iperf3', '-c', net.address, '-p', port, '-t', '5', '-J', ...(reverse ? ['-R'] : [])], { env: IPERF_ENV, timeout: 60_000 });
    if (r.exitCode !== 0) throw new Error(`iperf3: ${r.stdout.toString().slice(0, 400)} ${r.stderr.toString()}`);
    return iperfBits(r.stdout.toString()) / 1e6;
  } finally {
    server.kill('SIGKILL');
  }
}

beforeAll(async () => {
  t = await tempHost();
  net = await t.host.networks.create(`lxq${tag}l`, { 'ipv4.nat': 'false', 'ipv6.address': 'none' });
});
afterAll(async () => {
  await t?.dispose();
});

test('this kernel can limit what an instance sends (ifb link and mirred action, probed)', async () => {
  expect(await egressMissing()).toBeUndefined();
});

test('limits.egress and limits.ingress: what passes each way is within 20 % of its limit; the ifb link goes with the NIC', async () => {
  const c = await t.host.create(t.name('lim'), { image: 'busybox', devices: { ...IPERF_DISKS, eth0: { type: 'nic', network: net.name, 'limits.egress': '8Mbit', 'limits.ingress': '16Mbit' } } });
  await c.start();
  await c.waitForAddress({ timeout: 60_000 });
  const dev = hostLink((c as BaseInstance).dir, 'eth0');
  const ifb = egressLink(dev);
  expect(execFileSync('tc', ['class', 'show', 'dev', ifb]).toString()).toMatch(/htb 1:10 root .*rate 8Mbit/);
  expect(execFileSync('tc', ['filter', 'show', 'dev', dev, 'ingress']).toString()).toMatch(new RegExp(`Redirect to device ${ifb}`));
  const sent = await measure(c, false);
  const received = await measure(c, true);
  expect(sent).toBeGreaterThan(8 * 0.8);
  expect(sent).toBeLessThan(8 * 1.2);
  expect(received).toBeGreaterThan(16 * 0.8);
  expect(received).toBeLessThan(16 * 1.2);
  await c.stop({ force: true });
  expect(linkExists(ifb)).toBe(false);
  expect(existsSync(`/run/lxq/host-ends/${dev}`)).toBe(false);
  await c.delete();
});

test('limits.max, hot-plugged: both ways within 20 % of it; unplugging removes the ifb link', async () => {
  const c = await t.host.create(t.name('max'), { image: 'busybox', devices: IPERF_DISKS });
  await c.start();
  await c.addDevice('eth0', { type: 'nic', network: net.name, 'limits.max': '12Mbit' });
  await c.waitForAddress({ timeout: 60_000 });
  const ifb = egressLink(hostLink((c as BaseInstance).dir, 'eth0'));
  expect(linkExists(ifb)).toBe(true);
  for (const reverse of [false, true]) {
    const rate = await measure(c, reverse);
    expect(rate).toBeGreaterThan(12 * 0.8);
    expect(rate).toBeLessThan(12 * 1.2);
  }
  await c.removeDevice('eth0');
  expect(linkExists(ifb)).toBe(false);
  await c.delete({ force: true });
});
