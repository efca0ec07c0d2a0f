/**
 * Snapshots, side by side in one run.
 *
 * Containers (stopped): lxq (cp -a of the rootfs, staged and renamed) against liblxc's own
 * `lxc-snapshot` (rsync) on the same container, and LXD 5.0's `dir` driver (a private daemon,
 * the same tree imported from lxq's image) over REST: a busybox rootfs, busybox + 200 MiB of
 * extra files, and debian/12 (a ~240 MiB real root filesystem).
 *
 * VMs (vm/default, TCG): a running 512 MiB guest's stateful snapshot save and load (lxq: QMP
 * `snapshot-save`/`snapshot-load` jobs) against HMP `savevm`/`loadvm` on the same QEMU (what
 * libvirt's internal snapshots run); a stopped disk's snapshot create and restore (lxq) against
 * `qemu-img snapshot -c` / `-a` on the same disk.
 *
 * `--quick`: 2 rounds, busybox and the VM only.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import { Host, type VirtualMachine } from '../lib';
import { LxdStoragePeer } from './peers/lxd-storage';
import { stats, time } from './stats';

const quick = process.argv.includes('--quick');
const rounds = quick ? 2 : 5;
const hasLxc = (() => {
  try {
    execFileSync('which', ['lxc-snapshot', 'rsync'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
})();

const p50 = (xs: number[]) => (xs.length ? stats(xs).p50 : NaN);
const fmt = (x: number) => (Number.isNaN(x) ? 'n/a' : x.toFixed(1));
const ratio = (peer: number, lxq: number) => (Number.isNaN(peer) ? 'n/a' : (peer / lxq).toFixed(2));

/** The pool of lxc-snapshot's containers. */
const DIR_POOL = 'bench-dir';

async function containers(host: Host, dir: string, lxd: LxdStoragePeer | undefined): Promise<void> {
  const lxc = (args: string[]) => execFileSync('lxc-snapshot', ['-P', host.instancesDir, ...args], { stdio: 'ignore' });
  console.log('\n| rootfs | op | lxq p50 ms | lxc-snapshot p50 ms | LXD dir p50 ms | ratio lxc/lxq | ratio LXD/lxq |');
  console.log('|---|---|---|---|---|---|---|');
  const cases = quick ? [{ image: 'busybox', extra: 0 }] : [{ image: 'busybox', extra: 0 }, { image: 'busybox', extra: 200 }, { image: 'debian/12', extra: 0 }];
  for (const { image, extra } of cases) {
    await host.images.ensure(image);
    const name = `bench-${image.replace('/', '-')}-${extra}`;
    const c = await host.create(name, { image });
    // lxc-snapshot gets a container of its own, on a dir pool (a plain directory is what its
    // rsync backend copies; an overlay root is a mount it cannot restore into): its restore
    // destroys the container's directory and clones it back from the snapshot, lxq's record not included.
    if (!(await host.storage.pools.list()).some((p) => p.name === DIR_POOL)) await host.storage.pools.create(DIR_POOL, { driver: 'dir' });
    const forLxc = await host.create(`${name}-lxc`, { image, pool: DIR_POOL });
    const fill = (root: string) => execFileSync('sh', ['-c', `mkdir "${root}/big" && for i in $(seq 1 ${extra / 8}); do head -c 8M /dev/urandom > "${root}/big/f$i"; done`]);
    if (extra) for (const i of [c, forLxc]) fill(path.join(host.instancesDir, i.name, 'rootfs'));
    if (lxd) {
      await lxd.containerOf(host, image, name, dir);
      if (extra) fill(path.join(dir, 'lxd', 'storage-pools', 'bench', 'containers', name, 'rootfs'));
    }
    const r: Record<string, number[]> = { lxqCreate: [], lxqRestore: [], lxcCreate: [], lxcRestore: [], lxdCreate: [], lxdRestore: [] };
    for (let i = 0; i < rounds; i++) {
      r.lxqCreate.push(await time(() => c.snapshots.create(`s${i}`)));
      r.lxqRestore.push(await time(() => c.snapshots.restore(`s${i}`)));
      await c.snapshots.delete(`s${i}`);
      if (hasLxc) {
        r.lxcCreate.push(await time(() => lxc(['-n', forLxc.name])));
        r.lxcRestore.push(await time(() => lxc(['-n', forLxc.name, '-r', 'snap0'])));
        lxc(['-n', forLxc.name, '-d', 'snap0']);
      }
      if (lxd) {
        r.lxdCreate.push(await time(() => lxd.snapshot(name, `s${i}`)));
        r.lxdRestore.push(await time(() => lxd.restore(name, `s${i}`)));
        await lxd.deleteSnapshot(name, `s${i}`);
      }
    }
    const label = `${image}${extra ? ` + ${extra} MiB` : ''}, lxq on its default pool (${(Number(execFileSync('du', ['-s', '-B1', path.join(host.instancesDir, c.name, 'rootfs')], { encoding: 'utf8' }).split('\t')[0]) / 2 ** 20).toFixed(0)} MiB)`;
    for (const op of ['Create', 'Restore']) {
      const a = p50(r[`lxq${op}`]);
      const b = p50(r[`lxc${op}`]);
      const d = p50(r[`lxd${op}`]);
      console.log(`| ${label} | ${op.toLowerCase()} | ${fmt(a)} | ${fmt(b)} | ${fmt(d)} | ${ratio(b, a)} | ${ratio(d, a)} |`);
    }
    await c.delete();
    // Its lxq record went with lxc-snapshot's restore: liblxc removes what is left.
    execFileSync('lxc-destroy', ['-P', host.instancesDir, '-n', forLxc.name, '-f'], { stdio: 'ignore' });
    rmSync(path.join(host.instancesDir, forLxc.name), { recursive: true, force: true });
    if (lxd) await lxd.delete(name);
  }
}

async function vms(host: Host): Promise<void> {
  await host.images.ensure('vm/default');
  const vm = (await host.create('bench-vm', { type: 'vm', image: 'vm/default', config: { 'limits.memory': '512MiB' } })) as VirtualMachine;
  const disk = path.join(host.instancesDir, vm.name, 'disk.qcow2');
  const r: Record<string, number[]> = { save: [], load: [], savevm: [], loadvm: [], create: [], restore: [], qimgCreate: [], qimgApply: [] };
  try {
    await vm.start();
    // A guest that has touched its RAM: 256 MiB of a tmpfs filled, so the saved state is not mostly empty pages.
    await vm.exec(['sh', '-c', 'mkdir -p /mnt/fill && mount -t tmpfs -o size=300m tmpfs /mnt/fill && dd if=/dev/urandom of=/mnt/fill/x bs=1M count=256 2>/dev/null'], { timeout: 300_000 });
    const hmp = (line: string) => vm.qmp.execute<string>('human-monitor-command', { 'command-line': line }, { timeout: 120_000 }).then((out) => {
      if (out.trim()) throw new Error(`HMP ${line}: ${out.trim()}`);
    });
    for (let i = 0; i < rounds; i++) {
      r.save.push(await time(() => vm.snapshots.create(`r${i}`, { stateful: true })));
      r.load.push(await time(() => vm.snapshots.restore(`r${i}`)));
      await vm.snapshots.delete(`r${i}`);
      r.savevm.push(await time(() => hmp(`savevm h${i}`)));
      r.loadvm.push(await time(() => hmp(`loadvm h${i}`)));
      await hmp(`delvm h${i}`);
    }
    const size = Number(JSON.parse(execFileSync('qemu-img', ['info', '-U', '--output=json', disk], { encoding: 'utf8' }))['actual-size']) / 2 ** 20;
    await vm.stop({ force: true });
    for (let i = 0; i < rounds; i++) {
      r.create.push(await time(() => vm.snapshots.create(`d${i}`)));
      r.restore.push(await time(() => vm.snapshots.restore(`d${i}`)));
      await vm.snapshots.delete(`d${i}`);
      r.qimgCreate.push(await time(() => execFileSync('qemu-img', ['snapshot', '-q', '-c', `q${i}`, disk])));
      r.qimgApply.push(await time(() => execFileSync('qemu-img', ['snapshot', '-q', '-a', `q${i}`, disk])));
      execFileSync('qemu-img', ['snapshot', '-q', '-d', `q${i}`, disk]);
    }
    console.log(`\nvm/default, 512 MiB guest with 256 MiB of its RAM written (TCG); disk ${size.toFixed(0)} MiB allocated\n`);
    console.log('| op | lxq p50 ms | peer | peer p50 ms | ratio peer/lxq |');
    console.log('|---|---|---|---|---|');
    const row = (op: string, a: number[], peer: string, b: number[]) => console.log(`| ${op} | ${fmt(p50(a))} | ${peer} | ${fmt(p50(b))} | ${ratio(p50(b), p50(a))} |`);
    row('running, stateful save', r.save, 'HMP savevm', r.savevm);
    row('running, stateful load', r.load, 'HMP loadvm', r.loadvm);
    row('stopped, disk snapshot create', r.create, 'qemu-img snapshot -c', r.qimgCreate);
    row('stopped, disk snapshot restore', r.restore, 'qemu-img snapshot -a', r.qimgApply);
  } finally {
    await vm.delete({ force: true });
  }
}

async function main(): Promise<void> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'lxq-bench-snap-'));
  const host = await Host.open({ path: dir, images: process.env.LXQ_TEST_IMAGES ?? '/var/tmp/lxq-test-images', reap: true });
  const peer = quick ? 'skipped (--quick)' : await LxdStoragePeer.start(dir).catch((e: Error) => e.message);
  const lxd = typeof peer === 'string' ? undefined : peer;
  if (typeof peer === 'string') console.log(`LXD peer: ${peer}`);
  console.log(`${rounds} rounds each, median ms, ${new Date().toISOString()}`);
  try {
    await containers(host, dir, lxd);
    await vms(host);
  } finally {
    for (const i of await host.list().catch(() => [])) await i.delete({ force: true }).catch(() => undefined);
    await lxd?.close();
    await host.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
