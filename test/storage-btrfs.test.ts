/**
 * The btrfs pool driver on real containers, each test on a loop pool of its own (removed at its
 * end, loop device and mount included, also after a failure): create, start, write, a snapshot
 * of a running container, restore, copy, export → import, publish and delete on busybox, each
 * container's files in its own subvolume; the pool mounted again by Host.open after its mount
 * and loop device are gone (as after a reboot); leftovers of a dead process cleared; a root
 * disk's `size` enforced by a qgroup; bad input refused and changing nothing.
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';

import { AlreadyExists, Busy, Host, InvalidArgument, NotFound, NotSupported } from '../lib';
import { SHARED_IMAGES, tempHost, TestHost, thrown } from './helpers/host';
import { killedAt, mountsUnder, sh } from './helpers/storage';

let t: TestHost;
const published: string[] = [];

/** Loop devices whose file is below `dir`. */
const loopsUnder = (dir: string) => sh('losetup --list --noheadings --output NAME,BACK-FILE').split('\n').filter((l) => l.includes(dir));
const out = (r: { stdout: Buffer }) => r.stdout.toString().trim();
const poolMount = (pool: string) => path.join(t.dir, 'storage-pools', pool, 'mnt');
const subvolumes = (pool: string) => sh(`btrfs subvolume list ${poolMount(pool)}`).split('\n').filter((l) => l.includes(' path roots/'));

/** Whatever a failed test left of the host's mounts and loop devices, released. */
function release(): void {
  for (const p of mountsUnder(t.dir).sort((a, b) => b.length - a.length)) sh(`umount -l '${p}' || true`);
  for (const l of loopsUnder(t.dir)) sh(`losetup -d ${l.split(' ')[0]} 2>/dev/null || true`);
}

/** Runs `body` on a fresh loop pool, deleted afterwards with its instances (also after a failure). */
async function withPool(body: (pool: string) => Promise<void>, config: Record<string, string> = { size: '1GiB' }): Promise<void> {
  const pool = t.name('bt');
  await t.host.storage.pools.create(pool, { driver: 'btrfs', config });
  try {
    await body(pool);
  } finally {
    for (const i of await t.host.list()) if (i.type === 'container' && (await t.host.storage.pools.get(pool)).usedBy.includes(i.name)) await i.delete({ force: true }).catch(() => undefined);
    await t.host.storage.pools.delete(pool).catch(() => undefined);
    release();
  }
  expect(mountsUnder(path.join(t.dir, 'storage-pools'))).toEqual([]);
  expect(loopsUnder(t.dir)).toEqual([]);
}

beforeAll(async () => {
  t = await tempHost();
  await t.host.images.ensure('busybox');
}, 600_000);
afterAll(async () => {
  for (const a of published) await t?.host.images.delete(a).catch(() => undefined);
  if (t) {
    for (const i of await t.host.list().catch(() => [])) await i.delete({ force: true }).catch(() => undefined);
    release();
    await t.dispose();
  }
}, 180_000);

test('bad input is refused, typed and naming the key, and changes nothing (pools, mounts, loop devices)', async () => {
  const notBtrfs = path.join(t.dir, 'plain');
  mkdirSync(notBtrfs, { recursive: true });
  const file = path.join(t.dir, 'exists.img');
  writeFileSync(file, '');
  // This host's mounts and loop devices only: other tests of the machine mount and unmount meanwhile.
  const state = () => [sh(`find ${path.join(t.dir, 'storage-pools')} -printf '%P %s\\n' | sort`), mountsUnder(t.dir).sort(), loopsUnder(t.dir).sort()];
  const before = state();
  const pools = t.host.storage.pools;
  const cases: Array<[() => Promise<unknown>, new (...a: never[]) => Error, RegExp]> = [
    [() => pools.create(t.name('p'), { driver: 'btrfs', config: { source: notBtrfs } }), InvalidArgument, /"source" .* is not on a btrfs filesystem/],
    [() => pools.create(t.name('p'), { driver: 'btrfs', config: { source: file } }), InvalidArgument, /"source" .* is a file that exists/],
    [() => pools.create(t.name('p'), { driver: 'btrfs', config: { source: path.join(t.dir, 'none') } }), InvalidArgument, /"source" .* does not exist/],
    [() => pools.create(t.name('p'), { driver: 'btrfs', config: { size: 'big' } }), InvalidArgument, /"size": expected a size/],
    [() => pools.create(t.name('p'), { driver: 'btrfs', config: { size: '64MiB' } }), InvalidArgument, /"size" "64MiB" is too small/],
    [() => pools.create(t.name('p'), { driver: 'btrfs', config: { 'btrfs.mount_options': 'x' } }), InvalidArgument, /unknown key "btrfs.mount_options"/],
    [() => t.host.create(t.name('c'), { image: 'busybox', devices: { root: { type: 'disk', path: '/', pool: 'default', size: '1GiB' } } }), NotSupported, /"size" cannot be enforced on pool "default"/],
  ];
  for (const [call, type, message] of cases) {
    const e = await thrown(call());
    expect(e).toBeInstanceOf(type);
    expect(e.message).toMatch(message);
  }
  expect(state()).toEqual(before);
});

test('busybox: create, start, write, snapshot running, restore, copy, export → import, publish, delete', async () => {
  await withPool(async (pool) => {
    const a = await t.host.create(t.name('a'), { image: 'busybox', pool });
    const b = await t.host.create(t.name('b'), { image: 'busybox', devices: { root: { type: 'disk', path: '/', pool } } });
    expect((await t.host.storage.pools.get(pool)).usedBy.sort()).toEqual([a.name, b.name].sort());
    expect(subvolumes(pool)).toHaveLength(2);
    await a.start();
    await b.start();
    await a.exec(['sh', '-c', 'echo one > /root/mark']);
    // Only in a's subvolume: not in b, not in the image's.
    expect((await b.exec(['cat', '/root/mark'])).exitCode).not.toBe(0);
    const image = sh(`ls -d ${poolMount(pool)}/images/*`).trim();
    expect(existsSync(path.join(image, 'rootfs', 'root', 'mark'))).toBe(false);
    await a.snapshots.create('s1'); // running: frozen for the instant of a read-only snapshot
    expect(subvolumes(pool)).toHaveLength(3);
    await a.exec(['sh', '-c', 'echo two > /root/mark && rm /bin/ls']);
    await a.snapshots.restore('s1');
    expect(await a.status()).toBe('running');
    expect(out(await a.exec(['cat', '/root/mark']))).toBe('one');
    expect((await a.exec(['ls', '/'])).exitCode).toBe(0);
    expect(subvolumes(pool)).toHaveLength(3); // the replaced root was deleted
    const copy = await t.host.copy(a.name, t.name('copy'));
    expect((await t.host.storage.pools.get(pool)).usedBy).toContain(copy.name);
    await copy.start();
    expect(out(await copy.exec(['cat', '/root/mark']))).toBe('one');
    await copy.exec(['sh', '-c', 'echo copy > /root/mark']);
    expect(out(await a.exec(['cat', '/root/mark']))).toBe('one');
    expect((await copy.snapshots.list()).map((s) => s.name)).toEqual(['s1']);
    await a.stop({ force: true });
    const alias = `test/${t.name('pub')}`;
    published.push(alias);
    await t.host.images.publish(a, alias);
    expect(readFileSync(path.join((await t.host.images.get(alias)).dir, 'rootfs', 'root', 'mark'), 'utf8')).toBe('one\n');
    const file = path.join(t.dir, `${a.name}.tar.zst`);
    await a.export(file);
    expect(sh(`tar -tf ${file}`)).toContain('instance/rootfs/root/mark');
    const back = await t.host.import(file, { name: t.name('imported') });
    await back.start();
    expect(out(await back.exec(['cat', '/root/mark']))).toBe('one');
    await back.delete({ force: true });
    // Deleting the copy leaves the source's snapshot whole (each has its own subvolume).
    await copy.delete({ force: true });
    await a.snapshots.restore('s1');
    await a.snapshots.delete('s1');
    await a.delete({ force: true });
    await b.delete({ force: true });
    expect(subvolumes(pool)).toEqual([]);
  });
}, 600_000);

test('an image\'s subvolume goes with the image: Busy while a container uses it, removed by delete; one deleted through another host goes at the next Host.open', async () => {
  await withPool(async (pool) => {
    const images = () => readdirSync(path.join(poolMount(pool), 'images')).filter((n) => !n.startsWith('.')).sort();
    const src = await t.host.create(t.name('src'), { image: 'busybox', pool });
    const [first, second] = [`test/${t.name('img')}`, `test/${t.name('img')}`];
    published.push(first, second);
    await t.host.images.publish(src, first);
    await t.host.images.publish(src, second);
    await src.delete();
    const busybox = images();
    const a = await t.host.create(t.name('a'), { image: first, pool });
    const b = await t.host.create(t.name('b'), { image: second, pool });
    const [ofFirst] = images().filter((n) => !busybox.includes(n) && readFileSync(path.join(poolMount(pool), 'images', n, 'source'), 'utf8').includes(`/${first}/`));
    expect(images()).toHaveLength(busybox.length + 2);
    expect(await thrown(t.host.images.delete(first))).toBeInstanceOf(Busy);
    expect(images()).toContain(ofFirst);
    await a.delete();
    await t.host.images.delete(first);
    expect(images()).toHaveLength(busybox.length + 1);
    expect(images()).not.toContain(ofFirst);
    // Through another host on the same image store (b is not its instance): this pool learns at its next open.
    await b.delete();
    const other = await tempHost();
    try {
      await other.host.images.delete(second);
    } finally {
      await other.dispose();
    }
    expect(images()).toHaveLength(busybox.length + 1);
    await Host.open({ path: t.dir, images: SHARED_IMAGES });
    expect(images()).toEqual(busybox);
  });
}, 600_000);

test('after a reboot (mount and loop device gone) Host.open mounts the pool again; a dead process\'s leftovers are cleared', async () => {
  await withPool(async (pool) => {
    const c = await t.host.create(t.name('r'), { image: 'busybox', pool });
    await c.start();
    await c.exec(['sh', '-c', 'echo kept > /root/kept']);
    await c.stop({ force: true });
    // Leftovers of a killed process: a subvolume no directory names (its maker, pid 2^22+1, is dead), and below a half-made loop pool still mounted.
    const orphan = path.join(poolMount(pool), 'roots', `${2 ** 22 + 1}-0123456789abcdef`);
    sh(`btrfs -q subvolume create ${orphan}`);
    // The reboot: every mount below the host and the loop devices go.
    release();
    expect(mountsUnder(t.dir)).toEqual([]);
    const half = path.join(t.dir, 'storage-pools', `.lxq-tmp-${2 ** 22 + 1}-pool-00000000`);
    mkdirSync(path.join(half, 'mnt'), { recursive: true });
    sh(`truncate -s 128M ${half}/btrfs.img && mkfs.btrfs -q ${half}/btrfs.img && mount -o loop ${half}/btrfs.img ${half}/mnt`);
    const again = await Host.open({ path: t.dir, images: SHARED_IMAGES });
    try {
      expect(mountsUnder(path.join(t.dir, 'storage-pools'))).toEqual([poolMount(pool)]);
      expect(existsSync(half)).toBe(false);
      expect(existsSync(orphan)).toBe(false);
      expect(loopsUnder(t.dir)).toHaveLength(1);
      const back = await again.get(c.name);
      await back.start();
      expect(out(await back.exec(['cat', '/root/kept']))).toBe('kept');
      await back.delete({ force: true });
    } finally {
      await again.close();
    }
  });
}, 600_000);

/** The subvolume ids the host's directories name (instances and snapshots; staging entries are leftovers). */
function namedSubvolumes(): string[] {
  const named: string[] = [];
  const instances = path.join(t.dir, 'instances');
  const read = (dir: string) => existsSync(path.join(dir, 'btrfs.json')) && named.push(JSON.parse(readFileSync(path.join(dir, 'btrfs.json'), 'utf8')).subvolume);
  for (const n of readdirSync(instances).filter((n) => !n.startsWith('.'))) {
    read(path.join(instances, n));
    const snaps = path.join(instances, n, 'snapshots');
    if (existsSync(snaps)) for (const s of readdirSync(snaps).filter((s) => !s.startsWith('.'))) read(path.join(snaps, s));
  }
  return named.sort();
}

test('a process killed at any moment of create, snapshot, copy, restore or delete leaves no subvolume nothing names, once the host is opened again', async () => {
  await withPool(async (pool) => {
    const script = `
      const { Host } = require(${JSON.stringify(path.resolve('lib'))});
      (async () => {
        const h = await Host.open({ path: ${JSON.stringify(t.dir)}, images: ${JSON.stringify(SHARED_IMAGES)} });
        for (let i = 0; ; i++) {
          const c = await h.create('k' + process.pid + '-' + i, { image: 'busybox', pool: ${JSON.stringify(pool)} });
          await c.start();
          await c.snapshots.create('s');
          const copy = await h.copy(c.name, c.name + 'c');
          await c.stop({ force: true });
          await c.snapshots.restore('s');
          await copy.delete({ force: true });
          console.log('round', i);
        }
      })();`;
    for (const delay of [0, 150, 400]) {
      const child = spawn(process.execPath, ['-r', path.resolve('test/helpers/ts-register.js'), '-e', script], { stdio: ['ignore', 'pipe', 'inherit'], detached: true });
      // Killed during its second round, at a different moment each time.
      await new Promise<void>((resolve) => child.stdout!.on('data', (d: Buffer) => d.toString().includes('round') && resolve()));
      await new Promise((r) => setTimeout(r, delay + 300));
      process.kill(-child.pid!, 'SIGKILL');
      await new Promise((r) => child.once('exit', r));
      const again = await Host.open({ path: t.dir, images: SHARED_IMAGES });
      try {
        const ids = subvolumes(pool).map((l) => l.split(' path roots/')[1]).sort();
        expect(ids).toEqual(namedSubvolumes());
        expect(readdirSync(path.join(t.dir, 'instances')).filter((n) => n.startsWith('.lxq-tmp-'))).toEqual([]);
        expect(readdirSync(path.join(poolMount(pool), 'images')).filter((n) => n.startsWith('.lxq-tmp-'))).toEqual([]);
        expect(mountsUnder(path.join(t.dir, 'storage-pools'))).toEqual([poolMount(pool)]);
        expect(loopsUnder(t.dir)).toHaveLength(1);
      } finally {
        await again.close();
      }
    }
  });
}, 900_000);

test('a delete killed after its record went, or between a subvolume and the mark that names it: the next Host.open finishes it, and the name is free at once', async () => {
  await withPool(async (pool) => {
    const when: Array<[string, { killBefore?: string; killAfter?: string }]> = [
      ['record', { killAfter: "String(path).endsWith('/lxq.json')" }],
      ['mark', { killBefore: "String(path).endsWith('/btrfs.json')" }], // the snapshot's subvolume deleted, its mark not yet
    ];
    for (const [, kill] of when) {
      const name = t.name('kd');
      const c = await t.host.create(name, { image: 'busybox', pool });
      await c.snapshots.create('s');
      await killedAt('rm', t.dir, `await (await host.get(${JSON.stringify(name)})).delete({ force: true })`, kill);
      const again = await Host.open({ path: t.dir, images: SHARED_IMAGES });
      try {
        expect(existsSync(path.join(t.dir, 'instances', name))).toBe(false);
        expect(subvolumes(pool).map((l) => l.split(' path roots/')[1]).sort()).toEqual(namedSubvolumes());
        expect((await again.list()).map((i) => i.name)).not.toContain(name);
        expect(await thrown(again.get(name))).toBeInstanceOf(NotFound);
        await (await again.create(name, { image: 'busybox', pool })).delete();
      } finally {
        await again.close();
      }
    }
  });
}, 600_000);

test('a root disk\'s size is a qgroup limit: writing past it fails inside', async () => {
  await withPool(async (pool) => {
    const c = await t.host.create(t.name('q'), { image: 'busybox', devices: { root: { type: 'disk', path: '/', pool, size: '16MiB' } } });
    await c.start();
    const r = await c.exec(['sh', '-c', 'dd if=/dev/zero of=/root/big bs=1M count=64 && sync']);
    expect(r.exitCode).not.toBe(0);
    expect(r.stderr.toString()).toMatch(/quota|space/i);
    const e = await thrown(t.host.create(t.name('q'), { image: 'busybox', devices: { root: { type: 'disk', path: '/', pool, size: 'lots' } } }));
    expect(e).toBeInstanceOf(InvalidArgument);
    expect(e.message).toMatch(/"size"/);
    await c.delete({ force: true });
  });
}, 600_000);

test('a pool on a btrfs source directory keeps the directory and removes its subvolumes; the name is then free again', async () => {
  await withPool(async (loop) => {
    const source = path.join(poolMount(loop), 'elsewhere');
    mkdirSync(source);
    const pool = t.name('src');
    await t.host.storage.pools.create(pool, { driver: 'btrfs', config: { source } });
    await expect(t.host.storage.pools.create(pool, { driver: 'btrfs', config: { source } })).rejects.toBeInstanceOf(AlreadyExists);
    const c = await t.host.create(t.name('s'), { image: 'busybox', pool });
    await c.start();
    expect((await c.exec(['true'])).exitCode).toBe(0);
    await c.delete({ force: true });
    await t.host.storage.pools.delete(pool);
    expect(existsSync(source)).toBe(true);
    expect(sh(`ls -A ${source}`).trim()).toBe('');
  });
}, 600_000);

test('debian/12: systemd boots on a subvolume; a running snapshot and a copy; the copy gets its own machine id; nested subvolumes go with it', async () => {
  await t.host.images.ensure('debian/12');
  await withPool(async (pool) => {
    const c = await t.host.create(t.name('deb'), { image: 'debian/12', pool });
    await c.start({ wait: { for: 'systemd', timeout: 180_000 } });
    expect(out(await c.exec(['sh', '-c', '. /etc/os-release && echo $VERSION_ID']))).toBe('12');
    await c.exec(['sh', '-c', 'echo deb > /root/mark']);
    await c.snapshots.create('s');
    // A subvolume made inside (as systemd does for /var/lib/machines on btrfs): delete takes it first.
    await c.exec(['mkdir', '-p', '/var/lib/machines']);
    sh(`btrfs -q subvolume create ${path.join(t.dir, 'instances', c.name, 'rootfs', 'var', 'lib', 'machines', 'nested')}`);
    const copy = await t.host.copy(c.name, t.name('debcopy'), { snapshot: 's' });
    await copy.start({ wait: { for: 'systemd', timeout: 180_000 } });
    expect(out(await copy.exec(['cat', '/root/mark']))).toBe('deb');
    expect(out(await copy.exec(['cat', '/etc/machine-id']))).not.toBe(out(await c.exec(['cat', '/etc/machine-id'])));
    const image = sh(`ls -d ${poolMount(pool)}/images/*`).trim();
    expect(existsSync(path.join(image, 'rootfs', 'root', 'mark'))).toBe(false);
    await copy.delete({ force: true });
    await c.delete({ force: true });
    expect(sh(`btrfs subvolume list ${poolMount(pool)}`).split('\n').filter((l) => l.includes(' path roots/'))).toEqual([]);
  });
}, 900_000);
