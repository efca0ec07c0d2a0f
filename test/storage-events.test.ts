/**
 * The storage layer's events on real containers: `snapshot-created`, `-restored`, `-renamed`,
 * `-deleted`, `renamed` and `copied` on the instance's emitter, and the host-wide lifecycle
 * stream's `instance-snapshot-*`, `instance-renamed` (with the old name) and the copy's
 * `instance-created`, in this process and, through the journal, from another Host object.
 */
import { spawnSync } from 'node:child_process';

import type { LifecycleEvent, StorageEvent } from '../lib';
import { Host, InvalidArgument } from '../lib';
import { lxqArgv, SHARED_IMAGES, tempHost, type TestHost } from './helpers/host';

let t: TestHost;
const seen: LifecycleEvent[] = [];
const onEvent = (e: LifecycleEvent) => seen.push(e);

beforeAll(async () => {
  t = await tempHost();
  await t.host.images.ensure('busybox');
  t.host.on('lifecycle', onEvent);
}, 600_000);
afterAll(async () => {
  t.host.off('lifecycle', onEvent);
  await t.host.close();
  await t.dispose();
}, 120_000);

/** Waits until `n` events about `names` arrived (and a little longer, to catch duplicates). */
async function eventsOf(names: string[], n: number, timeoutMs = 30_000): Promise<string[]> {
  const of = () => seen.filter((e) => names.includes(e.name));
  const deadline = Date.now() + timeoutMs;
  while (of().length < n && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  await new Promise((r) => setTimeout(r, 300));
  return of().map((e) => [e.action, e.name, e.snapshot !== undefined ? `@${e.snapshot}` : '', e.previous !== undefined ? `<${e.previous}` : '', `:${e.requestor}`].join(''));
}

test('snapshot, rename and copy events: on the emitter, typed, and host-wide once each', async () => {
  const c = await t.host.create(t.name('ev'), { image: 'busybox' });
  const first = c.name;
  const own: string[] = [];
  c.on('snapshot-created', (e) => own.push(`created ${e.name}@${e.snapshot}`));
  c.on('snapshot-restored', (e) => own.push(`restored ${e.name}@${e.snapshot}`));
  c.on('snapshot-renamed', (e) => own.push(`renamed ${e.name}@${e.previous}->${e.snapshot}`));
  c.on('snapshot-deleted', (e) => own.push(`deleted ${e.name}@${e.snapshot}`));
  c.on('renamed', (e) => own.push(`instance ${e.previous}->${e.name}`));
  c.on('copied', (e) => own.push(`copied ${e.name}->${e.target}${e.snapshot ? '@' + e.snapshot : ''}`));

  await c.snapshots.create('a');
  await c.snapshots.restore('a');
  await c.snapshots.rename('a', 'b');
  const second = t.name('ev2');
  await c.rename(second);
  const copyName = t.name('evcp');
  await t.host.copy(second, copyName, { snapshot: 'b' });
  await c.snapshots.delete('b');
  // An expired snapshot pruned at the next touch is a deletion too.
  await c.snapshots.create('short', { expiresAt: new Date(Date.now() + 300) });
  await new Promise((r) => setTimeout(r, 400));
  expect(await c.snapshots.list()).toEqual([]);

  expect(own).toEqual([
    `created ${first}@a`,
    `restored ${first}@a`,
    `renamed ${first}@a->b`,
    `instance ${first}->${second}`,
    `copied ${second}->${copyName}@b`,
    `deleted ${second}@b`,
    `created ${second}@short`,
    `deleted ${second}@short`,
  ]);
  expect(await eventsOf([first, second, copyName], 9)).toEqual([
    `instance-created${first}:local`,
    `instance-snapshot-created${first}@a:local`,
    `instance-snapshot-restored${first}@a:local`,
    `instance-snapshot-renamed${first}@b<a:local`,
    `instance-renamed${second}<${first}:local`,
    `instance-created${copyName}:local`,
    `instance-snapshot-deleted${second}@b:local`,
    `instance-snapshot-created${second}@short:local`,
    `instance-snapshot-deleted${second}@short:local`,
  ]);

  // The old name is free after the rename: a new instance of that name is reported as created.
  seen.length = 0;
  await t.host.create(first, { image: 'busybox' });
  expect(await eventsOf([first], 1)).toEqual([`instance-created${first}:local`]);
}, 180_000);

test('storage events made through another Host object arrive through the journal, with their snapshot and old name', async () => {
  const other = await Host.open({ path: t.dir, images: SHARED_IMAGES });
  try {
    const c = await other.create(t.name('jr'), { image: 'busybox' });
    const before = c.name;
    await c.snapshots.create('x');
    const after = t.name('jr2');
    await c.rename(after);
    await c.snapshots.delete('x');
    expect(await eventsOf([before, after], 4)).toEqual([
      `instance-created${before}:local`,
      `instance-snapshot-created${before}@x:local`,
      `instance-renamed${after}<${before}:local`,
      `instance-snapshot-deleted${after}@x:local`,
    ]);
  } finally {
    await other.close();
  }
}, 120_000);

test('storage pool events (host.on("storage")): made here, through another Host object, and by another process; a refused change reports nothing', async () => {
  const pools: StorageEvent[] = [];
  const onPool = (e: StorageEvent) => pools.push(e);
  t.host.on('storage', onPool);
  const other = await Host.open({ path: t.dir, images: SHARED_IMAGES });
  const [a, b, c] = ['pa', 'pb', 'pc'].map((p) => t.name(p));
  const of = () => pools.filter((e) => [a, b, c].includes(e.name)).map((e) => `${e.action} ${e.name} ${e.requestor}`);
  const until = async (n: number) => {
    for (const deadline = Date.now() + 30_000; of().length < n && Date.now() < deadline; ) await new Promise((r) => setTimeout(r, 20));
    await new Promise((r) => setTimeout(r, 300)); // and no duplicate after
    return of();
  };
  try {
    await t.host.storage.pools.create(a, { driver: 'dir' });
    await t.host.storage.pools.update(a, { description: 'x' });
    await expect(t.host.storage.pools.update(a, { config: { bogus: '1' } })).rejects.toThrow(InvalidArgument);
    await other.storage.pools.create(b, { driver: 'overlay' });
    await other.storage.pools.delete(b);
    // Another process: the CLI, on the same host directory.
    const cli = spawnSync(process.execPath, [...lxqArgv(t.dir), 'storage', 'create', c, 'dir'], { encoding: 'utf8' });
    expect(cli.stderr).toBe('');
    await t.host.storage.pools.delete(c);
    await t.host.storage.pools.delete(a);
    expect(await until(7)).toEqual([
      `storage-pool-created ${a} local`,
      `storage-pool-updated ${a} local`,
      `storage-pool-created ${b} local`,
      `storage-pool-deleted ${b} local`,
      `storage-pool-created ${c} external`,
      `storage-pool-deleted ${c} local`,
      `storage-pool-deleted ${a} local`,
    ]);
    expect(pools.every((e) => !Number.isNaN(Date.parse(e.at)))).toBe(true);
    // Instance events and pool events stay apart.
    expect(seen.some((e) => [a, b, c].includes(e.name))).toBe(false);
  } finally {
    t.host.off('storage', onPool);
    await other.close();
    for (const p of [a, b, c]) await t.host.storage.pools.delete(p).catch(() => undefined);
  }
}, 120_000);
