/**
 * Where a device may not go: a disk at the instance's root, at or below /proc, /sys or /dev
 * (a device node below /dev is fine), and a disk source that is, or resolves through symlinks
 * to, the host's root. Refused at create, addDevice and updateDevice, naming the device and the
 * key, for containers and VMs, and nothing is made or changed by the refusal.
 */
import { chmodSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import { Instance, InvalidArgument } from '../lib';
import { sh, tempHost, TestHost } from './helpers/host';

let t: TestHost;
// Made when the file loads: the test tables below name them.
const shared = mkdtempSync(path.join(os.tmpdir(), 'lxq-targets-')); // a real host directory
const toRoot = path.join(shared, 'root-link'); // a symlink to /
const chain = path.join(shared, 'chain-link'); // a symlink to a symlink to /
const toShared = `${shared}.link`; // a symlink to `shared`
chmodSync(shared, 0o755);
writeFileSync(path.join(shared, 'from-host'), 'hello\n');
symlinkSync('/', toRoot);
symlinkSync(toRoot, chain);
symlinkSync(shared, toShared);

beforeAll(async () => {
  t = await tempHost();
});
afterAll(async () => {
  await t?.dispose();
  rmSync(shared, { recursive: true, force: true });
  rmSync(toShared, { force: true });
});

const instances = () => readdirSync(path.join(t.dir, 'instances'));

/** [what, device, message] refused for a disk's target, whatever the instance type. */
const diskTargets = (): Array<[string, Record<string, string>, RegExp]> => [
  ['at /proc', { type: 'disk', source: shared, path: '/proc' }, /device "d": bad value for "path": "\/proc" is refused: \/proc is the instance's kernel filesystem/],
  ['below /proc', { type: 'disk', source: shared, path: '/proc/sys/kernel' }, /device "d": bad value for "path": "\/proc\/sys\/kernel" is refused: \/proc is the instance's kernel filesystem/],
  ['at /sys', { type: 'disk', source: shared, path: '/sys' }, /device "d": bad value for "path": "\/sys" is refused: \/sys is the instance's kernel filesystem/],
  ['below /sys', { type: 'disk', source: shared, path: '/sys/fs/cgroup' }, /device "d": bad value for "path": "\/sys\/fs\/cgroup" is refused: \/sys is/],
  ['at /dev', { type: 'disk', source: shared, path: '/dev' }, /device "d": bad value for "path": "\/dev" is refused: it is the instance's device filesystem/],
  ['at /dev, spelt //dev/', { type: 'disk', source: shared, path: '//dev/' }, /device "d": bad value for "path": "\/\/dev\/" is refused: it is the instance's device filesystem/],
  ['below /dev', { type: 'disk', source: shared, path: '/dev/shm' }, /device "d": bad value for "path": "\/dev\/shm" is refused: a disk cannot be mounted below \/dev/],
  ['at /, spelt //', { type: 'disk', source: shared, path: '//' }, /device "d": bad value for "path": "\/\/" is refused: it is the instance's root/],
];
/** [what, source, message] refused for a disk's source. */
const rootSources = (): Array<[string, string, RegExp]> => [
  ['a symlink to /', toRoot, /device "d": "source" ".*root-link" resolves to \/, the host's root/],
  ['a symlink to a symlink to /', chain, /device "d": "source" ".*chain-link" resolves to \/, the host's root/],
  ['/ itself', '/', /device "d": "source" "\/" is \/, the host's root/],
];

describe('containers', () => {
  let c: Instance;
  beforeAll(async () => {
    c = await t.host.create(t.name('tg'), { image: 'busybox', devices: { good: { type: 'disk', source: shared, path: '/mnt/good' } } });
    await c.start();
  });

  test.each(diskTargets())('create: a disk %s is refused, nothing is made', async (_what, d, message) => {
    const name = t.name('bad');
    const err = await t.host.create(name, { image: 'busybox', devices: { d } as never }).catch((e) => e);
    expect(err).toBeInstanceOf(InvalidArgument);
    expect(err.message).toMatch(message);
    expect(instances()).not.toContain(name);
  });

  test.each([
    ['at /proc/x', { type: 'unix-char', path: '/proc/x', major: '1', minor: '3' }, /device "d": bad value for "path": "\/proc\/x" is refused: \/proc is the instance's kernel filesystem/],
    ['at /sys/x', { type: 'unix-block', path: '/sys/x', major: '7', minor: '0' }, /device "d": bad value for "path": "\/sys\/x" is refused: \/sys is/],
    ['at /dev itself', { type: 'unix-char', path: '/dev', major: '1', minor: '3' }, /device "d": bad value for "path": "\/dev" is refused: it is the instance's device filesystem/],
    ['at /', { type: 'unix-char', path: '/', major: '1', minor: '3' }, /device "d": bad value for "path": "\/" is refused: it is the instance's root/],
  ])('create: a unix device node %s is refused, nothing is made', async (_what, d, message) => {
    const name = t.name('badnode');
    const err = await t.host.create(name, { image: 'busybox', devices: { d } as never }).catch((e) => e);
    expect(err).toBeInstanceOf(InvalidArgument);
    expect(err.message).toMatch(message);
    expect(instances()).not.toContain(name);
  });

  test.each(rootSources())('create: a disk source that is %s is refused, nothing is made', async (_what, source, message) => {
    const name = t.name('badsrc');
    const err = await t.host.create(name, { image: 'busybox', devices: { d: { type: 'disk', source, path: '/mnt/x' } } }).catch((e) => e);
    expect(err).toBeInstanceOf(InvalidArgument);
    expect(err.message).toMatch(message);
    expect(instances()).not.toContain(name);
  });

  test('addDevice and updateDevice on a running container: refused, and the record, config and mounts unchanged', async () => {
    const dir = path.join(t.dir, 'instances', c.name);
    const record = readFileSync(path.join(dir, 'lxq.json'), 'utf8');
    const config = readFileSync(path.join(dir, 'config'), 'utf8');
    const mounts = (await sh(c, 'cat /proc/mounts')).out;
    for (const [, d, message] of diskTargets()) {
      const err = await c.addDevice('d', d as never).catch((e) => e);
      expect(err).toBeInstanceOf(InvalidArgument);
      expect(err.message).toMatch(message);
    }
    for (const [, source, message] of rootSources()) {
      const err = await c.addDevice('d', { type: 'disk', source, path: '/mnt/x' }).catch((e) => e);
      expect(err).toBeInstanceOf(InvalidArgument);
      expect(err.message).toMatch(message);
    }
    // A good device moved onto a refused target, or its source onto the host's root.
    await expect(c.updateDevice('good', { path: '/sys/kernel' })).rejects.toThrow(/device "good": bad value for "path": "\/sys\/kernel" is refused/);
    await expect(c.updateDevice('good', { path: '/dev/mnt' })).rejects.toThrow(/device "good": bad value for "path": "\/dev\/mnt" is refused: a disk cannot be mounted below \/dev/);
    await expect(c.updateDevice('good', { source: toRoot })).rejects.toThrow(/device "good": "source" ".*root-link" resolves to \/, the host's root/);
    expect(Object.keys(c.devices)).toEqual(['good']);
    expect(c.devices.good).toEqual({ type: 'disk', source: shared, path: '/mnt/good' });
    expect(readFileSync(path.join(dir, 'lxq.json'), 'utf8')).toBe(record);
    expect(readFileSync(path.join(dir, 'config'), 'utf8')).toBe(config);
    expect((await sh(c, 'cat /proc/mounts')).out).toBe(mounts);
    expect((await sh(c, 'cat /mnt/good/from-host')).out).toBe('hello\n');
  });

  test('a source that is a symlink to a directory is fine: mounted live and at the next start', async () => {
    await c.addDevice('linked', { type: 'disk', source: toShared, path: '/mnt/linked', readonly: 'true' });
    try {
      expect((await sh(c, 'cat /mnt/linked/from-host')).out).toBe('hello\n');
      await c.restart();
      expect((await sh(c, 'cat /mnt/linked/from-host')).out).toBe('hello\n');
    } finally {
      await c.removeDevice('linked');
    }
  });

  test('a device node below /dev is still accepted', async () => {
    await c.addDevice('null2', { type: 'unix-char', path: '/dev/lxq-null2', major: 1, minor: 3, mode: '0666' });
    try {
      expect(await sh(c, 'echo x > /dev/lxq-null2 && echo ok')).toEqual({ code: 0, out: 'ok\n', err: '' });
    } finally {
      await c.removeDevice('null2');
    }
  });
});

describe('VMs (a disk\'s path is where the guest mounts the share)', () => {
  let vm: Instance;
  beforeAll(async () => {
    // Never started: the refusals come before anything reaches QEMU.
    vm = await t.host.create(t.name('tgvm'), { type: 'vm', image: 'vm/default', devices: { good: { type: 'disk', source: shared, path: '/mnt/good' } } });
  }, 600_000);

  test.each(diskTargets())('create: a share %s is refused, nothing is made', async (_what, d, message) => {
    const name = t.name('badvm');
    const err = await t.host.create(name, { type: 'vm', image: 'vm/default', devices: { d } as never }).catch((e) => e);
    expect(err).toBeInstanceOf(InvalidArgument);
    expect(err.message).toMatch(message);
    expect(instances()).not.toContain(name);
  });

  test.each(rootSources())('create: a share whose source is %s is refused, nothing is made', async (_what, source, message) => {
    const name = t.name('badvmsrc');
    const err = await t.host.create(name, { type: 'vm', image: 'vm/default', devices: { d: { type: 'disk', source, path: '/mnt/x' } } }).catch((e) => e);
    expect(err).toBeInstanceOf(InvalidArgument);
    expect(err.message).toMatch(message);
    expect(instances()).not.toContain(name);
  });

  test('addDevice and updateDevice: refused, the record unchanged', async () => {
    const file = path.join(t.dir, 'instances', vm.name, 'lxq.json');
    const record = readFileSync(file, 'utf8');
    for (const [, d, message] of diskTargets()) await expect(vm.addDevice('d', d as never)).rejects.toThrow(message);
    for (const [, source, message] of rootSources()) await expect(vm.addDevice('d', { type: 'disk', source, path: '/mnt/x' })).rejects.toThrow(message);
    await expect(vm.updateDevice('good', { path: '/proc/x' })).rejects.toThrow(/device "good": bad value for "path": "\/proc\/x" is refused/);
    await expect(vm.updateDevice('good', { source: chain })).rejects.toThrow(/device "good": "source" ".*chain-link" resolves to \/, the host's root/);
    expect(Object.keys(vm.devices)).toEqual(['good']);
    expect(readFileSync(file, 'utf8')).toBe(record);
  });
});
