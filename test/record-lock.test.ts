/**
 * Several processes changing one instance: each change is made under the instance's lock file
 * and from the record as it is on disk, so none is lost (without the lock the last writer's
 * in-memory record won, dropping the other's keys and devices).
 */
import { spawn } from 'node:child_process';
import * as path from 'node:path';

import { Host, Instance, NotFound } from '../lib';
import { FileLock } from '../lib/core/lock';
import { SHARED_IMAGES, tempHost, TestHost } from './helpers/host';

jest.setTimeout(120_000);

let t: TestHost;
let c: Instance;

beforeAll(async () => {
  t = await tempHost();
  c = await t.host.create(t.name('lock'), { image: 'busybox' });
});
afterAll(async () => {
  await t?.dispose();
});

/** A second Node process that opens the same host and makes `count` changes to the instance. */
function otherProcess(name: string, count: number): Promise<number | null> {
  const script = `
    const { Host } = require(${JSON.stringify(path.resolve(__dirname, '..', 'lib'))});
    (async () => {
      const host = await Host.open({ path: ${JSON.stringify(t.dir)}, images: ${JSON.stringify(SHARED_IMAGES)} });
      const c = await host.get(${JSON.stringify(name)});
      await Promise.all(Array.from({ length: ${count} }, (_, i) => c.update({ ['user.child' + i]: String(i) })));
      await c.addDevice('child-disk', { type: 'disk', source: '/tmp', path: '/mnt/child' });
      await host.close();
    })().catch((e) => { console.error(e); process.exit(1); });`;
  const child = spawn(process.execPath, ['-r', path.join(__dirname, 'helpers', 'ts-register.js'), '-e', script], { stdio: ['ignore', 'inherit', 'inherit'] });
  return new Promise((resolve) => child.once('exit', resolve));
}

test('changes from two hosts in this process and from another process all land', async () => {
  const second = await Host.open({ path: t.dir, images: SHARED_IMAGES });
  try {
    const c2 = await second.get(c.name);
    expect(c2).not.toBe(c); // two objects, two open lock files: they exclude each other as processes do
    const child = otherProcess(c.name, 10);
    await Promise.all([
      ...Array.from({ length: 10 }, (_, i) => c.update({ [`user.a${i}`]: String(i) })),
      ...Array.from({ length: 10 }, (_, i) => c2.update({ [`user.b${i}`]: String(i) })),
      c.addDevice('a-disk', { type: 'disk', source: '/tmp', path: '/mnt/a' }),
    ]);
    expect(await child).toBe(0);
    // The next change here starts from the record on disk, the other process's keys included.
    await c.update({ 'user.last': 'yes' });
    const keys = Object.keys(c.config).filter((k) => k.startsWith('user.'));
    expect(keys.sort()).toEqual([...['a', 'b', 'child'].flatMap((p) => Array.from({ length: 10 }, (_, i) => `user.${p}${i}`)), 'user.last'].sort());
    expect(Object.keys(c.devices).sort()).toEqual(['a-disk', 'child-disk']);
    const fresh = await (await Host.open({ path: t.dir, images: SHARED_IMAGES })).get(c.name);
    expect(Object.keys(fresh.config).filter((k) => k.startsWith('user.')).length).toBe(31);
  } finally {
    await second.close();
  }
});

test('an instance deleted by another holder is NotFound for this one, not recreated', async () => {
  const d = await t.host.create(t.name('gone'), { image: 'busybox' });
  const second = await Host.open({ path: t.dir, images: SHARED_IMAGES });
  try {
    const d2 = await second.get(d.name);
    await d2.delete();
    await expect(d.update({ 'user.x': '1' })).rejects.toThrow(NotFound);
    await expect(d.start()).rejects.toThrow(/no longer exists/);
    await expect(t.host.get(d.name)).rejects.toThrow(NotFound);
  } finally {
    await second.close();
  }
});

test('holds of one FileLock in this process take turns (flock alone lets an open file in twice)', async () => {
  const lock = new FileLock(path.join(t.dir, 'turns.lock'), 'the test lock');
  const seen: string[] = [];
  const hold = (k: number) =>
    lock.hold(async () => {
      seen.push(`in ${k}`);
      await new Promise((r) => setTimeout(r, 20));
      seen.push(`out ${k}`);
    });
  await Promise.all([hold(0), hold(1), hold(2).then(() => lock.hold(async () => seen.push('after')))]);
  expect(seen).toEqual(['in 0', 'out 0', 'in 1', 'out 1', 'in 2', 'out 2', 'after']);
  await expect(lock.hold(async () => Promise.reject(new Error('op failed')))).rejects.toThrow('op failed');
  expect(await lock.hold(async () => 'released after a failure')).toBe('released after a failure');
  await lock.close();
});
