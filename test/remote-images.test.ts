/**
 * `host.images` on a remote host against a real LXD 5.0 (a private daemon of this file's own):
 * the server's images listed in the local store's shape, and lxq-built images (busybox,
 * debian/12) copied to the server from a local host's store and launched there.
 */
import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import { Host } from '../lib';
import { InvalidArgument, NotFound } from '../lib/core/errors';
import { LxdClient } from '../lib/drivers/remote/client';
import type { RemoteHost } from '../lib/drivers/remote';
import { ensurePool, ensureProfile, LxdDaemon, startLxd } from './helpers/lxd';
import { TestHost, tempHost, execText } from './helpers/host';

jest.setTimeout(600_000);

const POOL = 'lxq-img';
const PROFILE = 'lxq-img';

let dir: string;
let daemon: LxdDaemon | undefined;
let unix: LxdClient;
let local: TestHost;
let remote: RemoteHost;

beforeAll(async () => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'lxq-lxd-img-'));
  chmodSync(dir, 0o711);
  local = await tempHost();
  daemon = await startLxd(path.join(dir, 'lxd'), path.join(dir, 'log'));
  unix = new LxdClient({ socket: daemon.socket });
  await ensurePool(unix, POOL, 'lxq image tests');
  await ensureProfile(unix, PROFILE, POOL, 'lxq image tests');
  remote = await Host.connect({ socket: daemon.socket });
});

afterAll(async () => {
  try {
    for (const i of (await remote?.list().catch(() => [])) ?? []) await i.delete({ force: true }).catch(() => undefined);
  } finally {
    remote?.close();
    unix?.close();
    await daemon?.stop();
    await local?.dispose();
    rmSync(dir, { recursive: true, force: true });
  }
});

describe('host.images on a remote host', () => {
  test('busybox copied from the local store: listed like the local listing, launched on the server, not sent twice', async () => {
    expect(await remote.images.list()).toEqual([]);
    const mine = await local.host.images.ensure('busybox');
    const copied = await remote.images.copyFrom(local.host.images, 'busybox', { alias: 'lxq-busybox' });
    expect(copied).toMatchObject({ name: 'lxq-busybox', aliases: ['lxq-busybox'], type: 'container', architecture: 'x86_64' });
    expect(copied.fingerprint).toMatch(/^[0-9a-f]{64}$/);
    expect(copied.size).toBeGreaterThan(100_000);
    // LXD keeps the creation date to the second.
    expect(Date.parse(copied.createdAt)).toBe(Math.floor(Date.parse(mine.createdAt) / 1000) * 1000);
    expect(copied.properties['lxq.name']).toBe('busybox');

    const listed = await remote.images.list();
    expect(listed).toEqual([copied]);
    // The fields both listings have mean the same.
    const here = (await local.host.images.list()).find((i) => i.name === 'busybox' && i.dir === mine.dir)!;
    for (const k of ['type', 'size', 'createdAt'] as const) expect(typeof listed[0][k]).toBe(typeof here[k]);
    expect(await remote.images.get('lxq-busybox')).toEqual(copied);
    expect(await remote.images.get(copied.fingerprint.slice(0, 12))).toEqual(copied);

    const name = local.name('rimg');
    const i = await remote.create(name, { image: 'lxq-busybox', profiles: [PROFILE] });
    await i.start();
    expect(execText(await i.exec(['/bin/sh', '-c', 'busybox | head -1 | cut -d" " -f1; hostname']))).toEqual({ exitCode: 0, stdout: `BusyBox\n${name}\n`, stderr: '' });
    await i.delete({ force: true });

    // The same build again, under a second alias: not uploaded again, one image with both aliases.
    const t0 = Date.now();
    const again = await remote.images.copyFrom(local.host.images, 'busybox', { alias: 'bb' });
    console.log(`second copyFrom of the same build: ${Date.now() - t0} ms (first: upload)`);
    expect(again.fingerprint).toBe(copied.fingerprint);
    expect(again.aliases.sort()).toEqual(['bb', 'lxq-busybox']);
    expect(await remote.images.list()).toHaveLength(1);
  });

  test('bad input is refused before anything reaches the server', async () => {
    const before = await remote.images.list();
    await expect(remote.images.copyFrom(local.host.images, 'busybox', { alias: 'a b' })).rejects.toBeInstanceOf(InvalidArgument);
    await expect(remote.images.copyFrom(local.host.images, 'busybox', { alias: 'x:y' })).rejects.toBeInstanceOf(InvalidArgument);
    await expect(remote.images.copyFrom(local.host.images, 'busybox', { nope: 1 } as never)).rejects.toBeInstanceOf(InvalidArgument);
    // The local store's own refusal of a name it has no recipe for.
    await expect(remote.images.copyFrom(local.host.images, 'no-such-image')).rejects.toBeInstanceOf(InvalidArgument);
    await expect(remote.images.copyFrom({} as never, 'busybox')).rejects.toBeInstanceOf(InvalidArgument);
    await expect(remote.images.get('no-such-alias')).rejects.toBeInstanceOf(NotFound);
    await expect(remote.images.delete('no-such-alias')).rejects.toBeInstanceOf(NotFound);
    expect(await remote.images.list()).toEqual(before);
  });

  test('debian/12 under its lxq name as the alias: launched on the server', async () => {
    const t0 = Date.now();
    const deb = await remote.images.copyFrom(local.host.images, 'debian/12');
    console.log(`copyFrom debian/12 (export + upload + LXD unpack): ${Date.now() - t0} ms, ${(deb.size / 2 ** 20).toFixed(0)} MiB`);
    expect(deb).toMatchObject({ name: 'debian/12', aliases: ['debian/12'], type: 'container' });
    expect((await remote.images.get('debian/12')).fingerprint).toBe(deb.fingerprint);
    const name = local.name('rdeb');
    const i = await remote.create(name, { image: 'debian/12', profiles: [PROFILE] });
    await i.start();
    expect((await i.exec(['sh', '-c', '. /etc/os-release; echo $ID $VERSION_ID'])).stdout.toString()).toBe('debian 12\n');
    await i.delete({ force: true });
    await remote.images.delete('debian/12');
    await expect(remote.images.get(deb.fingerprint)).rejects.toBeInstanceOf(NotFound);
    expect((await remote.images.list()).map((x) => x.name)).not.toContain('debian/12');
  });
});
