/**
 * AbortSignal and onProgress on an LXD server (Debian's LXD, started by this file): an aborted
 * signal is Aborted before any request; an abort while LXD's operation runs cancels it where LXD
 * can (else the wait stops) and leaves no instance or snapshot; a copy's progress (LXD's
 * operation progress, where it reports one) is monotonic and ends at 100.
 */
import { randomBytes } from 'node:crypto';

import { Aborted, Host, InvalidArgument, NotFound, type Progress } from '../lib';
import type { RemoteHost, RemoteInstance } from '../lib';
import type { LxdClient } from '../lib/drivers/remote/client';
import { type LxdFixture, startLxdFixture } from './helpers/lxd';

jest.setTimeout(300_000);

const POOL = 'lxq-test';
const PROFILE = 'lxq-test';
const ALIAS = 'lxq-test-busybox';
const tag = randomBytes(3).toString('hex');
let n = 0;
const name = () => `ra-${tag}-${n++}`;

let lxd: LxdFixture;
let client: LxdClient;
let host: RemoteHost;
let src: RemoteInstance;
const made = new Set<string>();

beforeAll(async () => {
  lxd = await startLxdFixture('lxq-lxd-abort-', { pool: POOL, profile: PROFILE, alias: ALIAS });
  client = lxd.client;
  host = await Host.connect({ socket: lxd.daemon.socket });
  const c = name();
  made.add(c);
  src = await host.create(c, { image: ALIAS, profiles: [PROFILE], config: { 'raw.lxc': 'lxc.signal.halt = SIGUSR1' } });
  await src.start();
  await src.exec(['dd', 'if=/dev/zero', 'of=/big', 'bs=1M', 'count=256']);
  await src.stop({ force: true });
});

afterAll(async () => {
  try {
    for (const c of made) {
      await client?.call('PUT', `/1.0/instances/${c}/state`, { action: 'stop', force: true }).catch(() => undefined);
      await client?.call('DELETE', `/1.0/instances/${c}`).catch(() => undefined);
    }
  } finally {
    host?.close();
    await lxd?.stop();
  }
});

const names = async () => (await host.list()).map((i) => i.name);
const running = async () => ((await client.request('GET', '/1.0/operations?recursion=1')).metadata?.running ?? []) as unknown[];

test('bad signal is InvalidArgument and an aborted one Aborted, before any request', async () => {
  const target = name();
  await expect(host.create(target, { image: ALIAS, profiles: [PROFILE], signal: 'x' as unknown as AbortSignal })).rejects.toBeInstanceOf(InvalidArgument);
  await expect(host.copy(src.name, target, { onProgress: 1 as unknown as () => void })).rejects.toBeInstanceOf(InvalidArgument);
  await expect(host.create(target, { image: ALIAS, profiles: [PROFILE], signal: AbortSignal.abort() })).rejects.toBeInstanceOf(Aborted);
  await expect(host.copy(src.name, target, { signal: AbortSignal.abort() })).rejects.toBeInstanceOf(Aborted);
  await expect(src.start({ signal: AbortSignal.abort() })).rejects.toBeInstanceOf(Aborted);
  await expect(src.snapshots.create('s', { signal: AbortSignal.abort() })).rejects.toBeInstanceOf(Aborted);
  expect(await names()).not.toContain(target);
  expect(await src.snapshots.list()).toEqual([]);
  expect(await src.status()).toBe('stopped');
});

test("a copy aborted while LXD's operation runs leaves no instance; a whole copy's progress ends at 100", async () => {
  const target = name();
  made.add(target);
  const ac = new AbortController();
  const copying = host.copy(src.name, target, { signal: ac.signal });
  // Aborted once the server has an operation running for it.
  while ((await running()).length === 0) await new Promise((r) => setTimeout(r, 10));
  ac.abort();
  const e = await copying.then(() => undefined, (err: unknown) => err);
  if (e === undefined) {
    // The copy ended before the abort was seen: it is whole, and is removed here.
    await (await host.get(target)).delete();
  } else {
    expect(e).toBeInstanceOf(Aborted);
    expect((e as Error).message).toMatch(/cancelled|stopped waiting/);
  }
  expect(await names()).not.toContain(target);
  await expect(host.get(target)).rejects.toBeInstanceOf(NotFound);

  const seen: Progress[] = [];
  const copy = await host.copy(src.name, name(), { onProgress: (p) => seen.push(p) });
  made.add(copy.name);
  for (let i = 1; i < seen.length; i++) expect(seen[i].percent).toBeGreaterThanOrEqual(seen[i - 1].percent);
  expect(seen[seen.length - 1].percent).toBe(100);
  await copy.delete();
});

test('a snapshot aborted while LXD makes it leaves none; start with a signal that never fires starts', async () => {
  const ac = new AbortController();
  const snapping = src.snapshots.create('s0', { signal: ac.signal });
  while ((await running()).length === 0) await new Promise((r) => setTimeout(r, 10));
  ac.abort();
  await snapping.then(
    () => src.snapshots.delete('s0'),
    (e: unknown) => expect(e).toBeInstanceOf(Aborted),
  );
  expect(await src.snapshots.list()).toEqual([]);
  await src.start({ signal: new AbortController().signal });
  expect(await src.status()).toBe('running');
  await src.stop({ force: true, signal: new AbortController().signal });
  expect(await src.status()).toBe('stopped');
});
