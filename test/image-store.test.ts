/**
 * The image store as users manage it: list, get, delete (Busy while in use), derived images
 * built from debian/12 and cached by their inputs, progress, a bad package refused with apt's
 * message and nothing kept, and a crashed build's leftovers cleaned by the next build.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import { Busy, Host, ImageProgress, InvalidArgument, NotFound, OperationFailed } from '../lib';
import { SHARED_IMAGES, tempHost, TestHost } from './helpers/host';

jest.setTimeout(600_000);

let t: TestHost;
beforeAll(async () => {
  t = await tempHost();
});
afterAll(async () => {
  await t?.dispose();
});

describe('a store of its own', () => {
  let dir: string;
  let host: Host;
  beforeAll(async () => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'lxq-store-'));
    host = await Host.open({ path: path.join(dir, 'host'), images: path.join(dir, 'images') });
  });
  afterAll(async () => {
    for (const i of await host.list()) await i.delete({ force: true });
    rmSync(dir, { recursive: true, force: true });
  });

  test('an abandoned build (its process gone) is removed by the next build, never through a mount left in it; progress is reported', async () => {
    const parent = path.join(dir, 'images', 'busybox');
    mkdirSync(path.join(parent, '.0123456789ab.tmp-999999999-deadbeef', 'rootfs', 'dev', 'shm'), { recursive: true });
    // A killed mmdebstrap leaves the host's /dev/shm, /sys and /proc bound into its tree: the
    // removal must detach them, not delete what they show.
    const outside = path.join(dir, 'host-shm');
    mkdirSync(outside);
    writeFileSync(path.join(outside, 'keep'), 'not the build\'s');
    execFileSync('mount', ['--bind', outside, path.join(parent, '.0123456789ab.tmp-999999999-deadbeef', 'rootfs', 'dev', 'shm')]);
    mkdirSync(path.join(parent, `.0123456789ab.tmp-${process.pid}-cafe`), { recursive: true }); // a live build
    const seen: ImageProgress[] = [];
    const events: ImageProgress[] = [];
    host.images.on('progress', (e) => events.push(e));
    const image = await host.images.ensure('busybox', { onProgress: (e) => seen.push(e) });
    expect(image).toMatchObject({ name: 'busybox', type: 'container' });
    expect(seen.map((e) => e.percent)).toEqual([0, 100]);
    expect(events).toEqual(seen);
    expect(readdirSync(parent).filter((d) => d.startsWith('.')).sort()).toEqual([`.0123456789ab.tmp-${process.pid}-cafe`]);
    expect(readFileSync(path.join(outside, 'keep'), 'utf8')).toBe('not the build\'s');
    expect(readFileSync('/proc/self/mountinfo', 'utf8')).not.toContain('deadbeef');
  });

  test('list shows what is built, with type, size and date', async () => {
    const list = await host.images.list();
    expect(list).toHaveLength(1);
    expect(list[0]).toMatchObject({ name: 'busybox', type: 'container', current: true });
    expect(list[0].size).toBeGreaterThan(1_000_000);
    expect(Date.parse(list[0].createdAt)).toBeGreaterThan(Date.now() - 600_000);
    await expect(host.images.get('debian/12')).rejects.toBeInstanceOf(NotFound); // known, not built here
  });

  test('delete is refused with Busy while an instance uses the image, then removes it', async () => {
    const c = await host.create(t.name('u'), { image: 'busybox' });
    const err = await host.images.delete('busybox').catch((e) => e);
    expect(err).toBeInstanceOf(Busy);
    expect(err.code).toBe('BUSY');
    expect(err.message).toMatch(new RegExp(`used by "${c.name}"`));
    expect(await host.images.get('busybox')).toBeDefined(); // untouched
    await c.delete();
    await host.images.delete('busybox');
    expect(await host.images.list()).toEqual([]);
    await expect(host.images.delete('busybox')).rejects.toBeInstanceOf(NotFound);
  });

  test('bad names and options are InvalidArgument, listing the known images', async () => {
    await expect(host.images.ensure('ubuntu/24.04')).rejects.toThrow(/unknown image "ubuntu\/24.04"; available: "busybox", "vm\/default", "debian\/12"/);
    await expect(host.images.ensure('busybox', { type: 'vm' })).rejects.toThrow(/"busybox" is a container image, not a vm image/);
    await expect(host.images.ensure('busybox', { tpye: 'vm' } as never)).rejects.toThrow(/unknown image ensure option "tpye"/);
    await expect(host.images.build('Bad Name', { from: 'debian/12' })).rejects.toBeInstanceOf(InvalidArgument);
    await expect(host.images.build('busybox', { from: 'debian/12' })).rejects.toThrow(/lxq's own images/);
    await expect(host.images.build('x', { from: 'busybox' })).rejects.toThrow(/not a Debian image/);
    await expect(host.images.build('x', { from: 'debian/12', packages: ['bad pkg'] })).rejects.toBeInstanceOf(InvalidArgument);
    await expect(host.images.build('x', { from: 'debian/12', pakages: [] } as never)).rejects.toThrow(/unknown image build option "pakages"/);
    expect(await host.images.known()).toEqual(['busybox', 'vm/default', 'debian/12', 'debian/12/cloud']);
  });
});

describe('derived images (shared store)', () => {
  const name = 'lxq-test/with-less';
  // From lxq's own derived image debian/12/cloud: its cloud-init and settings come along.
  const options = { from: 'debian/12/cloud', packages: ['less'], run: ['echo built-by-lxq > /etc/lxq-derived'] };

  test('build from debian/12/cloud with packages and commands: the cloud image\'s come first and its seed is read; the same inputs build nothing again', async () => {
    const progress: ImageProgress[] = [];
    const t0 = Date.now();
    const image = await t.host.images.build(name, { ...options, onProgress: (e) => progress.push(e) });
    const first = Date.now() - t0;
    expect(image).toMatchObject({ name, type: 'container' });
    expect(image.meta).toMatchObject({ from: 'debian/12/cloud', extraPackages: ['cloud-init', 'less'], init: 'systemd' });
    if (progress.length) expect(progress.map((e) => e.percent)).toEqual([...progress.map((e) => e.percent)].sort((a, b) => a - b));
    const t1 = Date.now();
    const built = statSync(path.join(image.dir, 'image.json')).mtimeMs;
    const again = await t.host.images.build(name, options);
    console.log(`derived image: first build call ${first} ms, cached ${Date.now() - t1} ms`);
    expect(again.dir).toBe(image.dir);
    expect(statSync(path.join(image.dir, 'image.json')).mtimeMs).toBe(built); // nothing built again
    expect(await t.host.images.known()).toContain(name);
    // The shared store may also hold builds of this name from older inputs (not current): this one is.
    expect((await t.host.images.list()).find((i) => i.dir === image.dir)).toMatchObject({ from: 'debian/12/cloud', current: true });

    const userData = ['#cloud-config', 'runcmd:', `  - [sh, -c, 'echo "$(hostname)" > /var/tmp/derived-runcmd']`, ''].join('\n');
    const c = await t.host.create(t.name('der'), { image: name, config: { 'cloud-init.user-data': userData } });
    await c.start({ wait: { for: 'systemd', timeout: 600_000 } });
    try {
      expect((await c.files.read('/etc/lxq-derived')).toString()).toBe('built-by-lxq\n');
      expect((await c.files.read('/var/tmp/derived-runcmd')).toString()).toBe(`${c.name}\n`);
      expect((await c.exec(['cloud-init', 'status'])).stdout.toString()).toBe('status: done\n');
      expect((await c.exec(['less', '--version'])).exitCode).toBe(0);
      expect((await c.exec(['hostname'])).stdout.toString().trim()).toBe(c.name);
    } finally {
      await c.delete({ force: true });
    }
  }, 1_200_000);

  test('a package apt does not know fails with apt\'s message, and nothing is kept', async () => {
    const bad = `lxq-test/bad-${process.pid}`;
    const err = await t.host.images.build(bad, { from: 'debian/12', packages: ['lxq-no-such-package'] }).catch((e) => e);
    expect(err).toBeInstanceOf(OperationFailed);
    expect(err.message).toMatch(/lxq-no-such-package/);
    expect(await t.host.images.known()).not.toContain(bad);
    expect(existsSync(path.join(SHARED_IMAGES, bad))).toBe(false);
  });
});
