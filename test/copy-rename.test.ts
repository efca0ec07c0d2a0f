/**
 * Rename and copy of whole instances on real containers (and stopped VMs): every path follows a
 * rename, a copy is independent of its source, bad input leaves the host's tree as it was, and a
 * process killed during a copy leaves no instance.
 */
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import * as path from 'node:path';

import { AlreadyExists, Busy, Host, InvalidArgument, NotFound } from '../lib';
import { tempHost, TestHost } from './helpers/host';

let t: TestHost;

beforeAll(async () => {
  t = await tempHost();
  await t.host.images.ensure('busybox');
  await t.host.images.ensure('vm/default');
}, 600_000);
afterAll(async () => {
  await t?.dispose();
}, 120_000);

/** Every entry under the host's instances directory, with size and mode: what bad input must not change. */
const tree = () => execFileSync('find', [path.join(t.dir, 'instances'), '-printf', '%P %s %m\\n'], { encoding: 'utf8' }).split('\n').sort().join('\n');
const out = (r: { stdout: Buffer }) => r.stdout.toString().trim();

test('a stopped container is renamed with every path; a running one is refused (Busy), onto a taken name AlreadyExists', async () => {
  const a = await t.host.create(t.name('ren'), { image: 'busybox', config: { 'user.k': 'v' } });
  const other = await t.host.create(t.name('ren'), { image: 'busybox' });
  const oldName = a.name;
  await a.status(); // liblxc opens its (empty) log on the first look
  const before = tree();
  await expect(a.rename(other.name)).rejects.toBeInstanceOf(AlreadyExists);
  await expect(a.rename('bad/name')).rejects.toBeInstanceOf(InvalidArgument);
  await expect(a.rename('-x')).rejects.toBeInstanceOf(InvalidArgument);
  expect(tree()).toBe(before);

  const events: string[] = [];
  a.on('renamed', (e) => events.push(`${e.previous}->${e.name}`));
  const newName = t.name('moved');
  await a.rename(newName);
  expect(a.name).toBe(newName);
  expect(events).toEqual([`${oldName}->${newName}`]);
  expect(existsSync(path.join(t.dir, 'instances', oldName))).toBe(false);
  const config = readFileSync(path.join(t.dir, 'instances', newName, 'config'), 'utf8');
  expect(config).not.toContain(oldName);
  expect(config).toContain(path.join(t.dir, 'instances', newName, 'rootfs'));
  await expect(t.host.get(oldName)).rejects.toBeInstanceOf(NotFound);
  const again = await t.host.get(newName);
  expect(again).toBe(a);
  expect(again.config['user.k']).toBe('v');

  await a.start();
  try {
    expect(out(await a.exec(['hostname']))).toBe(newName);
    await expect(a.rename(t.name('nope'))).rejects.toBeInstanceOf(Busy);
    expect(a.name).toBe(newName);
  } finally {
    await a.stop({ force: true });
  }
}, 180_000);

test('a copy of a container is independent of its source, with new MACs and an emptied machine id; from a snapshot; from a running source', async () => {
  const src = await t.host.create(t.name('src'), { image: 'busybox', config: { 'user.k': 'src' } });
  const root = (name: string) => path.join(t.dir, 'instances', name, 'rootfs');
  execFileSync('sh', ['-c', `mkdir -p ${root(src.name)}/etc && echo 0123456789abcdef0123456789abcdef > ${root(src.name)}/etc/machine-id && echo one > ${root(src.name)}/data`]);
  await src.snapshots.create('s0');
  execFileSync('sh', ['-c', `echo two > ${root(src.name)}/data`]);
  const copied: string[] = [];
  src.on('copied', (e) => copied.push(`${e.target}${e.snapshot ? '@' + e.snapshot : ''}`));

  const c = await t.host.copy(src.name, t.name('cp'), { config: { 'user.extra': 'x' } });
  expect(c.type).toBe('container');
  expect(c.config['user.k']).toBe('src');
  expect(c.config['user.extra']).toBe('x');
  expect(readFileSync(path.join(root(c.name), 'data'), 'utf8')).toBe('two\n');
  expect(readFileSync(path.join(root(c.name), 'etc/machine-id'), 'utf8')).toBe('');
  expect(readFileSync(path.join(root(src.name), 'etc/machine-id'), 'utf8')).not.toBe('');
  expect((await c.snapshots.list()).map((s) => s.name)).toEqual(['s0']);
  expect(readFileSync(path.join(t.dir, 'instances', c.name, 'config'), 'utf8')).not.toContain(src.name);

  // Independent: writes to one are not seen in the other, both running.
  await c.start();
  try {
    await c.exec(['sh', '-c', 'echo copy > /data; echo new > /only-copy']);
    expect(readFileSync(path.join(root(src.name), 'data'), 'utf8')).toBe('two\n');
    expect(existsSync(path.join(root(src.name), 'only-copy'))).toBe(false);
  } finally {
    await c.stop({ force: true });
  }

  const fromSnap = await t.host.copy(src.name, t.name('cps'), { snapshot: 's0', instanceOnly: true });
  expect(readFileSync(path.join(root(fromSnap.name), 'data'), 'utf8')).toBe('one\n');
  expect(await fromSnap.snapshots.list()).toEqual([]);

  // A running source is frozen for the copy and runs on after it.
  await src.start();
  try {
    await src.exec(['sh', '-c', 'echo live > /live']);
    const live = await t.host.copy(src.name, t.name('cpl'), { instanceOnly: true });
    expect(await src.status()).toBe('running');
    expect(readFileSync(path.join(root(live.name), 'live'), 'utf8')).toBe('live\n');
    expect(await live.status()).toBe('stopped');
  } finally {
    await src.stop({ force: true });
  }
  expect(copied.length).toBe(3);
  expect(copied[1]).toBe(`${fromSnap.name}@s0`);
}, 300_000);

test('a copy gets new MAC addresses for its NICs', async () => {
  const net = await t.host.networks.create(`lxqcp${Math.random().toString(16).slice(2, 8)}`, { 'ipv4.nat': 'false' });
  try {
    const src = await t.host.create(t.name('mac'), { image: 'busybox', devices: { eth0: { type: 'nic', network: net.name } } });
    const c = await t.host.copy(src.name, t.name('mac'), { instanceOnly: true });
    expect(c.devices.eth0.hwaddr).toMatch(/^00:16:3e:/);
    expect(c.devices.eth0.hwaddr).not.toBe(src.devices.eth0.hwaddr);
    expect(c.devices.eth0.network).toBe(net.name);
    await c.delete();
    await src.delete();
  } finally {
    await t.host.networks.delete(net.name).catch(() => undefined);
  }
}, 120_000);

test('bad copies are refused before any work and leave the tree unchanged', async () => {
  const src = await t.host.create(t.name('bad'), { image: 'busybox' });
  const taken = await t.host.create(t.name('bad'), { image: 'busybox' });
  const before = tree();
  await expect(t.host.copy(src.name, taken.name)).rejects.toBeInstanceOf(AlreadyExists);
  await expect(t.host.copy(src.name, 'no/slash')).rejects.toBeInstanceOf(InvalidArgument);
  await expect(t.host.copy(t.name('missing'), t.name('x'))).rejects.toBeInstanceOf(NotFound);
  await expect(t.host.copy(src.name, t.name('x'), { snapshot: 'nope' })).rejects.toBeInstanceOf(NotFound);
  await expect(t.host.copy(src.name, t.name('x'), { config: { 'no.such.key': '1' } })).rejects.toBeInstanceOf(InvalidArgument);
  await expect(t.host.copy(src.name, t.name('x'), { bogus: 1 } as never)).rejects.toBeInstanceOf(InvalidArgument);
  expect(tree()).toBe(before);
}, 120_000);

test('a stopped VM is copied as its own overlay on the same backing image, and renamed', async () => {
  const vm = await t.host.create(t.name('vmc'), { type: 'vm', image: 'vm/default', config: { 'user.k': 'vm' } });
  const disk = (name: string) => path.join(t.dir, 'instances', name, 'disk.qcow2');
  const info = (file: string) => JSON.parse(execFileSync('qemu-img', ['info', '-U', '--output=json', file], { encoding: 'utf8' }));
  await vm.snapshots.create('s0');
  const copy = await t.host.copy(vm.name, t.name('vmcp'));
  expect(info(disk(copy.name))['full-backing-filename']).toBe(info(disk(vm.name))['full-backing-filename']);
  expect((await copy.snapshots.list()).map((s) => s.name)).toEqual(['s0']);
  const flat = await t.host.copy(vm.name, t.name('vmcf'), { snapshot: 's0' });
  expect(info(disk(flat.name))['full-backing-filename']).toBe(info(disk(vm.name))['full-backing-filename']);
  expect(info(disk(flat.name)).snapshots ?? []).toEqual([]);
  expect(copy.config['user.k']).toBe('vm');

  const newName = t.name('vmmv');
  await copy.rename(newName);
  expect(existsSync(disk(newName))).toBe(true);
  expect((await t.host.get(newName)).config['user.k']).toBe('vm');
  expect((await copy.snapshots.list()).map((s) => s.name)).toEqual(['s0']);
}, 300_000);

test('a Node process killed during a copy leaves no instance, and the next Host.open clears its staging', async () => {
  const c = await t.host.create(t.name('ckill'), { image: 'busybox' });
  const root = path.join(t.dir, 'instances', c.name, 'rootfs');
  execFileSync('sh', ['-c', `mkdir -p ${root}/big && for i in $(seq 1 40); do head -c 8M /dev/urandom > ${root}/big/f$i; done`]);
  const target = t.name('half');
  const script = `
    const { Host } = require(${JSON.stringify(path.resolve('lib'))});
    Host.open({ path: ${JSON.stringify(t.dir)}, images: ${JSON.stringify(t.host.images.dir)} })
      .then((h) => h.copy(${JSON.stringify(c.name)}, ${JSON.stringify(target)}));`;
  const child = spawn(process.execPath, ['-r', path.resolve('test/helpers/ts-register.js'), '-e', script], { stdio: 'ignore', detached: true });
  const instances = path.join(t.dir, 'instances');
  const staged = () => readdirSync(instances).filter((n) => n.startsWith('.lxq-tmp-'));
  const deadline = Date.now() + 60_000;
  // The copy has begun once its staging entry holds the root: `rootfs/` on a dir pool, the
  // upper directory on an overlay pool (the default), which is what an overlay copy copies.
  while (!staged().some((n) => existsSync(path.join(instances, n, 'rootfs')) || existsSync(path.join(instances, n, 'upper', 'big')))) {
    if (Date.now() > deadline) throw new Error('the child never started copying');
    await new Promise((r) => setTimeout(r, 20));
  }
  const exited = new Promise((r) => child.once('exit', r));
  process.kill(-child.pid!, 'SIGKILL');
  await exited;
  await new Promise((r) => setTimeout(r, 200));
  expect(staged().length).toBeGreaterThan(0); // the leftover is there
  await expect(t.host.get(target)).rejects.toBeInstanceOf(NotFound);
  expect((await t.host.list()).map((i) => i.name)).not.toContain(target);
  const next = await Host.open({ path: t.dir, images: t.host.images.dir });
  expect(staged()).toEqual([]); // Host.open cleared it
  const whole = await next.copy(c.name, target, { instanceOnly: true });
  expect(whole.name).toBe(target);
  await next.close();
}, 180_000);
