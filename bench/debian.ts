/**
 * debian/12, both types, N cycles each:
 *   image build, cold (a store of its own: mmdebstrap + the VM disk) and cached (`ensure` of a
 *   built image in a new store object); container start → `systemctl is-system-running` says
 *   running, and the same for the same container driven by the lxc-* CLI (lxc-start, then
 *   lxc-attach polling systemctl, lxc-stop: what a user of liblxc would otherwise run) and the
 *   same rootfs as an LXD image (lxq's export in LXD's format, imported into a Debian LXD 5.0
 *   started with a LXD_DIR of its own: start over REST → systemd running, graceful stop);
 *   graceful stop of each; VM start → agent answers and →
 *   systemd running under this host's accelerator, with the boot's phases (bench/boot-phases.ts)
 *   and QEMU's CPU time; graceful VM stop; disk and memory per running instance; the same VM
 *   started from the image's saved boot (vm.saved_boot: bench/saved-boot.ts) in each cycle.
 * Usage: node dist/bench/debian.js [--quick] [--vm] [--cycles N]
 *   (quick: one cycle, no cold build; vm: the VM's boot only, no containers, no LXD, no cold build)
 */
import { execFile } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';

import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';

import { Host, Instance } from '../lib';
import type { VmInstance } from '../lib/drivers/vm/vm';
import { ImageStore } from '../lib/images/store';
import { LxdClient } from '../lib/drivers/remote/client';
import { SYSTEMD_RUNNING } from './peers/lxd-storage';
import { ensurePool, ensureProfile, LxdDaemon, lxdBin, startLxd } from '../test/helpers/lxd';
import { addPhases, bootPhases, consoleLogOf, qemuCpuMs } from './boot-phases';
import { savedBootCycle } from './saved-boot';
import { Stats, stats } from './stats';

const run = promisify(execFile);
const SHARED = process.env.LXQ_TEST_IMAGES ?? '/var/tmp/lxq-test-images';

async function systemdRunning(exec: () => Promise<string>, timeoutMs: number): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const state = (await exec().catch(() => '')).trim();
    if (state === 'running' || state === 'degraded') return state;
    if (Date.now() > deadline) throw new Error(`systemd did not come up: ${state}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

const viaLxq = (i: Instance) => async () => (await i.exec(['systemctl', 'is-system-running', '--wait'])).stdout.toString();

/** The same debian/12 rootfs in a Debian LXD of its own: an image imported from lxq's export. */
async function lxdDebian(dir: string, host: Host): Promise<{ client: LxdClient; daemon: LxdDaemon; fingerprint: string } | string> {
  if (!lxdBin()) return 'lxd is not installed';
  const daemon = await startLxd(path.join(dir, 'lxd'), path.join(dir, 'lxd-log'));
  const client = new LxdClient({ socket: daemon.socket });
  await ensurePool(client, 'bench', 'lxq bench/debian.ts');
  await ensureProfile(client, 'bench', 'bench', 'lxq bench/debian.ts');
  const file = path.join(dir, 'debian-12.tar');
  await host.images.export('debian/12', file);
  const fingerprint = createHash('sha256').update(readFileSync(file)).digest('hex');
  await client.wait(await client.request('POST', '/1.0/images', undefined, { stream: file, timeoutMs: 300_000 }), 'POST /1.0/images');
  return { client, daemon, fingerprint };
}

/** LXD: start, then an exec that returns once systemd says running (the same wait as lxq's, inside). */
async function lxdCycle(client: LxdClient, fingerprint: string, name: string, s: Record<string, number[]>): Promise<void> {
  const inst = `/1.0/instances/${name}`;
  await client.call('POST', '/1.0/instances', { name, type: 'container', source: { type: 'image', fingerprint }, profiles: ['bench'] });
  try {
    let t = performance.now();
    await client.call('PUT', `${inst}/state`, { action: 'start', timeout: 30 });
    const op = await client.call('POST', `${inst}/exec`, { command: ['sh', '-c', SYSTEMD_RUNNING], environment: {}, 'wait-for-websocket': false, interactive: false, 'record-output': false });
    if (op.metadata?.return !== 0) throw new Error(`LXD: systemd in ${name} did not come up (exit ${op.metadata?.return})`);
    s['container: start → systemd running (LXD 5.0, same rootfs)'].push(performance.now() - t);
    t = performance.now();
    await client.call('PUT', `${inst}/state`, { action: 'stop', force: false, timeout: 30 });
    s['container: graceful stop (LXD 5.0)'].push(performance.now() - t);
  } finally {
    await client.call('PUT', `${inst}/state`, { action: 'stop', force: true }).catch(() => undefined);
    await client.call('DELETE', inst).catch(() => undefined);
  }
}

async function du(p: string): Promise<number> {
  return Number((await run('du', ['-sb', p])).stdout.split('\t')[0]);
}

export async function main(opts: { quick: boolean; vmOnly?: boolean; cycles?: number }): Promise<Record<string, Stats | string>> {
  const cycles = opts.cycles ?? (opts.quick ? 1 : 5);
  let daemon: LxdDaemon | undefined;
  let lxdSkipped: string | undefined;
  const dir = mkdtempSync(path.join(os.tmpdir(), 'lxq-bench-deb-'));
  chmodSync(dir, 0o711);
  const s: Record<string, number[]> = {
    'image build, cold (container)': [], 'image build, cold (vm, after the container tree)': [], 'ensure, cached': [],
    'container: start → systemd running (lxq)': [], 'container: start → systemd running (lxc-start + lxc-attach)': [],
    'container: graceful stop (lxq)': [], 'container: graceful stop (lxc-stop)': [],
    'container: start → systemd running (LXD 5.0, same rootfs)': [], 'container: graceful stop (LXD 5.0)': [],
    'vm: start → agent ping': [], 'vm: start → systemd running': [], 'vm: QEMU CPU time, start → agent': [], 'vm: QEMU CPU time, start → systemd running': [], 'vm: graceful stop': [],
    'container: disk MiB': [], 'container: memory MiB': [], 'vm: disk (overlay) MiB': [], 'vm: QEMU RSS MiB': [],
  };
  try {
    if (!opts.quick && !opts.vmOnly) {
      const cold = await Host.open({ path: path.join(dir, 'cold'), images: path.join(dir, 'cold-images'), reap: true });
      let t = performance.now();
      await cold.images.ensure('debian/12');
      s['image build, cold (container)'].push(performance.now() - t);
      t = performance.now();
      await cold.images.ensure('debian/12', { type: 'vm' });
      s['image build, cold (vm, after the container tree)'].push(performance.now() - t);
    }
    const host = await Host.open({ path: path.join(dir, 'host'), images: SHARED, reap: true });
    await host.images.ensure('debian/12');
    await host.images.ensure('debian/12', { type: 'vm' });
    for (let i = 0; i < 5; i++) {
      const t = performance.now();
      await new ImageStore(SHARED).ensure('debian/12');
      s['ensure, cached'].push(performance.now() - t);
    }
    const lxd = opts.vmOnly ? undefined : await lxdDebian(dir, host);
    if (typeof lxd === 'string') lxdSkipped = lxd;
    else if (lxd) daemon = lxd.daemon;
    // The VM's saved boot (vm.saved_boot), made here if there is none; then one start from it per cycle.
    await savedBootCycle(host, 'debian/12', `bds-${process.pid}-first`, true, s, 'vm: ');
    for (let i = 0; i < cycles; i++) {
      await savedBootCycle(host, 'debian/12', `bds-${process.pid}-${i}`, true, s, 'vm: ');
      if (lxd && typeof lxd !== 'string') await lxdCycle(lxd.client, lxd.fingerprint, `bdl-${process.pid}-${i}`, s);
      if (!opts.vmOnly) await containerCycle(host, i, s);
      await vmCycle(host, i, s);
    }
  } finally {
    await daemon?.stop();
    rmSync(dir, { recursive: true, force: true });
  }
  const out: Record<string, Stats | string> = {};
  for (const [k, v] of Object.entries(s)) out[k] = v.length ? stats(v) : lxdSkipped && k.includes('LXD') ? `not measured: ${lxdSkipped}` : `not measured (${opts.vmOnly ? '--vm' : '--quick'})`;
  return out;
}

/** A container of debian/12: start → systemd running, by lxq and by the lxc-* tools; graceful stops; disk and memory. */
async function containerCycle(host: Host, i: number, s: Record<string, number[]>): Promise<void> {
  const c = await host.create(`bdc-${process.pid}-${i}`, { image: 'debian/12' });
  try {
    let t = performance.now();
    await c.start();
    await systemdRunning(viaLxq(c), 60_000);
    s['container: start → systemd running (lxq)'].push(performance.now() - t);
    s['container: disk MiB'].push((await du(path.join(host.instancesDir, c.name))) / 2 ** 20);
    s['container: memory MiB'].push(((await c.state()).memory.usageBytes ?? NaN) / 2 ** 20);
    t = performance.now();
    await c.stop({ timeout: 30_000 });
    s['container: graceful stop (lxq)'].push(performance.now() - t);
    // The same container through the lxc-* tools (its directory is a liblxc container).
    const P = ['-P', host.instancesDir, '-n', c.name];
    t = performance.now();
    await run('lxc-start', P);
    await systemdRunning(async () => (await run('lxc-attach', [...P, '--', 'systemctl', 'is-system-running', '--wait']).catch((e) => e)).stdout ?? '', 60_000);
    s['container: start → systemd running (lxc-start + lxc-attach)'].push(performance.now() - t);
    t = performance.now();
    await run('lxc-stop', [...P, '-t', '30']);
    s['container: graceful stop (lxc-stop)'].push(performance.now() - t);
  } finally {
    await c.delete({ force: true });
  }
}

/** A VM of debian/12: start → the lxq agent → systemd running, the boot's phases, QEMU's CPU time; graceful stop; disk and memory. */
async function vmCycle(host: Host, i: number, s: Record<string, number[]>): Promise<void> {
  const vm = (await host.create(`bdv-${process.pid}-${i}`, { type: 'vm', image: 'debian/12' })) as VmInstance;
  try {
    const t = performance.now();
    await vm.start();
    const qmp = performance.now() - t;
    await vm.waitForAgent(240_000);
    const agent = performance.now() - t;
    s['vm: start → agent ping'].push(agent);
    s['vm: QEMU CPU time, start → agent'].push(await qemuCpuMs(vm));
    await systemdRunning(viaLxq(vm), 240_000);
    s['vm: start → systemd running'].push(performance.now() - t);
    s['vm: QEMU CPU time, start → systemd running'].push(await qemuCpuMs(vm));
    addPhases(s, 'vm boot ', await bootPhases(vm, consoleLogOf(host.instancesDir, vm.name), t, { qmp, agent }));
    s['vm: disk (overlay) MiB'].push((await du(path.join(host.instancesDir, vm.name, 'disk.qcow2'))) / 2 ** 20);
    s['vm: QEMU RSS MiB'].push(((await vm.state()).memory.usageBytes ?? NaN) / 2 ** 20);
    const t2 = performance.now();
    await vm.stop({ timeout: 60_000 });
    s['vm: graceful stop'].push(performance.now() - t2);
  } finally {
    await vm.delete({ force: true });
  }
}

if (require.main === module) {
  const n = process.argv.indexOf('--cycles');
  main({ quick: process.argv.includes('--quick'), vmOnly: process.argv.includes('--vm'), ...(n > 0 ? { cycles: Number(process.argv[n + 1]) } : {}) }).then(
    (res) => {
      console.log(`debian/12 (${os.cpus().length} CPUs, ${os.cpus()[0].model}, Node ${process.version}); ms unless MiB`);
      console.log('| step | n | min | p50 | p99 | max |\n|---|---|---|---|---|---|');
      for (const [k, v] of Object.entries(res)) {
        if (typeof v === 'string') console.log(`| ${k} | ${v} | | | | |`);
        else console.log(`| ${k} | ${v.n} | ${v.min.toFixed(1)} | ${v.p50.toFixed(1)} | ${v.p99.toFixed(1)} | ${v.max.toFixed(1)} |`);
      }
      const a = res['container: start → systemd running (lxq)'];
      const b = res['container: start → systemd running (lxc-start + lxc-attach)'];
      if (typeof a !== 'string' && typeof b !== 'string') console.log(`\ncontainer start → running, lxc-* / lxq (p50): ${(b.p50 / a.p50).toFixed(2)}×`);
      const l = res['container: start → systemd running (LXD 5.0, same rootfs)'];
      if (typeof a !== 'string' && typeof l !== 'string') console.log(`container start → running, LXD / lxq (p50): ${(l.p50 / a.p50).toFixed(2)}×`);
    },
    (e) => {
      console.error(e);
      process.exit(1);
    },
  );
}
