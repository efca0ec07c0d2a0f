/**
 * Custom storage volumes (LXD's `lxc storage volume`) on real containers: a filesystem volume
 * written in one container and read in another after a detach, hot-plugged on a running one,
 * kept after its instances are deleted; snapshots and restore; rename; Busy while attached (and
 * to a second running instance unless security.shared); a btrfs loop pool's volumes as
 * subvolumes with a qgroup; leftovers of a killed create cleared by Host.open; bad input refused,
 * typed, naming the key, and changing nothing (the host's tree and mounts compared).
 */
import { existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';

import { AlreadyExists, Busy, Host, InvalidArgument, NotFound, NotSupported, type StorageEvent } from '../lib';
import { lxqArgv, runNode, SHARED_IMAGES, tempHost, TestHost, thrown } from './helpers/host';
import { mountsUnder, sh } from './helpers/storage';

let t: TestHost;
const out = (r: { stdout: Buffer }) => r.stdout.toString().trim();
const loopsUnder = (dir: string) => sh('losetup --list --noheadings --output NAME,BACK-FILE').split('\n').filter((l) => l.includes(dir));
const disk = (pool: string, source: string, p: string) => ({ type: 'disk' as const, pool, source, path: p });

beforeAll(async () => {
  t = await tempHost();
  await t.host.images.ensure('busybox');
}, 600_000);
afterAll(async () => {
  if (!t) return;
  for (const i of await t.host.list().catch(() => [])) await i.delete({ force: true }).catch(() => undefined);
  for (const p of mountsUnder(t.dir).sort((a, b) => b.length - a.length)) sh(`umount -l '${p}' || true`);
  for (const l of loopsUnder(t.dir)) sh(`losetup -d ${l.split(' ')[0]} 2>/dev/null || true`);
  await t.dispose();
}, 180_000);

test('a filesystem volume: written in one container, read in another after detach, hot-plugged, kept after delete; events', async () => {
  const events: StorageEvent[] = [];
  t.host.on('storage', (e) => events.push(e));
  const volumes = t.host.storage.pool('default').volumes;
  const vol = t.name('v');
  const created = await volumes.create(vol, { description: 'shared data' });
  expect(created).toMatchObject({ name: vol, pool: 'default', contentType: 'filesystem', description: 'shared data', usedBy: [] });
  const a = await t.host.create(t.name('a'), { image: 'busybox', devices: { data: disk('default', vol, '/data') } });
  const b = await t.host.create(t.name('b'), { image: 'busybox' });
  expect((await volumes.get(vol)).usedBy).toEqual([a.name]);
  await a.start();
  // Idmapped: the unprivileged container's root owns the volume's root and what it writes there.
  expect(out(await a.exec(['stat', '-c', '%u:%g', '/data']))).toBe('0:0');
  expect((await a.exec(['sh', '-c', 'echo hello > /data/f && mkdir /data/d && chown 1000:1000 /data/d'])).exitCode).toBe(0);
  await a.stop({ force: true });
  await a.removeDevice('data');
  expect((await volumes.get(vol)).usedBy).toEqual([]);
  await b.start();
  await b.addDevice('data', disk('default', vol, '/mnt/data')); // hot-plugged
  expect(out(await b.exec(['cat', '/mnt/data/f']))).toBe('hello');
  expect(out(await b.exec(['stat', '-c', '%u:%g', '/mnt/data/d']))).toBe('1000:1000');
  await b.exec(['sh', '-c', 'echo from-b > /mnt/data/g']);
  await b.removeDevice('data'); // unplugged from the running container
  expect((await b.exec(['test', '-e', '/mnt/data/f'])).exitCode).not.toBe(0);
  await a.delete({ force: true });
  await b.delete({ force: true });
  // The volume outlives both.
  expect((await volumes.list()).map((v) => v.name)).toContain(vol);
  const c = await t.host.create(t.name('c'), { image: 'busybox', devices: { data: disk('default', vol, '/data') } });
  await c.start();
  expect(out(await c.exec(['cat', '/data/f', '/data/g']))).toBe('hello\nfrom-b');
  await c.delete({ force: true });
  await volumes.update(vol, { description: 'kept', config: { 'security.shared': 'true' } });
  expect((await volumes.get(vol)).config).toEqual({ 'security.shared': 'true' });
  await volumes.delete(vol);
  await expect(volumes.get(vol)).rejects.toBeInstanceOf(NotFound);
  const mine = events.filter((e) => e.name.startsWith(`default/${vol}`)).map((e) => `${e.action} ${e.name}`);
  expect(mine).toEqual([`storage-volume-created default/${vol}`, `storage-volume-updated default/${vol}`, `storage-volume-deleted default/${vol}`]);
}, 600_000);

test('snapshots, restore (refused while attached to a running instance), rename and Busy', async () => {
  const volumes = t.host.storage.pool('default').volumes;
  const vol = t.name('v');
  await volumes.create(vol);
  const a = await t.host.create(t.name('a'), { image: 'busybox', devices: { data: disk('default', vol, '/data') } });
  await a.start();
  await a.exec(['sh', '-c', 'echo one > /data/f']);
  const s0 = await volumes.snapshot(vol);
  expect(s0.name).toBe('snap0');
  await volumes.snapshot(vol, 'named');
  expect((await volumes.snapshots(vol)).map((s) => s.name)).toEqual(['snap0', 'named']);
  await a.exec(['sh', '-c', 'echo two > /data/f && echo new > /data/n']);
  let e = await thrown(volumes.restore(vol, 'snap0'));
  expect(e).toBeInstanceOf(Busy);
  expect(e.message).toContain(a.name);
  e = await thrown(volumes.delete(vol));
  expect(e).toBeInstanceOf(Busy);
  e = await thrown(volumes.rename(vol, t.name('r')));
  expect(e).toBeInstanceOf(Busy);
  // A second running instance is refused, at start and when hot-plugged, unless shared.
  const b = await t.host.create(t.name('b'), { image: 'busybox', devices: { data: disk('default', vol, '/data') } });
  e = await thrown(b.start());
  expect(e).toBeInstanceOf(Busy);
  expect(e.message).toMatch(/security\.shared=true/);
  expect(await b.status()).toBe('stopped');
  await volumes.update(vol, { config: { 'security.shared': 'true' } });
  await b.start();
  expect(out(await b.exec(['cat', '/data/f']))).toBe('two');
  await b.delete({ force: true });
  await a.stop({ force: true });
  await volumes.restore(vol, 'snap0');
  await a.start();
  expect(out(await a.exec(['cat', '/data/f']))).toBe('one');
  expect((await a.exec(['test', '-e', '/data/n'])).exitCode).not.toBe(0);
  await a.delete({ force: true });
  const renamed = t.name('r');
  await volumes.rename(vol, renamed);
  expect((await volumes.snapshots(renamed)).map((s) => s.name)).toEqual(['snap0', 'named']);
  await expect(volumes.get(vol)).rejects.toBeInstanceOf(NotFound);
  await volumes.deleteSnapshot(renamed, 'named');
  expect((await volumes.snapshots(renamed)).map((s) => s.name)).toEqual(['snap0']);
  // A pool holding volumes is not deleted.
  const pool = t.name('p');
  await t.host.storage.pools.create(pool, { driver: 'dir' });
  await t.host.storage.pool(pool).volumes.create('x');
  expect(await thrown(t.host.storage.pools.delete(pool))).toBeInstanceOf(Busy);
  await t.host.storage.pool(pool).volumes.delete('x');
  await t.host.storage.pools.delete(pool);
  await volumes.delete(renamed);
}, 600_000);

test('a volume attached through a profile is in use: usedBy names the instance, delete and rename are Busy', async () => {
  const volumes = t.host.storage.pool('default').volumes;
  const vol = t.name('pv');
  await volumes.create(vol);
  const profile = t.name('prof');
  await t.host.profiles.create(profile, { devices: { data: disk('default', vol, '/data') } });
  const c = await t.host.create(t.name('pc'), { image: 'busybox', profiles: ['default', profile] });
  expect((await volumes.get(vol)).usedBy).toEqual([c.name]);
  expect(await thrown(volumes.delete(vol))).toBeInstanceOf(Busy);
  expect(await thrown(volumes.rename(vol, t.name('pr')))).toBeInstanceOf(Busy);
  await c.start();
  expect(out(await c.exec(['sh', '-c', 'echo via-profile > /data/f && cat /data/f']))).toBe('via-profile');
  await c.delete({ force: true });
  expect((await volumes.get(vol)).usedBy).toEqual([]);
  await t.host.profiles.delete(profile);
  await volumes.delete(vol);
}, 300_000);

test('a block volume: a sparse disk of its size, grown by update, refused at a path in a container', async () => {
  const volumes = t.host.storage.pool('default').volumes;
  const vol = t.name('blk');
  await volumes.create(vol, { contentType: 'block', size: '64MiB' });
  const file = path.join(t.dir, 'storage-pools', 'default', 'volumes', vol, 'root.img');
  expect(statSync(file).size).toBe(64 * 2 ** 20);
  await volumes.update(vol, { config: { size: '128MiB' } });
  expect(statSync(file).size).toBe(128 * 2 ** 20);
  expect(await thrown(volumes.update(vol, { config: { size: '32MiB' } }))).toBeInstanceOf(InvalidArgument);
  const e = await thrown(t.host.create(t.name('c'), { image: 'busybox', devices: { data: disk('default', vol, '/data') } }));
  expect(e).toBeInstanceOf(InvalidArgument);
  expect(e.message).toMatch(/block volume/);
  await volumes.snapshot(vol, 's');
  await volumes.restore(vol, 's');
  expect(statSync(file).size).toBe(128 * 2 ** 20);
  await volumes.delete(vol);
}, 120_000);

test('a killed create leaves no half volume: Host.open clears it', async () => {
  const volumesDir = path.join(t.dir, 'storage-pools', 'default', 'volumes');
  mkdirSync(volumesDir, { recursive: true });
  // What a process killed mid-create leaves: a staging directory named after a dead pid.
  const dead = path.join(volumesDir, '.lxq-tmp-999999999-volume-0000');
  mkdirSync(path.join(dead, 'data'), { recursive: true });
  writeFileSync(path.join(dead, 'data', 'x'), 'x');
  const again = await Host.open({ path: t.dir, images: SHARED_IMAGES });
  await again.close();
  expect(existsSync(dead)).toBe(false);
}, 120_000);

test('bad input is refused, typed and naming the key, and changes nothing (tree, mounts)', async () => {
  const volumes = t.host.storage.pool('default').volumes;
  const taken = t.name('v');
  await volumes.create(taken);
  const c = await t.host.create(t.name('c'), { image: 'busybox' });
  await c.status(); // liblxc makes its log at the first look
  const state = () => [sh(`find ${t.dir} -path '*/rootfs' -prune -o -printf '%P %s\\n' | grep -v events | sort`), mountsUnder(t.dir).sort().join('\n')];
  const before = state();
  const cases: Array<[() => Promise<unknown>, new (...a: never[]) => Error, RegExp]> = [
    [() => volumes.create('a/b'), InvalidArgument, /contains "\/"/],
    [() => volumes.create('.x'), InvalidArgument, /starts with "\."/],
    [() => volumes.create(taken), AlreadyExists, /already exists/],
    [() => volumes.create(t.name('v'), { contentType: 'tape' as never }), InvalidArgument, /"contentType"/],
    [() => volumes.create(t.name('v'), { size: 'big', contentType: 'block' }), InvalidArgument, /"size"/],
    [() => volumes.create(t.name('v'), { size: '1GiB' }), NotSupported, /"size" of a filesystem volume cannot be enforced/],
    [() => volumes.create(t.name('v'), { config: { 'zfs.x': '1' } }), InvalidArgument, /unknown storage volume key "zfs.x"/],
    [() => volumes.create(t.name('v'), { sise: '1' } as never), InvalidArgument, /"sise"/],
    [() => t.host.storage.pool('nopool').volumes.create(t.name('v')), NotFound, /nopool/],
    [() => volumes.rename(taken, 'x y'), InvalidArgument, /white space/],
    [() => volumes.get('missing'), NotFound, /"missing"/],
    [() => volumes.restore(taken, 'nosnap'), NotFound, /"nosnap"/],
    [() => c.addDevice('d', disk('default', 'missing', '/d')), NotFound, /"missing"/],
    [() => c.addDevice('d', { type: 'disk', pool: 'default', source: '../x', path: '/d' }), InvalidArgument, /"source"/],
    [() => t.host.create(t.name('c'), { image: 'busybox', devices: { d: disk('nopool', taken, '/d') } }), NotFound, /nopool/],
  ];
  for (const [call, type, message] of cases) {
    const e = await thrown(call());
    expect(e).toBeInstanceOf(type);
    expect(e.message).toMatch(message);
  }
  expect(state()).toEqual(before);
  await c.delete({ force: true });
  await volumes.delete(taken);
}, 300_000);

test('btrfs loop pool: volumes as subvolumes, size as a qgroup, snapshots read-only subvolumes', async () => {
  const pool = t.name('bt');
  await t.host.storage.pools.create(pool, { driver: 'btrfs', config: { size: '1GiB' } });
  const mnt = path.join(t.dir, 'storage-pools', pool, 'mnt');
  const subvolumes = () => sh(`btrfs subvolume list ${mnt}`).split('\n').filter((l) => l.includes(' path custom/'));
  try {
    const volumes = t.host.storage.pool(pool).volumes;
    await volumes.create('fs', { size: '100MiB' });
    await volumes.create('blk', { contentType: 'block', size: '16MiB' });
    expect(subvolumes()).toHaveLength(2);
    const a = await t.host.create(t.name('a'), { image: 'busybox', pool, devices: { data: disk(pool, 'fs', '/data') } });
    await a.start();
    await a.exec(['sh', '-c', 'echo one > /data/f']);
    // The qgroup limit: writing past 100MiB fails inside.
    expect((await a.exec(['sh', '-c', 'dd if=/dev/zero of=/data/big bs=1M count=200 conv=fsync 2>&1'])).exitCode).not.toBe(0);
    await a.exec(['rm', '-f', '/data/big']);
    await volumes.snapshot('fs', 's');
    expect(subvolumes()).toHaveLength(3);
    await a.exec(['sh', '-c', 'echo two > /data/f']);
    await a.stop({ force: true });
    await volumes.restore('fs', 's');
    expect(subvolumes()).toHaveLength(3); // the replaced subvolume deleted
    await a.start();
    expect(out(await a.exec(['cat', '/data/f']))).toBe('one');
    await a.delete({ force: true });
    await volumes.delete('fs');
    await volumes.delete('blk');
    expect(subvolumes()).toEqual([]);
  } finally {
    for (const i of await t.host.list()) if (i.type === 'container') await i.delete({ force: true }).catch(() => undefined);
    for (const v of await t.host.storage.pool(pool).volumes.list().catch(() => [])) await t.host.storage.pool(pool).volumes.delete(v.name).catch(() => undefined);
    await t.host.storage.pools.delete(pool).catch(() => undefined);
  }
  expect(loopsUnder(path.join(t.dir, 'storage-pools', pool))).toEqual([]);
}, 600_000);

test('a VM: a filesystem volume shared with virtiofs (written by a container), a block volume hot-plugged as a disk', async () => {
  const volumes = t.host.storage.pool('default').volumes;
  const fsVol = t.name('vfs');
  const blk = t.name('vblk');
  await volumes.create(fsVol);
  await volumes.create(blk, { contentType: 'block', size: '32MiB' });
  const c = await t.host.create(t.name('c'), { image: 'busybox', devices: { data: disk('default', fsVol, '/data') } });
  await c.start();
  await c.exec(['sh', '-c', 'echo from-container > /data/f']);
  await c.delete({ force: true });
  const vm = await t.host.create(t.name('vm'), { type: 'vm', image: 'vm/default', devices: { data: disk('default', fsVol, '/mnt/vol') } });
  try {
    // A filesystem volume needs a path in a VM; a block one has none.
    expect(await thrown(vm.addDevice('x', { type: 'disk', pool: 'default', source: blk, path: '/x' }))).toBeInstanceOf(InvalidArgument);
    await vm.start();
    const sh = async (script: string) => (await vm.exec(['sh', '-c', script], { timeout: 120_000 })).stdout.toString().trim();
    expect(await sh('cat /mnt/vol/f')).toBe('from-container');
    await sh('echo from-vm > /mnt/vol/g');
    await vm.addDevice('blk', { type: 'disk', pool: 'default', source: blk }); // hot-plugged through QMP
    // The guest sees the disk once its PCI hot-plug is handled, a while after QEMU's device_add under load.
    const disks = 'for d in /sys/block/vd*; do echo "$(cat $d/serial) $(cat $d/size)"; done';
    const want = `blk ${(32 * 2 ** 20) / 512}`;
    expect(await sh(`for i in $(seq 600); do (${disks}) | grep -qx '${want}' && break; sleep 0.1; done; ${disks}`)).toContain(want);
    expect((await volumes.get(blk)).usedBy).toEqual([vm.name]);
  } finally {
    await vm.delete({ force: true });
  }
  expect(readFileSync(path.join(t.dir, 'storage-pools', 'default', 'volumes', fsVol, 'data', 'g'), 'utf8')).toBe('from-vm\n');
  await volumes.delete(fsVol);
  await volumes.delete(blk);
}, 900_000);

test('the CLI: lxq storage volume create|list|attach|detach|snapshot|restore|show|rename|delete', async () => {
  const lxq = async (...args: string[]) => {
    const r = await runNode([...lxqArgv(t.dir), 'storage', 'volume', ...args]);
    if (r.code !== 0) throw new Error(`lxq storage volume ${args.join(' ')}: ${r.stderr}`);
    return r.stdout;
  };
  const vol = t.name('cli');
  const c = await t.host.create(t.name('c'), { image: 'busybox' });
  await lxq('create', 'default', vol, '--description', 'from the CLI');
  expect(JSON.parse(await lxq('list', 'default', '--format', 'json'))).toContainEqual(expect.objectContaining({ name: vol, 'content type': 'filesystem' }));
  await lxq('attach', 'default', vol, c.name, '/data');
  await c.start();
  await c.exec(['sh', '-c', 'echo one > /data/f']);
  await c.stop({ force: true });
  await lxq('snapshot', 'default', vol, 's1');
  expect(await lxq('show', 'default', vol)).toMatch(new RegExp(`used by: ${c.name}\nsnapshots: s1`));
  await lxq('detach', 'default', vol, c.name);
  await c.start();
  expect((await c.exec(['test', '-e', '/data/f'])).exitCode).not.toBe(0);
  await lxq('rename', 'default', vol, `${vol}-r`);
  await lxq('restore', 'default', `${vol}-r`, 's1');
  await lxq('delete', 'default', `${vol}-r/s1`);
  expect((await t.host.storage.pool('default').volumes.snapshots(`${vol}-r`))).toEqual([]);
  const bad = await runNode([...lxqArgv(t.dir), 'storage', 'volume', 'delete', 'default', 'missing']);
  expect(bad.code).not.toBe(0);
  expect(bad.stderr).toMatch(/no storage volume named "missing"/);
  await lxq('delete', 'default', `${vol}-r`);
  await c.delete({ force: true });
}, 600_000);
