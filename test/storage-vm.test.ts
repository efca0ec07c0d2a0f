/**
 * VMs on storage pools: on a btrfs loop pool the VM's disk (a qcow2 overlay over its image's) is
 * in a subvolume of its own, copies are subvolume snapshots (its internal qcow2 snapshots with
 * them), export → import carries the disk, delete removes the subvolume; the root disk's `size`
 * grows the VM's disk on every driver, and a stopped VM's `updateDevice('root', { size })` grows
 * it again (the guest sees the disk and its root filesystem grown to it: one boot, on btrfs); a
 * size smaller than the image's or the disk's is refused and changes nothing; a pool is Busy
 * while a VM uses it.
 */
import { execFileSync } from 'node:child_process';
import { lstatSync, readFileSync, readlinkSync, realpathSync } from 'node:fs';
import * as path from 'node:path';

import { Busy, CreateOptions, Instance, InvalidArgument, NotSupported } from '../lib';
import { tempHost, TestHost, thrown } from './helpers/host';
import { mountsUnder, sh } from './helpers/storage';

let t: TestHost;
let pool: string;
const GiB = 2 ** 30;

const disk = (name: string) => path.join(t.dir, 'instances', name, 'disk.qcow2');
const info = (file: string) => JSON.parse(execFileSync('qemu-img', ['info', '-U', '--output=json', file], { encoding: 'utf8' }));
const poolMount = () => path.join(t.dir, 'storage-pools', pool, 'mnt');
const subvolumes = () => sh(`btrfs subvolume list ${poolMount()}`).split('\n').filter((l) => l.includes(' path roots/')).map((l) => l.split(' path ')[1]);
const loopsUnder = (dir: string) => sh('losetup --list --noheadings --output NAME,BACK-FILE').split('\n').filter((l) => l.includes(dir));
/** The subvolume (`roots/<id>`) a btrfs VM's disk link points into. */
const subvolumeOf = (name: string) => path.relative(poolMount(), path.dirname(readlinkSync(disk(name))));
const vm = (name: string, devices: CreateOptions['devices'] = {}) => t.host.create(name, { type: 'vm', image: 'vm/default', config: { 'limits.memory': '256MiB' }, devices });

beforeAll(async () => {
  t = await tempHost();
  await t.host.images.ensure('vm/default');
  pool = t.name('bt');
  await t.host.storage.pools.create(pool, { driver: 'btrfs', config: { size: '1GiB' } });
}, 600_000);
afterAll(async () => {
  if (!t) return;
  for (const i of await t.host.list().catch(() => [])) await i.delete({ force: true }).catch(() => undefined);
  await t.host.storage.pools.delete(pool).catch(() => undefined);
  for (const p of mountsUnder(t.dir).sort((a, b) => b.length - a.length)) sh(`umount -l '${p}' || true`);
  for (const l of loopsUnder(t.dir)) sh(`losetup -d ${l.split(' ')[0]} 2>/dev/null || true`);
  await t.dispose();
}, 180_000);

test('a VM on a btrfs pool: its disk in a subvolume, grown to the root disk size (seen by the guest), copied as a subvolume snapshot with its snapshots, exported, imported and deleted', async () => {
  const a = await vm(t.name('va'), { root: { type: 'disk', path: '/', pool, size: '1536MiB' } });
  expect((await t.host.storage.pools.get(pool)).usedBy).toEqual([a.name]);
  expect(realpathSync(disk(a.name)).startsWith(poolMount() + '/roots/')).toBe(true);
  expect(subvolumes()).toEqual([subvolumeOf(a.name)]);
  expect(info(disk(a.name))['virtual-size']).toBe(1.5 * GiB);
  // The root disk's size of a stopped VM: only larger, only `size`; a refusal changes nothing.
  for (const [patch, message] of [
    [{ size: '1GiB' }, /a disk cannot shrink/],
    [{ size: 'big' }, /device "root": "size"/],
    [{ size: null }, /cannot be unset/],
    [{ pool: 'default' }, /only "size" can be changed/],
  ] as const) {
    const e = await thrown(a.updateDevice('root', patch));
    expect(e).toBeInstanceOf(InvalidArgument);
    expect(e.message).toMatch(message);
  }
  expect(info(disk(a.name))['virtual-size']).toBe(1.5 * GiB);
  await a.updateDevice('root', { size: '2GiB' });
  expect(info(disk(a.name))['virtual-size']).toBe(2 * GiB);
  expect(info(disk(a.name))['full-backing-filename']).toBe(path.join((await t.host.images.get('vm/default', { type: 'vm' })).dir, 'disk.qcow2'));
  expect(await thrown(t.host.storage.pools.delete(pool))).toBeInstanceOf(Busy);

  // The one boot of this file: the guest's disk is the size asked for; a file written stays in the disk.
  await a.start();
  const run = async (i: Instance, script: string) => (await i.exec(['sh', '-c', script], { timeout: 180_000 })).stdout.toString().trim();
  expect(Number(await run(a, 'cat /sys/block/vda/size')) * 512).toBe(2 * GiB);
  // The image's 256 MiB ext4 grown to the disk by the agent at boot: df's total is the disk less
  // ext4's own tables (inodes, bitmaps, journal: under 10% here).
  const total = Number((await run(a, 'df -k / | tail -n 1')).split(/\s+/)[1]) * 1024;
  expect(total).toBeGreaterThan(1.8 * GiB);
  expect(total).toBeLessThanOrEqual(2 * GiB);
  expect(await thrown(a.updateDevice('root', { size: '3GiB' }))).toBeInstanceOf(NotSupported);
  expect(info(disk(a.name))['virtual-size']).toBe(2 * GiB);
  await run(a, 'echo kept > /root/kept; sync');
  await a.stop();

  await a.snapshots.create('s1'); // an internal qcow2 snapshot of the disk in the subvolume
  const copy = await t.host.copy(a.name, t.name('vc'));
  expect((await t.host.storage.pools.get(pool)).usedBy.sort()).toEqual([a.name, copy.name].sort());
  const copied = subvolumeOf(copy.name);
  expect(copied).not.toBe(subvolumeOf(a.name));
  expect(subvolumes().sort()).toEqual([subvolumeOf(a.name), copied].sort());
  expect(info(disk(copy.name)).snapshots.map((s: { name: string }) => s.name)).toEqual(info(disk(a.name)).snapshots.map((s: { name: string }) => s.name));
  expect((await copy.snapshots.list()).map((s) => s.name)).toEqual(['s1']);
  expect(info(disk(copy.name))['virtual-size']).toBe(2 * GiB);

  // A copy of one snapshot and a flattened copy: new qcow2 files, each in a subvolume of its own.
  const fromSnap = await t.host.copy(a.name, t.name('vs'), { snapshot: 's1' });
  const flat = await t.host.copy(a.name, t.name('vf'), { flatten: true });
  for (const c of [fromSnap, flat]) expect(realpathSync(disk(c.name)).startsWith(poolMount() + '/roots/')).toBe(true);
  expect(info(disk(flat.name))['backing-filename']).toBeUndefined();
  expect(new Set(subvolumes()).size).toBe(4);

  // Exported from its subvolume (the disk itself, not the link), imported as a plain file.
  const file = path.join(t.dir, 'va.tar.zst');
  await a.export(file);
  const imported = await t.host.import(file, { name: t.name('vi') });
  expect(lstatSync(disk(imported.name)).isFile()).toBe(true);
  execFileSync('qemu-img', ['check', '-q', disk(imported.name)]);
  expect(info(disk(imported.name))['virtual-size']).toBe(2 * GiB);
  expect((await imported.snapshots.list()).map((s) => s.name)).toEqual(['s1']);

  for (const i of [a, copy, fromSnap, flat]) await i.delete();
  expect(subvolumes()).toEqual([]);
  await imported.delete();
}, 900_000);

test('a snapshot restore puts back the disk size recorded in the snapshot, as LXD does (its snapshot\'s disk file and size key), smaller or larger', async () => {
  const v = await vm(t.name('vr'), { root: { type: 'disk', path: '/', pool: 'default', size: '1536MiB' } });
  await v.snapshots.create('small');
  await v.updateDevice('root', { size: '2GiB' });
  await v.snapshots.create('big');
  // The root disk's size in bytes is in the record (the root disk device is the pool's, not among the devices).
  const rootOf = async () => ({ disk: info(disk(v.name))['virtual-size'], size: JSON.parse(readFileSync(path.join(t.dir, 'instances', v.name, 'lxq.json'), 'utf8')).rootSize });
  expect(await rootOf()).toEqual({ disk: 2 * GiB, size: 2 * GiB });
  // qemu-img's restore of an internal snapshot sets the disk to the size it had then; the record comes back with it: they agree.
  await v.snapshots.restore('small');
  expect(await rootOf()).toEqual({ disk: 1.5 * GiB, size: 1.5 * GiB });
  execFileSync('qemu-img', ['check', '-q', disk(v.name)]);
  // The restored size is the one a later grow starts from.
  expect(await thrown(v.updateDevice('root', { size: '1GiB' }))).toBeInstanceOf(InvalidArgument);
  await v.snapshots.restore('big');
  expect(await rootOf()).toEqual({ disk: 2 * GiB, size: 2 * GiB });
  await v.snapshots.restore('small');
  await v.updateDevice('root', { size: '1792MiB' });
  expect(await rootOf()).toEqual({ disk: 1.75 * GiB, size: 1.75 * GiB });
  execFileSync('qemu-img', ['check', '-q', disk(v.name)]);
  await v.delete();
}, 300_000);

test('the root disk size grows a VM disk on the overlay and dir pools; a size below the image is refused and changes nothing', async () => {
  const dirPool = t.name('dp');
  await t.host.storage.pools.create(dirPool, { driver: 'dir' });
  try {
    for (const p of ['default', dirPool]) {
      const v = await vm(t.name('vo'), { root: { type: 'disk', path: '/', pool: p, size: '1536MiB' } });
      expect((await t.host.storage.pools.get(p)).usedBy).toContain(v.name);
      expect(info(disk(v.name))['virtual-size']).toBe(1.5 * GiB);
      const copy = await t.host.copy(v.name, t.name('vc'));
      expect(info(disk(copy.name))['virtual-size']).toBe(1.5 * GiB);
      expect(await thrown(t.host.storage.pools.delete(p))).toBeInstanceOf(Busy);
      await copy.delete();
      await v.delete();
    }
  } finally {
    await t.host.storage.pools.delete(dirPool).catch(() => undefined);
  }
  const before = sh(`find ${t.dir} -path '*/images' -prune -o -printf '%P\\n' | sort`);
  const name = t.name('small');
  const e = await thrown(vm(name, { root: { type: 'disk', path: '/', pool, size: '16MiB' } }));
  expect(e).toBeInstanceOf(InvalidArgument);
  expect(e.message).toMatch(/device "root": "size" .* is smaller than the disk of the VM's image/);
  expect(sh(`find ${t.dir} -path '*/images' -prune -o -printf '%P\\n' | sort`)).toBe(before);
  expect(subvolumes()).toEqual([]);
}, 600_000);
