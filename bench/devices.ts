/**
 * Devices, measured:
 * - hot-add and hot-remove of a disk on a running container and a running VM, and of a char
 *   device on a running container (no peer runs here: see below);
 * - container start with 0, 1 and 10 disk devices, lxq's start beside `lxc-start` of the very
 *   config lxq generated (the cost per device should stay flat);
 * - sequential write and read MiB/s of a 256 MiB file through a VM's virtiofs share and its
 *   extra block disk, against `dd` of the same file on the host (the ceiling), as ratios.
 * Usage: node dist/bench/devices.js [--quick]
 */
import { execFile } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';

import { Host, Instance } from '../lib';
import { Stats, stats } from './stats';

const run = promisify(execFile);

async function time(into: number[], op: () => Promise<unknown>): Promise<void> {
  const t = performance.now();
  await op();
  into.push(performance.now() - t);
}

/** MiB/s of a `dd` run, from its own byte count and the wall time. */
async function ddRate(exec: (script: string) => Promise<string>, script: string, mib: number): Promise<number> {
  const t = performance.now();
  await exec(script);
  return mib / ((performance.now() - t) / 1000);
}

export async function main(opts: { quick: boolean }): Promise<string[]> {
  const n = opts.quick ? 3 : 20;
  const mib = opts.quick ? 32 : 256;
  const dir = mkdtempSync(path.join(os.tmpdir(), 'lxq-bench-dev-'));
  const share = mkdtempSync(path.join(os.tmpdir(), 'lxq-bench-share-'));
  chmodSync(share, 0o755);
  const host = await Host.open({ path: dir, images: process.env.LXQ_TEST_IMAGES ?? '/var/tmp/lxq-test-images', reap: true });
  const lines: string[] = [];
  const row = (name: string, s: Stats, extra = '') => lines.push(`| ${name} | ${s.n} | ${s.min.toFixed(2)} | ${s.p50.toFixed(2)} | ${s.p99.toFixed(2)} | ${extra} |`);
  const made: Instance[] = [];
  try {
    // ---- hot-plug on a running container ----
    const c = await host.create(`bdev-c-${process.pid}`, { image: 'busybox' });
    made.push(c);
    await c.start();
    // No CLI peer: `lxc-device add` fails here before doing anything (it enters the network
    // namespace of the host's pid 1 to tell devices from interfaces, and /proc/1/ns/net cannot
    // be opened on this machine), and liblxc's mount() needs shared mounts set up at start.
    const add: number[] = [], remove: number[] = [], addChar: number[] = [], removeChar: number[] = [];
    for (let i = 0; i < n; i++) {
      await time(add, () => c.addDevice('d', { type: 'disk', source: share, path: '/mnt/d' }));
      await time(remove, () => c.removeDevice('d'));
      await time(addChar, () => c.addDevice('tun', { type: 'unix-char', source: '/dev/net/tun' }));
      await time(removeChar, () => c.removeDevice('tun'));
    }
    lines.push('### Hot-plug, running busybox container (ms)', '', '| operation | n | min | p50 | p99 | |', '|---|---:|---:|---:|---:|---|');
    row('addDevice disk (bind mount)', stats(add));
    row('removeDevice disk', stats(remove));
    row('addDevice unix-char /dev/net/tun (mknod + cgroup + bind mount)', stats(addChar));
    row('removeDevice unix-char', stats(removeChar));
    await c.stop({ force: true });

    // ---- container start with 0, 1, 10 disks, lxq beside lxc-start of the same config ----
    lines.push('', '### Container start with N disk devices (ms, start → RUNNING)', '', '| disks | n | lxq p50 | lxq per disk | lxc-start p50 | lxq / lxc-start |', '|---:|---:|---:|---:|---:|---|');
    let base = 0;
    for (const count of [0, 1, 10]) {
      const devices = Object.fromEntries(Array.from({ length: count }, (_, k) => [`d${k}`, { type: 'disk' as const, source: share, path: `/mnt/d${k}` }]));
      const s = await host.create(`bdev-s${count}-${process.pid}`, { image: 'busybox', devices });
      made.push(s);
      const lxq: number[] = [], cliStart: number[] = [];
      for (let i = 0; i < (opts.quick ? 2 : 8); i++) {
        await time(lxq, () => s.start());
        await s.stop({ force: true });
        await time(cliStart, () => run('lxc-start', ['-P', host.instancesDir, '-n', s.name]).then(() => run('lxc-wait', ['-P', host.instancesDir, '-n', s.name, '-s', 'RUNNING', '-t', '10'])));
        await s.stop({ force: true });
      }
      const a = stats(lxq), b = stats(cliStart);
      if (count === 0) base = a.p50;
      lines.push(`| ${count} | ${a.n} | ${a.p50.toFixed(2)} | ${count ? ((a.p50 - base) / count).toFixed(2) : ''} | ${b.p50.toFixed(2)} | ${(a.p50 / b.p50).toFixed(2)}× |`);
    }

    // ---- a VM: hot-plug, and throughput through the share and the block disk ----
    await host.images.ensure('vm/default');
    const vm = await host.create(`bdev-vm-${process.pid}`, { type: 'vm', image: 'vm/default', config: { 'limits.memory': '512MiB' }, devices: { share: { type: 'disk', source: share, path: '/mnt/share' } } });
    made.push(vm);
    await vm.start();
    const sh = async (script: string) => {
      const r = await vm.exec(['sh', '-c', script], { timeout: 300_000 });
      if (r.exitCode !== 0) throw new Error(`${script}: ${r.stderr.toString()}`);
      return r.stdout.toString();
    };
    await sh('true');
    const vmAdd: number[] = [], vmRemove: number[] = [], vmShareAdd: number[] = [], vmShareRemove: number[] = [];
    for (let i = 0; i < (opts.quick ? 2 : 5); i++) {
      await time(vmAdd, () => vm.addDevice('blk', { type: 'disk', size: '64MiB' }));
      await time(vmRemove, () => vm.removeDevice('blk'));
      await time(vmShareAdd, () => vm.addDevice('hot', { type: 'disk', source: share, path: '/mnt/hot' }));
      await time(vmShareRemove, () => vm.removeDevice('hot'));
    }
    lines.push('', '### Hot-plug, running vm/default VM, TCG (ms)', '', '| operation | n | min | p50 | p99 | |', '|---|---:|---:|---:|---:|---|');
    row('addDevice block disk (qemu-img create + blockdev-add + device_add)', stats(vmAdd));
    row('removeDevice block disk (device_del → DEVICE_DELETED)', stats(vmRemove));
    row('addDevice share (virtiofsd + device_add + mount by the agent)', stats(vmShareAdd));
    row('removeDevice share (umount + device_del → DEVICE_DELETED)', stats(vmShareRemove));

    await vm.addDevice('blk', { type: 'disk', size: `${mib + 64}MiB` });
    await sh('for i in $(seq 50); do grep -q blk /sys/block/vd*/serial 2>/dev/null && exit 0; sleep 0.1; done; exit 1');
    const blk = (await sh('for d in /sys/block/vd*; do [ "$(cat $d/serial)" = blk ] && basename $d; done')).trim();
    const hostFile = path.join(share, 'host.bin');
    const hostWrite = await ddRate((s) => run('sh', ['-c', s]).then((r) => r.stdout), `dd if=/dev/zero of=${hostFile} bs=1M count=${mib} conv=fsync 2>/dev/null`, mib);
    const hostRead = await ddRate((s) => run('sh', ['-c', s]).then((r) => r.stdout), `dd if=${hostFile} of=/dev/null bs=1M 2>/dev/null`, mib);
    const shareWrite = await ddRate(sh, `dd if=/dev/zero of=/mnt/share/guest.bin bs=1M count=${mib} conv=fsync 2>/dev/null`, mib);
    const shareRead = await ddRate(sh, `echo 3 > /proc/sys/vm/drop_caches; dd if=/mnt/share/host.bin of=/dev/null bs=1M 2>/dev/null`, mib);
    const blkWrite = await ddRate(sh, `dd if=/dev/zero of=/dev/${blk} bs=1M count=${mib} conv=fsync 2>/dev/null`, mib);
    const blkRead = await ddRate(sh, `echo 3 > /proc/sys/vm/drop_caches; dd if=/dev/${blk} of=/dev/null bs=1M count=${mib} 2>/dev/null`, mib);
    lines.push('', `### Sequential ${mib} MiB, 1 MiB blocks, through the VM (MiB/s; TCG)`, '', '| path | write | read | write / host | read / host |', '|---|---:|---:|---|---|');
    const rate = (name: string, w: number, r: number) => lines.push(`| ${name} | ${w.toFixed(0)} | ${r.toFixed(0)} | ${(w / hostWrite).toFixed(2)}× | ${(r / hostRead).toFixed(2)}× |`);
    rate('host `dd` on the shared directory (the ceiling; read from the page cache)', hostWrite, hostRead);
    rate('guest, virtiofs share (`dd` in the guest, its caches dropped before the read)', shareWrite, shareRead);
    rate('guest, extra virtio-blk disk (qcow2 made by lxq)', blkWrite, blkRead);
  } finally {
    for (const i of made) await i.delete({ force: true }).catch(() => undefined);
    rmSync(dir, { recursive: true, force: true });
    rmSync(share, { recursive: true, force: true });
  }
  return lines;
}

if (require.main === module) {
  main({ quick: process.argv.includes('--quick') }).then(
    (lines) => {
      console.log(`Devices (${os.cpus().length} CPUs, ${os.cpus()[0].model}, Node ${process.version})\n`);
      console.log(lines.join('\n'));
    },
    (e) => {
      console.error(e);
      process.exit(1);
    },
  );
}
