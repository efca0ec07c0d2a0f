/**
 * A container disk's raw.mount.options: per-mount flags on the bind mount, at start (liblxc's
 * mount entry) and on hot-plug (mount_setattr), read back from the container's own mount table;
 * `readonly` winning over `rw`; what a bind mount cannot take refused before anything changes.
 */
import { chmodSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import { type Instance, InvalidArgument, NotSupported } from '../lib';
import { tempHost, TestHost } from './helpers/host';

let t: TestHost;
let shared: string;
let c: Instance;

/** The per-mount options of the mount at `at` inside, as the container's /proc/self/mountinfo shows them. */
async function flagsAt(i: Instance, at: string): Promise<string[]> {
  const r = await i.exec(['awk', `$5 == "${at}" { print $6 }`, '/proc/self/mountinfo']);
  const lines = r.stdout.toString().trim().split('\n');
  return lines[lines.length - 1].split(',');
}

beforeAll(async () => {
  t = await tempHost();
  shared = mkdtempSync(path.join(os.tmpdir(), 'lxq-mountopts-'));
  chmodSync(shared, 0o777);
  c = await t.host.create(t.name('mo'), { image: 'busybox', devices: { data: { type: 'disk', source: shared, path: '/data', 'raw.mount.options': 'nosuid, nodev,,noexec' } } });
  await c.start();
}, 120_000);

afterAll(async () => {
  await t?.dispose();
  if (shared) rmSync(shared, { recursive: true, force: true });
});

test('at start: the flags are on the bind mount inside', async () => {
  const flags = await flagsAt(c, '/data');
  expect(flags).toEqual(expect.arrayContaining(['rw', 'nosuid', 'nodev', 'noexec']));
});

test('hot-plugged and updated: mount_setattr gives the same flags; readonly wins over rw', async () => {
  await c.addDevice('more', { type: 'disk', source: shared, path: '/more', 'raw.mount.options': 'ro,noexec' });
  expect(await flagsAt(c, '/more')).toEqual(expect.arrayContaining(['ro', 'noexec']));
  expect((await c.exec(['touch', '/more/x'])).exitCode).not.toBe(0);
  await c.updateDevice('more', { 'raw.mount.options': 'rw,nosuid', readonly: 'true' });
  const flags = await flagsAt(c, '/more');
  expect(flags).toEqual(expect.arrayContaining(['ro', 'nosuid']));
  expect(flags).not.toContain('noexec');
  await c.updateDevice('more', { 'raw.mount.options': 'rw', readonly: null });
  expect(await flagsAt(c, '/more')).toContain('rw');
  expect((await c.exec(['touch', '/more/x'])).exitCode).toBe(0);
  await c.removeDevice('more');
  // The next start has the same flags as the live mount had.
  await c.restart({ force: true });
  expect(await flagsAt(c, '/data')).toEqual(expect.arrayContaining(['nosuid', 'nodev', 'noexec']));
}, 120_000);

test('what a bind mount cannot take is refused, naming the device and the option; nothing changes', async () => {
  const cases: Array<[string, RegExp, new (...args: never[]) => Error]> = [
    ['discard', /device "d": "raw.mount.options" "discard": a container's disk is a bind mount .* per-mount flags only/, NotSupported],
    ['nosuid,errors=remount-ro', /"errors=remount-ro"/, NotSupported],
    ['noatime', /"noatime": a bind mount's atime flags follow its source's mount/, NotSupported],
    ['rbind', /cannot hold "rbind": the disk is a bind mount/, InvalidArgument],
    ['create=dir', /cannot hold "create=dir": it is liblxc's/, InvalidArgument],
    ['nosuid,idmap=container', /cannot hold "idmap=container"/, InvalidArgument],
    ['no suid', /"no suid" is not a mount option/, InvalidArgument],
    ['nosuid\nlxc.hook.pre-start = /bin/sh', /newline/, InvalidArgument],
  ];
  for (const [value, message, type] of cases) {
    const name = t.name('bad');
    const err = await t.host.create(name, { image: 'busybox', devices: { d: { type: 'disk', source: shared, path: '/x', 'raw.mount.options': value } } }).catch((e) => e);
    expect(err).toBeInstanceOf(type);
    expect(err.message).toMatch(message);
    expect(readdirSync(path.join(t.dir, 'instances'))).not.toContain(name);
    await expect(c.updateDevice('data', { 'raw.mount.options': value })).rejects.toThrow(type);
  }
  expect(c.devices.data['raw.mount.options']).toBe('nosuid, nodev,,noexec');
  const vm = await t.host.create(t.name('vm'), { type: 'vm', image: 'vm/default', devices: { d: { type: 'disk', source: shared, path: '/x', 'raw.mount.options': 'nosuid' } } }).catch((e) => e);
  expect(vm).toBeInstanceOf(InvalidArgument);
  expect(vm.message).toMatch(/"raw.mount.options" applies to container instances only/);
}, 120_000);
