/**
 * host.images.publish on real instances: a stopped container (or a snapshot of a running one)
 * and a stopped VM become images that launch like any other; bad input leaves the store as it was.
 */
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, readdirSync, rmSync, statSync } from 'node:fs';
import * as path from 'node:path';

import { AlreadyExists, InvalidArgument, InvalidState, NotFound } from '../lib';
import { SHARED_IMAGES, tempHost, TestHost } from './helpers/host';

let t: TestHost;
const published: string[] = [];
/** A unique alias in the shared store, removed after the file. */
const alias = (what: string) => {
  const a = `lxq-test/pub-${what}-${t.name('x').split('-')[1]}`;
  published.push(a);
  return a;
};

beforeAll(async () => {
  t = await tempHost();
  await t.host.images.ensure('busybox');
  await t.host.images.ensure('vm/default');
}, 600_000);
afterAll(async () => {
  await t?.dispose();
  for (const a of published) await t.host.images.delete(a).catch(() => undefined);
}, 180_000);

const storeTree = () => execFileSync('find', [SHARED_IMAGES, '-maxdepth', '3', '-printf', '%P %m\\n'], { encoding: 'utf8' }).split('\n').sort().join('\n');
const out = (r: { stdout: Buffer }) => r.stdout.toString().trim();

test('a stopped container becomes an image; two instances launched from it both have its file; a running one is refused', async () => {
  const src = await t.host.create(t.name('pub'), { image: 'busybox' });
  await src.start();
  await src.files.write('/root/hello', 'published\n', { mode: 0o640 });
  await src.exec(['sh', '-c', 'echo 0123456789abcdef0123456789abcdef > /etc/machine-id']);

  const name = alias('ct');
  const before = storeTree();
  await expect(t.host.images.publish(src, name)).rejects.toBeInstanceOf(InvalidState);
  await expect(t.host.images.publish(src, 'Bad Alias')).rejects.toBeInstanceOf(InvalidArgument);
  await expect(t.host.images.publish(src, 'busybox')).rejects.toBeInstanceOf(AlreadyExists);
  await expect(t.host.images.publish(src.name, name, { snapshot: 'nope' })).rejects.toBeInstanceOf(NotFound);
  await expect(t.host.images.publish('no-such-instance', name)).rejects.toBeInstanceOf(NotFound);
  await expect(t.host.images.publish(src, name, { bogus: 1 } as never)).rejects.toBeInstanceOf(InvalidArgument);
  expect(storeTree()).toBe(before);

  // A snapshot of the running container can be published (as LXD allows).
  await src.snapshots.create('s0');
  const fromSnap = await t.host.images.publish(src, alias('ct-snap'), { snapshot: 's0' });
  expect(fromSnap.meta.publishedFrom).toEqual({ instance: src.name, snapshot: 's0' });
  await src.stop({ force: true });

  const image = await t.host.images.publish(src.name, name);
  expect(image.type).toBe('container');
  // Ids are the image's own again (the container is unprivileged: its files were shifted).
  expect(statSync(path.join(image.dir, 'rootfs/root/hello')).uid).toBe(0);
  expect(statSync(path.join(image.dir, 'rootfs/etc/machine-id')).size).toBe(0);
  await expect(t.host.images.publish(src, name)).rejects.toBeInstanceOf(AlreadyExists);
  expect((await t.host.images.list()).some((i) => i.name === name)).toBe(true);

  const [a, b] = await Promise.all([t.host.create(t.name('from'), { image: name }), t.host.create(t.name('from'), { image: fromSnap.name })]);
  await a.start();
  await b.start();
  try {
    for (const i of [a, b]) {
      expect(out(await i.exec(['cat', '/root/hello']))).toBe('published');
      expect(out(await i.exec(['stat', '-c', '%u %a', '/root/hello']))).toBe('0 640');
    }
  } finally {
    await a.stop({ force: true });
    await b.stop({ force: true });
  }
  // The published image does not depend on its instance.
  await src.delete();
  const c = await t.host.create(t.name('after'), { image: name });
  expect((await c.files.read('/root/hello')).toString()).toBe('published\n');
}, 300_000);

test('a stopped VM becomes an image (flattened disk): two VMs launched from it both have its file', async () => {
  const src = await t.host.create(t.name('pubvm'), { type: 'vm', image: 'vm/default', config: { 'limits.memory': '256MiB' } });
  await src.start();
  await src.files.write('/root/hello', 'from a vm\n');
  await src.exec(['sync']);
  await expect(t.host.images.publish(src, alias('vm-running'))).rejects.toBeInstanceOf(InvalidState);
  await src.stop();

  const image = await t.host.images.publish(src, alias('vm'));
  expect(image.type).toBe('vm');
  const info = JSON.parse(execFileSync('qemu-img', ['info', '--output=json', path.join(image.dir, 'disk.qcow2')], { encoding: 'utf8' }));
  expect(info['backing-filename']).toBeUndefined();

  const vms = await Promise.all([0, 1].map(() => t.host.create(t.name('fromvm'), { type: 'vm', image: image.name, config: { 'limits.memory': '256MiB' } })));
  try {
    await Promise.all(vms.map((v) => v.start()));
    for (const v of vms) expect(out(await v.exec(['cat', '/root/hello'], { timeout: 120_000 }))).toBe('from a vm');
  } finally {
    await Promise.all(vms.map((v) => v.stop({ force: true })));
  }
}, 600_000);

test('a Node process killed during a publish leaves no image, and the next publish of that alias clears its leftover', async () => {
  const c = await t.host.create(t.name('pkill'), { image: 'busybox' });
  const root = path.join(t.dir, 'instances', c.name, 'rootfs');
  execFileSync('sh', ['-c', `mkdir -p ${root}/big && for i in $(seq 1 40); do head -c 8M /dev/urandom > ${root}/big/f$i; done`]);
  const name = alias('kill');
  const script = `
    const { Host } = require(${JSON.stringify(path.resolve('lib'))});
    Host.open({ path: ${JSON.stringify(t.dir)}, images: ${JSON.stringify(t.host.images.dir)} })
      .then((h) => h.images.publish(${JSON.stringify(c.name)}, ${JSON.stringify(name)}));`;
  const child = spawn(process.execPath, ['-r', path.resolve('test/helpers/ts-register.js'), '-e', script], { stdio: 'ignore', detached: true });
  const parent = path.join(t.host.images.dir, ...name.split('/'));
  const staged = () => (existsSync(parent) ? readdirSync(parent).filter((n) => n.includes('.tmp-')) : []);
  const deadline = Date.now() + 60_000;
  while (!staged().some((n) => existsSync(path.join(parent, n, 'rootfs', 'big')))) {
    if (Date.now() > deadline) throw new Error('the child never started publishing');
    await new Promise((r) => setTimeout(r, 20));
  }
  const exited = new Promise((r) => child.once('exit', r));
  process.kill(-child.pid!, 'SIGKILL');
  await exited;
  expect(staged().length).toBe(1); // the leftover is there, and no image
  await expect(t.host.images.get(name)).rejects.toThrow();
  expect((await t.host.images.list()).map((i) => i.name)).not.toContain(name);
  const image = await t.host.images.publish(c, name);
  expect(staged()).toEqual([]); // cleared by the next publish of that alias
  expect(existsSync(path.join(image.dir, 'rootfs', 'big', 'f40'))).toBe(true);
}, 180_000);

test('a build left without its definition (a crash between the two) is cleared by the next publish; two processes publishing one alias at once: one image, the other AlreadyExists', async () => {
  const srcs = await Promise.all([0, 1].map(() => t.host.create(t.name('race'), { image: 'busybox' })));
  const name = alias('race');
  const parent = path.join(t.host.images.dir, ...name.split('/'));
  const builds = () => readdirSync(parent).filter((n) => /^[0-9a-f]{12}$/.test(n));

  const first = await t.host.images.publish(srcs[0], name);
  rmSync(path.join(parent, 'definition.json')); // what a crash after the build's rename leaves
  expect((await t.host.images.list()).map((i) => i.name)).not.toContain(name);
  const again = await t.host.images.publish(srcs[0], name);
  expect(builds()).toEqual([path.basename(again.dir)]);
  expect(existsSync(first.dir)).toBe(again.dir === first.dir);
  await t.host.images.delete(name);

  const publishIn = (src: string) => {
    const script = `
      const { Host } = require(${JSON.stringify(path.resolve('lib'))});
      Host.open({ path: ${JSON.stringify(t.dir)}, images: ${JSON.stringify(t.host.images.dir)} })
        .then((h) => h.images.publish(${JSON.stringify(src)}, ${JSON.stringify(name)}))
        .then(() => console.log('published'), (e) => console.log(e.constructor.name));`;
    const child = spawn(process.execPath, ['-r', path.resolve('test/helpers/ts-register.js'), '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
    let said = '';
    child.stdout.on('data', (d) => (said += d));
    return new Promise<string>((resolve) => child.once('close', () => resolve(said.trim())));
  };
  const results = await Promise.all(srcs.map((s) => publishIn(s.name)));
  expect(results.sort()).toEqual(['AlreadyExists', 'published']);
  const image = await t.host.images.get(name);
  expect(builds()).toEqual([path.basename(image.dir)]);
  expect(readdirSync(parent).filter((n) => n.includes('.tmp-'))).toEqual([]);
}, 180_000);
