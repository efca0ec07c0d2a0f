/**
 * Copy, export and import: lxq against what a user would otherwise run on the same tree, side by
 * side in one run: `lxc-copy` (liblxc's own copy) and LXD 5.0's `dir` driver (a private daemon,
 * the same tree imported from lxq's image; `--no-lxd` leaves it out) for host.copy, and plain
 * `tar --zstd` create / extract of the same rootfs (the ceiling) for export and import: a busybox
 * rootfs, one with 200 MiB of extra files, and debian/12. Then VMs (vm/default, TCG, 128 MiB
 * written into the guest's disk): a stopped VM's copy (its overlay) and flattened copy against
 * `cp --sparse` of the overlay and `qemu-img convert`, and a running VM's copy (blockdev-backup
 * job). `--quick`: 2 rounds of the busybox case and the VM.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import { Host } from '../lib';
import { LxdStoragePeer } from './peers/lxd-storage';
import { stats, time } from './stats';

const quick = process.argv.includes('--quick');
const rounds = quick ? 2 : 3;

async function containers(host: Host, dir: string, lxd: LxdStoragePeer | undefined): Promise<void> {
  const sh = (cmd: string) => execFileSync('sh', ['-c', cmd], { stdio: 'ignore' });
  const hasLxcCopy = (() => { try { execFileSync('which', ['lxc-copy'], { stdio: 'ignore' }); return true; } catch { return false; } })();
  console.log('| rootfs | op | lxq p50 ms | peer | peer p50 ms | ratio peer/lxq | lxq MiB/s |');
  console.log('|---|---|---|---|---|---|---|');
  const cases = quick ? [{ image: 'busybox', size: 0 }] : [{ image: 'busybox', size: 0 }, { image: 'busybox', size: 200 }, { image: 'debian/12', size: 0 }];
  for (const { image, size } of cases) {
    await host.images.ensure(image);
    const key = `${image.replace('/', '-')}-${size}`;
    const c = await host.create(`bench-${key}`, { image });
    const rootfs = path.join(host.instancesDir, c.name, 'rootfs');
    const fill = (root: string) => sh(`mkdir "${root}/big" && for i in $(seq 1 ${size / 8}); do head -c 8M /dev/urandom > "${root}/big/f$i"; done`);
    if (size) fill(rootfs);
    if (lxd) {
      await lxd.containerOf(host, image, c.name, dir);
      if (size) fill(path.join(dir, 'lxd', 'storage-pools', 'bench', 'containers', c.name, 'rootfs'));
    }
    const mib = Number(execFileSync('du', ['-s', '-B1', rootfs], { encoding: 'utf8' }).split('\t')[0]) / 2 ** 20;
    const r: Record<string, number[]> = { copy: [], lxcCopy: [], lxdCopy: [], export: [], tar: [], import: [], untar: [] };
    for (let i = 0; i < rounds; i++) {
      r.copy.push(await time(() => host.copy(c.name, `cp-${key}-${i}`, { instanceOnly: true })));
      await (await host.get(`cp-${key}-${i}`)).delete();
      if (hasLxcCopy) {
        r.lxcCopy.push(await time(() => sh(`lxc-copy -P ${host.instancesDir} -n ${c.name} -N lxc-${key}-${i}`)));
        sh(`rm -rf ${host.instancesDir}/lxc-${key}-${i}`);
      }
      if (lxd) {
        r.lxdCopy.push(await time(() => lxd.copy(c.name, `lxd-${key}-${i}`)));
        await lxd.delete(`lxd-${key}-${i}`);
      }
      const file = path.join(dir, `e${i}.tar.zst`);
      r.export.push(await time(() => c.export(file)));
      r.tar.push(await time(() => sh(`tar --create --zstd --file ${dir}/t${i}.tar.zst --numeric-owner --xattrs --xattrs-include='*' --acls --sparse -C ${path.dirname(rootfs)} rootfs`)));
      r.import.push(await time(() => host.import(file, { name: `im-${key}-${i}` })));
      await (await host.get(`im-${key}-${i}`)).delete();
      sh(`mkdir ${dir}/x${i}`);
      r.untar.push(await time(() => sh(`tar --extract --file ${dir}/t${i}.tar.zst --numeric-owner --xattrs --xattrs-include='*' --acls --same-owner -C ${dir}/x${i}`)));
      sh(`rm -rf ${dir}/x${i} ${dir}/t${i}.tar.zst ${file}`);
    }
    const label = `${image}${size ? ` + ${size} MiB` : ''} (${mib.toFixed(0)} MiB)`;
    const row = (op: string, a: number[], peer: string, b: number[]) => {
      const x = stats(a).p50;
      const y = b.length ? stats(b).p50 : NaN;
      console.log(`| ${label} | ${op} | ${x.toFixed(1)} | ${peer} | ${b.length ? y.toFixed(1) : 'n/a'} | ${b.length ? (y / x).toFixed(2) : 'n/a'} | ${(mib / (x / 1000)).toFixed(0)} |`);
    };
    row('copy', r.copy, 'lxc-copy', r.lxcCopy);
    row('copy', r.copy, 'LXD dir (REST)', r.lxdCopy);
    row('export', r.export, 'tar --zstd -c', r.tar);
    row('import', r.import, 'tar --zstd -x', r.untar);
    await c.delete();
    if (lxd) await lxd.delete(c.name);
  }
}

async function vms(host: Host, dir: string): Promise<void> {
  await host.images.ensure('vm/default');
  const vm = await host.create('bench-vm', { type: 'vm', image: 'vm/default', config: { 'limits.memory': '256MiB' } });
  const disk = path.join(host.instancesDir, vm.name, 'disk.qcow2');
  const info = () => JSON.parse(execFileSync('qemu-img', ['info', '-U', '--output=json', disk], { encoding: 'utf8' }));
  const r: Record<string, number[]> = { running: [], copy: [], cp: [], flat: [], convert: [] };
  try {
    await vm.start();
    await vm.exec(['sh', '-c', 'dd if=/dev/urandom of=/root/fill bs=1M count=128 2>/dev/null; sync'], { timeout: 300_000 });
    for (let i = 0; i < rounds; i++) {
      r.running.push(await time(() => host.copy(vm.name, `vr-${i}`, { instanceOnly: true })));
      await (await host.get(`vr-${i}`)).delete();
    }
    await vm.stop();
    const mib = Number(info()['actual-size']) / 2 ** 20;
    for (let i = 0; i < rounds; i++) {
      r.copy.push(await time(() => host.copy(vm.name, `vc-${i}`, { instanceOnly: true })));
      await (await host.get(`vc-${i}`)).delete();
      r.cp.push(await time(() => execFileSync('cp', ['--sparse=always', disk, `${dir}/cp${i}.qcow2`])));
      r.flat.push(await time(() => host.copy(vm.name, `vf-${i}`, { instanceOnly: true, flatten: true })));
      await (await host.get(`vf-${i}`)).delete();
      r.convert.push(await time(() => execFileSync('qemu-img', ['convert', '-q', '-O', 'qcow2', disk, `${dir}/cv${i}.qcow2`])));
      rmSync(`${dir}/cp${i}.qcow2`);
      rmSync(`${dir}/cv${i}.qcow2`);
    }
    console.log(`\nvm/default (TCG), overlay with 128 MiB written in the guest: ${mib.toFixed(0)} MiB allocated\n`);
    console.log('| op | lxq p50 ms | peer | peer p50 ms | ratio peer/lxq | lxq MiB/s |');
    console.log('|---|---|---|---|---|---|');
    const row = (op: string, a: number[], peer: string, b: number[]) => {
      const x = stats(a).p50;
      const y = b.length ? stats(b).p50 : NaN;
      console.log(`| ${op} | ${x.toFixed(1)} | ${peer} | ${b.length ? y.toFixed(1) : 'n/a'} | ${b.length ? (y / x).toFixed(2) : 'n/a'} | ${(mib / (x / 1000)).toFixed(0)} |`);
    };
    row('copy, stopped (overlay)', r.copy, 'cp --sparse of the overlay', r.cp);
    row('copy, stopped, flatten', r.flat, 'qemu-img convert (no backing)', r.convert);
    row('copy, running (blockdev-backup)', r.running, '', []);
  } finally {
    await vm.delete({ force: true });
  }
}

async function main(): Promise<void> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'lxq-bench-copy-'));
  const host = await Host.open({ path: dir, images: process.env.LXQ_TEST_IMAGES ?? '/var/tmp/lxq-test-images', reap: true });
  const peer = quick || process.argv.includes('--no-lxd') ? 'skipped' : await LxdStoragePeer.start(dir).catch((e: Error) => e.message);
  const lxd = typeof peer === 'string' ? undefined : peer;
  if (typeof peer === 'string') console.log(`LXD peer: ${peer}`);
  console.log(`${rounds} rounds each, median ms, ${new Date().toISOString()}\n`);
  try {
    await containers(host, dir, lxd);
    await vms(host, dir);
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
