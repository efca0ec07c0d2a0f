/**
 * Host-wide lifecycle events: changes made by this process, by a second Node process on the same
 * host directory, by lxc-stop, by a container's own init exiting and by a kill -9 of a VM's QEMU,
 * each seen once, in order.
 */
import { execFile, execFileSync } from 'node:child_process';
import * as path from 'node:path';
import { promisify } from 'node:util';

import type { Instance, LifecycleEvent } from '../lib';
import { Host, InvalidArgument } from '../lib';
import { SHARED_IMAGES, tempHost, type TestHost } from './helpers/host';

const execFileP = promisify(execFile);

let t: TestHost;
const seen: LifecycleEvent[] = [];
const onEvent = (e: LifecycleEvent) => seen.push(e);

beforeAll(async () => {
  t = await tempHost();
  t.host.on('lifecycle', onEvent);
  await t.host.ready();
});
afterAll(async () => {
  t.host.off('lifecycle', onEvent);
  await t.host.close();
  await t.dispose();
});

/** Runs `body` (JavaScript using `host`, `name` and `lxq`) in another Node process on this test's host. */
function otherProcessScript(body: string): string[] {
  const script = `
    const lxq = require(${JSON.stringify(path.join(__dirname, '..', 'lib'))});
    (async () => {
      const host = await lxq.Host.open({ path: process.argv[1], images: process.argv[2] });
      const name = process.argv[3];
      ${body}
    })().catch((e) => { console.error(e); process.exit(1); });`;
  return ['-r', path.join(__dirname, 'helpers', 'ts-register.js'), '-e', script];
}

/** Waits until `n` events about `name` arrived (and a little longer, to catch duplicates). */
async function eventsOf(name: string, n: number, timeoutMs = 30_000): Promise<LifecycleEvent[]> {
  const deadline = Date.now() + timeoutMs;
  while (seen.filter((e) => e.name === name).length < n && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  await new Promise((r) => setTimeout(r, 300));
  return seen.filter((e) => e.name === name);
}
const brief = (es: LifecycleEvent[]) => es.map((e) => `${e.action}:${e.requestor}`);

async function waitStatus(i: Instance, status: string, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while ((await i.status()) !== status) {
    if (Date.now() > deadline) throw new Error(`${i.name} is not ${status}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

test('changes made by this process: each action once, local, with name, type and time', async () => {
  const name = t.name('local');
  const c = await t.host.create(name, { image: 'busybox' });
  await c.start();
  await c.freeze();
  await c.unfreeze();
  await c.restart({ timeout: 2_000 });
  await c.update({ 'user.note': 'x' });
  await c.stop({ force: true });
  await c.delete();
  const es = await eventsOf(name, 8);
  expect(brief(es)).toEqual([
    'instance-created:local',
    'instance-started:local',
    'instance-paused:local',
    'instance-resumed:local',
    'instance-restarted:local',
    'instance-updated:local',
    'instance-stopped:local',
    'instance-deleted:local',
  ]);
  expect(es.every((e) => e.type === 'container' && !Number.isNaN(Date.parse(e.at)))).toBe(true);
}, 90_000);

test('changes made by a second Node process are reported as external, once each, in order', async () => {
  const name = t.name('other');
  const body = `const c = await host.create(name, { image: 'busybox' });
      await c.start(); await c.freeze(); await c.unfreeze();
      await c.stop({ force: true }); await c.delete();`;
  await execFileP(process.execPath, [...otherProcessScript(body), t.dir, SHARED_IMAGES, name], { timeout: 60_000 });
  const es = await eventsOf(name, 6);
  expect(brief(es)).toEqual([
    'instance-created:external',
    'instance-started:external',
    'instance-paused:external',
    'instance-resumed:external',
    'instance-stopped:external',
    'instance-deleted:external',
  ]);
}, 90_000);

test('on() registers synchronously: a start made by another process just after it returns is delivered', async () => {
  const name = t.name('sync');
  await t.host.create(name, { image: 'busybox' });
  const other = await Host.open({ path: t.dir, images: SHARED_IMAGES });
  const got: LifecycleEvent[] = [];
  try {
    other.on('lifecycle', (e) => got.push(e));
    // Nothing of this process runs until the other one has started the instance and exited:
    // the event loop is blocked right after on() returned.
    execFileSync(process.execPath, [...otherProcessScript('await (await host.get(name)).start();'), t.dir, SHARED_IMAGES, name], { timeout: 60_000 });
    await other.ready();
    const deadline = Date.now() + 30_000;
    while (!got.some((e) => e.name === name) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    await new Promise((r) => setTimeout(r, 300));
    expect(brief(got.filter((e) => e.name === name))).toEqual(['instance-started:external']);
    // Followed from then on, exits nobody announced included.
    await execFileP('lxc-stop', ['-P', t.host.instancesDir, '-n', name, '-k']);
    const until = Date.now() + 30_000;
    while (got.filter((e) => e.name === name).length < 2 && Date.now() < until) await new Promise((r) => setTimeout(r, 20));
    expect(brief(got.filter((e) => e.name === name))).toEqual(['instance-started:external', 'instance-stopped:external']);
  } finally {
    await other.close();
    await (await t.host.get(name)).delete({ force: true });
  }
}, 90_000);

test('ready() resolves at once when nothing listens; on() and off() return the host', async () => {
  const other = await Host.open({ path: t.dir, images: SHARED_IMAGES });
  try {
    await expect(other.ready()).resolves.toBeUndefined();
    const fn = () => undefined;
    expect(other.on('lifecycle', fn)).toBe(other);
    expect(other.off('lifecycle', fn)).toBe(other);
    expect(() => other.on('bogus' as 'lifecycle', fn)).toThrow(InvalidArgument);
  } finally {
    await other.close();
  }
});

test('lxc-stop on a container, and its init exiting by itself: instance-stopped, external, once', async () => {
  const a = await t.host.create(t.name('lxcstop'), { image: 'busybox' });
  const b = await t.host.create(t.name('initexit'), { image: 'busybox' });
  try {
    await a.start();
    await b.start();
    await eventsOf(b.name, 2);
    await execFileP('lxc-stop', ['-P', t.host.instancesDir, '-n', a.name, '-k']);
    await b.exec(['kill', '-USR1', '1']); // busybox init halts on SIGUSR1
    await waitStatus(b, 'stopped');
    expect(brief(await eventsOf(a.name, 3))).toEqual(['instance-created:local', 'instance-started:local', 'instance-stopped:external']);
    expect(brief(await eventsOf(b.name, 3))).toEqual(['instance-created:local', 'instance-started:local', 'instance-stopped:external']);
    // Started again, it is watched again.
    await a.start();
    await execFileP('lxc-stop', ['-P', t.host.instancesDir, '-n', a.name, '-k']);
    expect(brief(await eventsOf(a.name, 5)).slice(3)).toEqual(['instance-started:local', 'instance-stopped:external']);
  } finally {
    await a.delete({ force: true });
    await b.delete({ force: true });
  }
}, 90_000);

test('kill -9 of a VM\'s QEMU: instance-stopped, external, once', async () => {
  const vm = await t.host.create(t.name('vm'), { type: 'vm', image: 'vm/default', config: { 'limits.memory': '256MiB' } });
  try {
    await vm.start();
    const { pid } = await vm.state();
    process.kill(pid!, 'SIGKILL');
    expect(brief(await eventsOf(vm.name, 3))).toEqual(['instance-created:local', 'instance-started:local', 'instance-stopped:external']);
  } finally {
    await vm.delete({ force: true });
  }
}, 120_000);

test('host.events(): an async iterator ended by its signal; a consumer that falls behind loses the oldest, counted', async () => {
  const ac = new AbortController();
  const stream = t.host.events({ signal: ac.signal, buffer: 2 });
  await stream.ready;
  const c = await t.host.create(t.name('iter'), { image: 'busybox' });
  await c.update({ 'user.a': '1' });
  await c.update({ 'user.a': '2' });
  await c.delete(); // 4 events into a buffer of 2: the first two are dropped
  const got: LifecycleEvent[] = [];
  // Read until the last event (the deletion) came, however late; the abort ends the stream.
  const late = setTimeout(() => ac.abort(), 30_000);
  for await (const e of stream) {
    got.push(e);
    if (e.action === 'instance-deleted') ac.abort();
  }
  clearTimeout(late);
  expect(got.map((e) => e.action)).toEqual(['instance-updated', 'instance-deleted']);
  expect(got[0].dropped).toBe(2);
  expect(stream.dropped).toBe(2);
  expect(() => t.host.events({ buffer: 0 })).toThrow(InvalidArgument);
}, 60_000);
