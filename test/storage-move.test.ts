/**
 * Copies and moves of instances across storage pools (`lxc copy -s`, `lxc move -s`): a busybox
 * container with a snapshot copied dir → btrfs and the copy moved btrfs → overlay, its files,
 * a file of the image deleted inside and its snapshot checked inside after each start; the pool
 * in the record follows, the old pool's data goes; a running instance is not moved; an aborted
 * move and a process killed at either rename of the swap leave one whole instance (the next
 * Host.open finishes or drops the swap); a VM copied to a btrfs pool and moved back to dir, one
 * boot.
 */
import { existsSync, readdirSync, realpathSync } from 'node:fs';
import * as path from 'node:path';

import { Aborted, Busy, Host, type Instance, InvalidArgument, NotFound } from '../lib';
import { killedAtRename, releaseUnder, sh } from './helpers/storage';
import { lxqArgv, runNode, SHARED_IMAGES, tempHost, TestHost, thrown } from './helpers/host';

let t: TestHost;
const pools = { dir: '', bt: '', ov: '' };

const poolMount = () => path.join(t.dir, 'storage-pools', pools.bt, 'mnt');
const subvolumes = () => sh(`btrfs subvolume list ${poolMount()}`).split('\n').filter((l) => l.includes(' path roots/')).map((l) => l.split(' path ')[1]).sort();
const instancesDir = () => path.join(t.dir, 'instances');
/** What a crash or failure could leave in the instances directory: staging entries and move journals. */
const leftovers = () => [...readdirSync(instancesDir()).filter((n) => n.startsWith('.lxq-tmp-')), ...(existsSync(path.join(instancesDir(), '.lxq-moves')) ? readdirSync(path.join(instancesDir(), '.lxq-moves')) : [])].sort();
const usedBy = async (pool: string) => (await t.host.storage.pools.get(pool)).usedBy.sort();
const out = async (i: Instance, script: string) => (await i.exec(['sh', '-c', script], { timeout: 180_000 })).stdout.toString().trim();
/** The files a busybox container of this file was given (and /etc/shadow of its image deleted). */
const contents = (i: Instance) => out(i, 'cat /root/one /root/two 2>&1; ls /etc/shadow 2>&1; true');

beforeAll(async () => {
  t = await tempHost();
  await t.host.images.ensure('busybox');
  pools.dir = t.name('pd');
  pools.bt = t.name('pb');
  pools.ov = t.name('po');
  await t.host.storage.pools.create(pools.dir, { driver: 'dir' });
  await t.host.storage.pools.create(pools.bt, { driver: 'btrfs', config: { size: '1GiB' } });
  await t.host.storage.pools.create(pools.ov, { driver: 'overlay' });
}, 600_000);
afterAll(async () => {
  if (!t) return;
  for (const i of await t.host.list().catch(() => [])) await i.delete({ force: true }).catch(() => undefined);
  for (const p of Object.values(pools)) if (p) await t.host.storage.pools.delete(p).catch(() => undefined);
  releaseUnder(t.dir);
  await t.dispose();
}, 300_000);

/** A stopped busybox container on the dir pool: /root/one, snapshot s1, then /root/two and /etc/shadow deleted. */
async function prepared(): Promise<Instance> {
  const a = await t.host.create(t.name('a'), { image: 'busybox', pool: pools.dir });
  await a.start();
  await out(a, 'echo one > /root/one; sync');
  await a.stop({ force: true });
  await a.snapshots.create('s1');
  await a.start();
  await out(a, 'echo two > /root/two; rm /etc/shadow; sync');
  await a.stop({ force: true });
  return a;
}

const AFTER = 'one\ntwo\nls: /etc/shadow: No such file or directory';
const AT_S1 = 'one\ncat: can\'t open \'/root/two\': No such file or directory\n/etc/shadow';

test('a container with a snapshot copied dir → btrfs, the copy moved btrfs → overlay: files, whiteouts and snapshot follow, the source stays whole', async () => {
  const a = await prepared();
  await a.start();
  expect(await contents(a)).toBe(AFTER);
  await a.stop({ force: true });

  // A copy on another pool (of the stopped source): its tree in a subvolume of the btrfs pool, its snapshot a read-only one.
  const c = await t.host.copy(a.name, t.name('c'), { pool: pools.bt });
  expect(await usedBy(pools.bt)).toEqual([c.name]);
  expect(await usedBy(pools.dir)).toEqual([a.name]);
  expect(subvolumes()).toHaveLength(2);
  expect((await c.snapshots.list()).map((s) => s.name)).toEqual(['s1']);
  await c.start();
  expect(await contents(c)).toBe(AFTER);
  // As LXD: a running instance does not move between pools; nothing changes.
  expect(await thrown(c.move({ pool: pools.ov }))).toBeInstanceOf(Busy);
  expect(await usedBy(pools.bt)).toEqual([c.name]);
  await out(c, 'echo three > /root/three; sync');
  await c.stop({ force: true });

  const devicesBefore = structuredClone(c.devices);
  await c.move({ pool: pools.ov });
  expect(await usedBy(pools.ov)).toEqual([c.name]);
  expect(await usedBy(pools.bt)).toEqual([]);
  expect(subvolumes()).toEqual([]); // the btrfs pool's data of it and its snapshot gone
  expect(c.devices).toEqual(devicesBefore); // its identity stays (MACs)
  expect(leftovers()).toEqual([]);
  // Another process sees the same (the record names the pool).
  const again = await Host.open({ path: t.dir, images: SHARED_IMAGES });
  try {
    expect((await again.storage.pools.get(pools.ov)).usedBy).toEqual([c.name]);
  } finally {
    await again.close();
  }
  await c.start();
  expect(await contents(c)).toBe(AFTER);
  expect(await out(c, 'cat /root/three')).toBe('three');
  await c.stop({ force: true });
  // The snapshot moved with it, restorable on the overlay pool: the deleted image file is back.
  await c.snapshots.restore('s1');
  await c.start();
  expect(await contents(c)).toBe(AT_S1);
  await c.stop({ force: true });

  // Moved and renamed at once, back onto the dir pool.
  const name = t.name('m');
  await c.move({ pool: pools.dir, name });
  expect(c.name).toBe(name);
  expect(await usedBy(pools.dir)).toEqual([a.name, name].sort());
  expect(await usedBy(pools.ov)).toEqual([]);

  // The source is untouched by all of it.
  await a.start();
  expect(await contents(a)).toBe(AFTER);
  await a.stop({ force: true });
  for (const i of [a, c]) await i.delete({ force: true });
}, 900_000);

test('bad input is refused before anything changes: an unknown pool, a bad pool name, nothing to do', async () => {
  const a = await t.host.create(t.name('b'), { image: 'busybox', pool: pools.dir });
  const before = readdirSync(instancesDir()).sort();
  expect(await thrown(a.move({ pool: 'no-such-pool' }))).toBeInstanceOf(NotFound);
  expect(await thrown(a.move({ pool: 'bad/name' }))).toBeInstanceOf(InvalidArgument);
  expect(await thrown(a.move({}))).toBeInstanceOf(InvalidArgument);
  expect(await thrown(t.host.copy(a.name, t.name('x'), { pool: 'no-such-pool' }))).toBeInstanceOf(NotFound);
  expect(readdirSync(instancesDir()).sort()).toEqual(before);
  expect(await usedBy(pools.dir)).toEqual([a.name]);
  await a.move({ pool: pools.dir }); // already there: nothing to do
  await a.delete();
}, 300_000);

test('the CLI: lxq copy -s and lxq move -s (with a new name); a move to a pool that does not exist fails with one line and changes nothing', async () => {
  const a = await t.host.create(t.name('l'), { image: 'busybox', pool: pools.dir });
  const [copy, moved] = [t.name('lc'), t.name('lm')];
  const lxq = (...args: string[]) => runNode([...lxqArgv(t.dir), ...args]);
  expect(await lxq('copy', a.name, copy, '-s', pools.ov)).toMatchObject({ code: 0, stderr: '' });
  expect(await lxq('move', copy, moved, '--storage', pools.bt)).toMatchObject({ code: 0, stderr: '' });
  expect(await usedBy(pools.bt)).toEqual([moved]);
  expect(await usedBy(pools.ov)).toEqual([]);
  const bad = await lxq('move', moved, '-s', 'no-such-pool');
  expect(bad.code).not.toBe(0);
  expect(bad.stderr.trim().split('\n')).toHaveLength(1);
  expect(bad.stderr).toMatch(/no-such-pool/);
  expect(await usedBy(pools.bt)).toEqual([moved]);
  for (const n of [a.name, moved]) await (await t.host.get(n)).delete({ force: true });
}, 300_000);

test('an aborted move leaves the source whole and nothing of the copy', async () => {
  const a = await prepared();
  const files = readdirSync(path.join(instancesDir(), a.name)).sort();
  const ac = new AbortController();
  // Aborted as soon as the copy starts: the move stops there and removes what it made.
  const e = await thrown(a.move({ pool: pools.bt, signal: ac.signal, onProgress: (p) => p.phase === 'copying' && ac.abort() }));
  expect(e).toBeInstanceOf(Aborted);
  expect(readdirSync(path.join(instancesDir(), a.name)).sort()).toEqual(files);
  expect(await usedBy(pools.dir)).toEqual([a.name]);
  expect(await usedBy(pools.bt)).toEqual([]);
  expect(subvolumes()).toEqual([]);
  expect(readdirSync(instancesDir()).filter((n) => n.startsWith('.lxq-tmp-'))).toEqual([]);
  await a.start();
  expect(await contents(a)).toBe(AFTER);
  await a.delete({ force: true });
}, 600_000);

/**
 * A child process moves `name` to the btrfs pool and is killed with SIGKILL at one of the swap's
 * renames (before the first, or between the two): the rename in its process is wrapped to kill
 * it there, so the moment is exact whatever the load.
 */
function killedMove(name: string, at: 'before-first' | 'between'): Promise<void> {
  const swap = "to.includes('-moved-out-')";
  return killedAtRename(t.dir, `await (await host.get(${JSON.stringify(name)})).move({ pool: ${JSON.stringify(pools.bt)} })`, at === 'before-first' ? { killBefore: swap } : { killAfter: swap });
}

test('a process killed at either rename of a move: the next Host.open leaves one whole instance, on the old pool or the new', async () => {
  for (const [at, pool] of [
    ['before-first', pools.dir],
    ['between', pools.bt],
  ] as const) {
    const a = await prepared();
    await killedMove(a.name, at);
    const again = await Host.open({ path: t.dir, images: SHARED_IMAGES });
    try {
      expect(leftovers()).toEqual([]);
      const i = await again.get(a.name);
      expect((await again.storage.pools.get(pool)).usedBy).toEqual([a.name]);
      // Only the subvolumes the instance (and its snapshot) name are left on the btrfs pool.
      expect(subvolumes()).toHaveLength(pool === pools.bt ? 2 : 0);
      expect((await i.snapshots.list()).map((s) => s.name)).toEqual(['s1']);
      await i.start();
      expect(await contents(i)).toBe(AFTER);
      await i.delete({ force: true });
    } finally {
      await again.close();
    }
    await a.delete({ force: true }).catch(() => undefined);
  }
}, 900_000);

test('a VM copied to a btrfs pool and moved back to dir: its disk and internal snapshot go with it (one boot)', async () => {
  await t.host.images.ensure('vm/default');
  const disk = (name: string) => path.join(instancesDir(), name, 'disk.qcow2');
  const snapshotsOf = (name: string) => (JSON.parse(sh(`qemu-img info -U --output=json ${disk(name)}`)).snapshots ?? []).map((s: { name: string }) => s.name);
  const v = await t.host.create(t.name('v'), { type: 'vm', image: 'vm/default', config: { 'limits.memory': '256MiB' }, pool: pools.dir });
  await v.snapshots.create('s1');
  const c = await t.host.copy(v.name, t.name('vc'), { pool: pools.bt });
  expect(realpathSync(disk(c.name)).startsWith(poolMount() + '/roots/')).toBe(true);
  expect(await usedBy(pools.bt)).toEqual([c.name]);
  expect(snapshotsOf(c.name)).toEqual(snapshotsOf(v.name));
  await c.move({ pool: pools.dir });
  expect(realpathSync(disk(c.name))).toBe(disk(c.name)); // a file of its directory again
  expect(subvolumes()).toEqual([]);
  expect(await usedBy(pools.dir)).toEqual([v.name, c.name].sort());
  expect((await c.snapshots.list()).map((s) => s.name)).toEqual(['s1']);
  expect(snapshotsOf(c.name)).toEqual(snapshotsOf(v.name));
  await c.start();
  expect(await out(c, 'echo booted')).toBe('booted');
  await c.stop({ force: true });
  for (const i of [v, c]) await i.delete({ force: true });
}, 900_000);
