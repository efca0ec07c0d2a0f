/**
 * AbortSignal and onProgress on an LXD server (Debian's LXD, started by this file): an aborted
 * signal is Aborted before any request; an abort while LXD's operation runs cancels it where LXD
 * can (else the wait stops) and leaves no instance or snapshot; a copy's progress (LXD's
 * operation progress, where it reports one) is monotonic and ends at 100. `images.copyFrom`
 * aborted while its tarball is sent, or once all of it is sent, leaves no image, alias, file or
 * operation on the server, and the next copy works.
 */
import { randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import * as path from 'node:path';

import { Aborted, Host, InvalidArgument, NotFound, type Progress } from '../lib';
import type { RemoteHost, RemoteInstance } from '../lib';
import type { LxdClient } from '../lib/drivers/remote/client';
import { type LxdFixture, startLxdFixture } from './helpers/lxd';
import { tempHost } from './helpers/host';

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

test('images.copyFrom aborted mid-upload or once all is sent leaves nothing on the server; the next copy works', async () => {
  const local = await tempHost();
  const images = async () => (await host.images.list()).map((i) => i.fingerprint).sort();
  const files = async () => (await fs.readdir(path.join(lxd.dir, 'lxd', 'images')).catch(() => [])).sort();
  try {
    await local.host.images.ensure('busybox');
    const before = { images: await images(), files: await files() };
    await expect(host.images.copyFrom(local.host.images, 'busybox', { alias: 'cf', signal: 'x' as unknown as AbortSignal })).rejects.toBeInstanceOf(InvalidArgument);
    await expect(host.images.copyFrom(local.host.images, 'busybox', { alias: 'cf', signal: AbortSignal.abort() })).rejects.toBeInstanceOf(Aborted);
    // Mid-body (the first bytes sent), then once the last byte is sent (LXD then has it whole).
    for (const at of [(p: Progress) => p.phase === 'uploading', (p: Progress) => p.percent >= 90]) {
      const ac = new AbortController();
      const copying = host.images.copyFrom(local.host.images, 'busybox', { alias: 'cf', signal: ac.signal, onProgress: (p) => at(p) && ac.abort() });
      await expect(copying).rejects.toBeInstanceOf(Aborted);
      expect(await images()).toEqual(before.images);
      await expect(host.images.get('cf')).rejects.toBeInstanceOf(NotFound);
      // The server's own traces: no operation left running, no partial file in its image store.
      const end = Date.now() + 60_000;
      while ((await running()).length > 0 && Date.now() < end) await new Promise((r) => setTimeout(r, 100));
      expect(await running()).toEqual([]);
      expect(await files()).toEqual(before.files);
    }
    const seen: Progress[] = [];
    const img = await host.images.copyFrom(local.host.images, 'busybox', { alias: 'cf', onProgress: (p) => seen.push(p) });
    expect(img.aliases).toEqual(['cf']);
    expect(seen.map((p) => p.phase)).toContain('uploading');
    for (let i = 1; i < seen.length; i++) expect(seen[i].percent).toBeGreaterThanOrEqual(seen[i - 1].percent);
    expect(seen[seen.length - 1].percent).toBe(100);
    await host.images.delete('cf');
  } finally {
    await local.dispose();
  }
});
