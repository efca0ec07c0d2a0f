/**
 * Storage pools on real containers: the pools API and its bad input, and containers on the
 * overlay pool (the default) made of busybox and debian/12: each one's changes in its own upper
 * directory, never in the image nor in another container; a file of the image deleted inside
 * stays deleted (a whiteout) until a snapshot brings it back; capabilities and xattrs through a
 * remount (as after a reboot) and a copy; publish and export flatten the merged view; delete and
 * a killed process leave no mount. Instances made before pools (no pool in their record) stay
 * on the dir pool, untouched.
 */
import { existsSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';

import { AlreadyExists, Busy, Host, InvalidArgument, NotFound, NotSupported } from '../lib';
import { tempHost, TestHost, thrown } from './helpers/host';
import { mountsUnder, sh } from './helpers/storage';

let t: TestHost;
const published: string[] = [];

beforeAll(async () => {
  t = await tempHost();
  await t.host.images.ensure('busybox');
}, 600_000);
afterAll(async () => {
  await t?.dispose();
  for (const a of published) await t?.host.images.delete(a).catch(() => undefined);
}, 120_000);

const instanceDir = (name: string) => path.join(t.dir, 'instances', name);
const rootfs = (name: string) => path.join(instanceDir(name), 'rootfs');
/** What bad input must not change: the pools' directory, entry by entry. */
const poolsTree = () => sh(`find ${path.join(t.dir, 'storage-pools')} -printf '%P %s %m\\n' | sort`);
const out = (r: { stdout: Buffer }) => r.stdout.toString().trim();

describe('the pools API', () => {
  test('a default overlay pool exists; create, get, list, update, delete; AlreadyExists and NotFound', async () => {
    const pools = t.host.storage.pools;
    const def = await pools.get('default');
    expect(def).toMatchObject({ name: 'default', driver: 'overlay', config: {} });
    const name = t.name('pool');
    const made = await pools.create(name, { driver: 'overlay', description: 'for tests' });
    expect(made).toMatchObject({ name, driver: 'overlay', description: 'for tests', usedBy: [] });
    expect((await pools.list()).map((p) => p.name)).toEqual(expect.arrayContaining(['default', name]));
    expect((await pools.update(name, { description: 'changed' })).description).toBe('changed');
    expect((await pools.get(name)).description).toBe('changed');
    await expect(pools.create(name, { driver: 'dir' })).rejects.toBeInstanceOf(AlreadyExists);
    await pools.delete(name);
    await expect(pools.get(name)).rejects.toBeInstanceOf(NotFound);
    await expect(pools.delete(name)).rejects.toBeInstanceOf(NotFound);
    // A second process opening the same host finds the same pools.
    const again = await Host.open({ path: t.dir, images: path.dirname(path.dirname((await t.host.images.get('busybox')).dir)) });
    expect((await again.storage.pools.list()).map((p) => p.name)).not.toContain(name);
    await again.close();
  });

  test('bad input is refused, typed and naming what is wrong, and changes nothing', async () => {
    const pools = t.host.storage.pools;
    const before = poolsTree();
    const cases: Array<[() => Promise<unknown>, new (...a: never[]) => Error, RegExp]> = [
      [() => pools.create(t.name('p'), { driver: 'zfs' as never }), InvalidArgument, /unknown storage driver "zfs"/],
      [() => pools.create(t.name('p'), { driver: 'overlay', config: { size: '10GiB' } }), InvalidArgument, /unknown key "size"/],
      [() => pools.create(t.name('p'), { driver: 'dir', config: { source: '/srv' } }), NotSupported, /"source"/],
      [() => pools.create(t.name('p'), { driver: 'overlay', colour: 'red' } as never), InvalidArgument, /unknown storage pool option "colour"/],
      [() => pools.create('', { driver: 'overlay' }), InvalidArgument, /non-empty/],
      [() => pools.create('a/b', { driver: 'overlay' }), InvalidArgument, /contains "\/"/],
      [() => pools.create('a b', { driver: 'overlay' }), InvalidArgument, /white space/],
      [() => pools.create('.hidden', { driver: 'overlay' }), InvalidArgument, /starts with "."/],
      [() => pools.create('x'.repeat(64), { driver: 'overlay' }), InvalidArgument, /64 bytes/],
      [() => pools.create('dir', { driver: 'overlay' }), InvalidArgument, /kept for a dir pool/],
      [() => pools.update('default', { config: { 'volume.size': '1GiB' } }), InvalidArgument, /unknown key "volume.size"/],
      [() => pools.get('../etc'), InvalidArgument, /contains "\/"/],
    ];
    for (const [call, type, message] of cases) {
      const e = await thrown(call());
      expect(e).toBeInstanceOf(type);
      expect(e.message).toMatch(message);
    }
    expect(poolsTree()).toBe(before);
  });

  test('a pool in use cannot be deleted (Busy naming its instances); create with an unknown pool is NotFound', async () => {
    const pool = t.name('busy');
    await t.host.storage.pools.create(pool, { driver: 'overlay' });
    const c = await t.host.create(t.name('user'), { image: 'busybox', pool });
    expect((await t.host.storage.pools.get(pool)).usedBy).toEqual([c.name]);
    const before = poolsTree();
    const e = await thrown(t.host.storage.pools.delete(pool));
    expect(e).toBeInstanceOf(Busy);
    expect(e.message).toContain(c.name);
    expect(poolsTree()).toBe(before);
    const instancesBefore = readdirSync(path.join(t.dir, 'instances')).sort();
    await expect(t.host.create(t.name('x'), { image: 'busybox', pool: 'no-such-pool' })).rejects.toBeInstanceOf(NotFound);
    await expect(t.host.create(t.name('x'), { image: 'busybox', devices: { root: { type: 'disk', path: '/', pool: 'no-such-pool' } } })).rejects.toBeInstanceOf(NotFound);
    await expect(t.host.create(t.name('x'), { image: 'busybox', pool: 'default', devices: { root: { type: 'disk', path: '/', pool } } })).rejects.toBeInstanceOf(InvalidArgument);
    await expect(t.host.create(t.name('x'), { image: 'busybox', devices: { root: { type: 'disk', path: '/', pool, size: '1GiB' } } })).rejects.toThrow(/size/);
    expect(readdirSync(path.join(t.dir, 'instances')).sort()).toEqual(instancesBefore);
    await c.delete();
    await t.host.storage.pools.delete(pool);
  });
});

describe('busybox on the overlay pool', () => {
  test('create writes no copy of the image; writes stay in the container; delete leaves no mount', async () => {
    const image = path.join((await t.host.images.get('busybox')).dir, 'rootfs');
    const a = await t.host.create(t.name('ov'), { image: 'busybox' });
    const b = await t.host.create(t.name('ov'), { image: 'busybox', devices: { root: { type: 'disk', path: '/', pool: 'default' } } });
    expect((await t.host.storage.pools.get('default')).usedBy).toEqual(expect.arrayContaining([a.name, b.name]));
    // The container's own files: an empty upper directory over the image.
    expect(readdirSync(path.join(instanceDir(a.name), 'upper'))).toEqual([]);
    expect(mountsUnder(rootfs(a.name))).toEqual([rootfs(a.name)]);
    // Its root sees the image's files, owned by the container's root on the host.
    const shifted = statSync(path.join(rootfs(a.name), 'bin', 'busybox'));
    expect(shifted.uid).toBe(statSync(path.join(image, 'bin', 'busybox')).uid + statSync(rootfs(a.name)).uid);
    await a.start();
    expect(out(await a.exec(['sh', '-c', 'echo written > /root/hello && id -u && stat -c %u /bin/busybox']))).toBe('0\n0');
    expect(readFileSync(path.join(instanceDir(a.name), 'upper', 'root', 'hello'), 'utf8')).toBe('written\n');
    expect(existsSync(path.join(image, 'root', 'hello'))).toBe(false);
    expect(existsSync(path.join(rootfs(b.name), 'root', 'hello'))).toBe(false);
    await b.start();
    expect((await b.exec(['cat', '/root/hello'])).exitCode).not.toBe(0);
    await a.stop({ force: true });
    await b.stop({ force: true });
    // The stopped container's files are read from the host as before.
    expect((await a.files.read('/root/hello')).toString()).toBe('written\n');
    const dirA = instanceDir(a.name);
    await a.delete();
    await b.delete();
    expect(mountsUnder(dirA)).toEqual([]);
    expect(existsSync(dirA)).toBe(false);
    expect(mountsUnder(t.dir)).toEqual([]);
    // The image is as it was.
    expect(existsSync(path.join(image, 'root', 'hello'))).toBe(false);
  });

  test('a file of the image deleted inside stays deleted after a restart and is back after restoring an earlier snapshot', async () => {
    const c = await t.host.create(t.name('wh'), { image: 'busybox' });
    await c.start();
    await c.snapshots.create('before');
    await c.exec(['rm', '/etc/group']);
    await c.exec(['sh', '-c', 'mkdir -p /srv/d && echo 1 > /srv/d/one']);
    await c.stop({ force: true });
    await c.start();
    expect((await c.exec(['cat', '/etc/group'])).exitCode).not.toBe(0);
    expect(out(await c.exec(['cat', '/srv/d/one']))).toBe('1');
    // The snapshot is the upper directory only: small, whatever the image's size.
    const snap = await c.snapshots.get('before');
    expect(snap.size).toBeLessThan(64 * 1024);
    await c.snapshots.restore('before'); // stops, swaps the upper, starts again
    expect(await c.status()).toBe('running');
    expect((await c.exec(['cat', '/etc/group'])).exitCode).toBe(0);
    expect((await c.exec(['test', '-e', '/srv/d'])).exitCode).not.toBe(0);
    const dir = instanceDir(c.name);
    await c.delete({ force: true });
    expect(mountsUnder(dir)).toEqual([]);
  });

  test('capabilities and xattrs survive a remount (as after a reboot) and a copy; the copy is independent', async () => {
    const c = await t.host.create(t.name('cap'), { image: 'busybox' });
    const f = path.join(rootfs(c.name), 'bin', 'capped');
    sh(`cp ${rootfs(c.name)}/bin/busybox ${f} && setcap cap_net_raw+ep ${f} && setfattr -n user.lxq -v kept ${f} && setfattr -n user.lxq -v image ${rootfs(c.name)}/etc/passwd`);
    const describe = (root: string) => sh(`getcap ${root}/bin/capped | sed 's,^.*/bin,/bin,' && getfattr --absolute-names -n user.lxq ${root}/bin/capped ${root}/etc/passwd | sed 's,^# file: .*/\\(bin\\|etc\\)/,\\1/,'`);
    const before = describe(rootfs(c.name));
    expect(before).toContain('cap_net_raw=ep');
    expect(before).toContain('user.lxq="kept"');
    // What a reboot does: the overlay is gone; the next start mounts it again.
    sh(`umount ${rootfs(c.name)}`);
    await c.start();
    expect(describe(rootfs(c.name))).toBe(before);
    expect(out(await c.exec(['sh', '-c', 'ls -l /bin/capped | cut -c1-10']))).toBe('-rwxr-xr-x');
    await c.exec(['sh', '-c', 'echo source > /root/mine']);
    const copy = await t.host.copy(c.name, t.name('cap-copy'));
    expect(describe(rootfs(copy.name))).toBe(before);
    expect(readFileSync(path.join(rootfs(copy.name), 'root', 'mine'), 'utf8')).toBe('source\n');
    await copy.start();
    await copy.exec(['sh', '-c', 'echo copy > /root/mine']);
    expect(out(await c.exec(['cat', '/root/mine']))).toBe('source');
    expect((await t.host.storage.pools.get('default')).usedBy).toEqual(expect.arrayContaining([c.name, copy.name]));
    await copy.delete({ force: true });
    await c.delete({ force: true });
  });

  test('publish and export flatten the merged view; the import runs', async () => {
    const c = await t.host.create(t.name('flat'), { image: 'busybox' });
    await c.start();
    await c.exec(['sh', '-c', 'rm /etc/group && echo flat > /root/flat']);
    await c.snapshots.create('s');
    await c.exec(['sh', '-c', 'echo later > /root/later']);
    await c.stop({ force: true });
    const alias = `test/${t.name('pub')}`;
    published.push(alias);
    await t.host.images.publish(c, alias);
    const image = path.join((await t.host.images.get(alias)).dir, 'rootfs');
    expect(readFileSync(path.join(image, 'root', 'flat'), 'utf8')).toBe('flat\n');
    expect(existsSync(path.join(image, 'etc', 'group'))).toBe(false);
    expect(statSync(path.join(image, 'root', 'flat')).uid).toBe(0); // back to the image's own ids
    const fromSnap = `test/${t.name('pubsnap')}`;
    published.push(fromSnap);
    await t.host.images.publish(c, fromSnap, { snapshot: 's' });
    const snapImage = path.join((await t.host.images.get(fromSnap)).dir, 'rootfs');
    expect(existsSync(path.join(snapImage, 'root', 'flat'))).toBe(true);
    expect(existsSync(path.join(snapImage, 'root', 'later'))).toBe(false);
    expect(existsSync(path.join(snapImage, 'etc', 'group'))).toBe(false);
    expect(mountsUnder(instanceDir(c.name))).toEqual([rootfs(c.name)]);
    const file = path.join(t.dir, 'flat.tar.zst');
    await c.export(file);
    const listing = sh(`tar -tf ${file}`);
    expect(listing).toContain('instance/rootfs/root/flat');
    expect(listing).not.toContain('instance/upper');
    const back = await t.host.import(file, { name: t.name('imported') });
    await back.start();
    expect(out(await back.exec(['cat', '/root/later']))).toBe('later');
    expect((await back.exec(['cat', '/etc/group'])).exitCode).not.toBe(0);
    await back.snapshots.restore('s');
    expect((await back.exec(['cat', '/root/later'])).exitCode).not.toBe(0);
    expect(out(await back.exec(['cat', '/root/flat']))).toBe('flat');
    await back.delete({ force: true });
    await c.delete({ force: true });
  });

  test('an image in use by an overlay container cannot be deleted', async () => {
    const alias = `test/${t.name('inuse')}`;
    published.push(alias);
    const src = await t.host.create(t.name('src'), { image: 'busybox' });
    await t.host.images.publish(src, alias);
    const c = await t.host.create(t.name('on'), { image: alias });
    await expect(t.host.images.delete(alias)).rejects.toBeInstanceOf(Busy);
    await c.start();
    expect((await c.exec(['true'])).exitCode).toBe(0);
    await c.delete({ force: true });
    await src.delete();
    await t.host.images.delete(alias);
  });
});

test('an instance made before pools (no pool in its record) stays on the dir pool and keeps working', async () => {
  await t.host.storage.pools.create('dir', { driver: 'dir' }).catch((e) => (e instanceof AlreadyExists ? undefined : Promise.reject(e)));
  const c = await t.host.create(t.name('old'), { image: 'busybox', pool: 'dir' });
  expect(mountsUnder(rootfs(c.name))).toEqual([]);
  expect(existsSync(path.join(rootfs(c.name), 'bin', 'busybox'))).toBe(true);
  // The record as lxq wrote it before pools: no pool at all.
  const recordFile = path.join(instanceDir(c.name), 'lxq.json');
  const record = JSON.parse(readFileSync(recordFile, 'utf8'));
  delete record.pool;
  writeFileSync(recordFile, JSON.stringify(record));
  const reopened = await Host.open({ path: t.dir, images: path.dirname(path.dirname((await t.host.images.get('busybox')).dir)) });
  const old = await reopened.get(c.name);
  expect((await reopened.storage.pools.get('dir')).usedBy).toContain(c.name);
  await old.start();
  expect((await old.exec(['test', '-x', '/bin/busybox'])).exitCode).toBe(0);
  await old.snapshots.create('s');
  expect(existsSync(path.join(instanceDir(c.name), 'snapshots', 's', 'rootfs', 'bin', 'busybox'))).toBe(true);
  await old.delete({ force: true });
  await reopened.close();
});

describe('debian/12 on the overlay pool', () => {
  beforeAll(async () => {
    await t.host.images.ensure('debian/12');
  }, 1_800_000);

  test('create is a few directories, systemd boots on it, a copy gets its own machine id', async () => {
    const t0 = process.hrtime.bigint();
    const c = await t.host.create(t.name('deb'), { image: 'debian/12' });
    const ms = Number(process.hrtime.bigint() - t0) / 1e6;
    console.log(`debian/12 create on overlay: ${ms.toFixed(1)} ms, ${sh(`du -sk ${instanceDir(c.name)}/upper | cut -f1`).trim()} KiB in upper`);
    expect(Number(sh(`du -sk --one-file-system ${instanceDir(c.name)} | cut -f1`))).toBeLessThan(1024);
    await c.start({ wait: { for: 'systemd', timeout: 120_000 } });
    expect(out(await c.exec(['sh', '-c', '. /etc/os-release && echo $VERSION_ID']))).toBe('12');
    await c.exec(['sh', '-c', 'echo deb > /root/mine && rm /etc/issue']);
    const id = out(await c.exec(['cat', '/etc/machine-id']));
    expect(id).toMatch(/^[0-9a-f]{32}$/);
    const copy = await t.host.copy(c.name, t.name('deb-copy'));
    await copy.start({ wait: { for: 'systemd', timeout: 120_000 } });
    const copyId = out(await copy.exec(['cat', '/etc/machine-id']));
    expect(copyId).toMatch(/^[0-9a-f]{32}$/);
    expect(copyId).not.toBe(id);
    expect(out(await copy.exec(['cat', '/root/mine']))).toBe('deb');
    expect((await copy.exec(['test', '-e', '/etc/issue'])).exitCode).not.toBe(0);
    const image = path.join((await t.host.images.get('debian/12')).dir, 'rootfs');
    expect(existsSync(path.join(image, 'etc', 'issue'))).toBe(true);
    const dirs = [instanceDir(c.name), instanceDir(copy.name)];
    await copy.delete({ force: true });
    await c.delete({ force: true });
    for (const d of dirs) expect(mountsUnder(d)).toEqual([]);
  }, 600_000);
});
