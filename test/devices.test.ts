/**
 * Devices of real containers: bind mounts (read-write, read-only, shifted), unix device nodes,
 * hot add and remove on a running container, persistence, and the bad input refused before
 * anything changes — including targets planted as symlinks inside the container.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { chmodSync, chownSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import { AlreadyExists, Host, Instance, InvalidArgument, NotFound, NotSupported } from '../lib';
import { describeDevices } from '../lib/devices/declarations';
import { sh, SHARED_IMAGES, tempHost, TestHost } from './helpers/host';

let t: TestHost;
let shared: string; // a host directory the tests share into containers
let sentinel = ''; // a host directory no container may see but through a device (made in its describe)
let c: Instance; // a running container, shared by the live cases

/**
 * The host's mounts that this file's devices could make land there, to show that none did: those
 * at the paths the devices target (and where a symbolic link would take them) and those of the
 * host directories it shares. Not the whole table: other test files and programs mount and
 * unmount their own things meanwhile (a whole-table comparison failed beside them).
 */
const hostMounts = () =>
  readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .filter((l) => {
      const at = l.split(' ')[4];
      if (at === undefined) return false;
      const ours = [shared, sentinel].filter((d) => d).map((d) => path.basename(d));
      return ['/', '/etc', '/landed', '/secret'].includes(at) || /^\/(mnt|evil)(\/|$)/.test(at) || ours.some((b) => l.includes(b));
    })
    .join('\n');
const rootfs = (i: Instance) => path.join(t.dir, 'instances', i.name, 'rootfs');

beforeAll(async () => {
  t = await tempHost();
  shared = mkdtempSync(path.join(os.tmpdir(), 'lxq-share-'));
  chmodSync(shared, 0o755);
  writeFileSync(path.join(shared, 'from-host'), 'hello from the host\n');
  chownSync(path.join(shared, 'from-host'), 0, 0);
  c = await t.host.create(t.name('dev'), { image: 'busybox' });
  await c.start();
});
afterAll(async () => {
  await t?.dispose();
  rmSync(shared, { recursive: true, force: true });
});

describe('bad input is refused with a typed error and nothing changes', () => {
  const cases: Array<[string, Record<string, unknown>, RegExp, new (...args: never[]) => Error]> = [
    ['unknown type', { d: { type: 'floppy' } }, /unknown device type "floppy"; known: "disk", "nic", "proxy", "unix-char", "unix-block"/, InvalidArgument],
    ['unknown key, with a suggestion', { d: { type: 'disk', source: '/tmp', path: '/x', readonyl: 'true' } }, /unknown key "readonyl".*did you mean "readonly"/, InvalidArgument],
    ['value of the wrong form', { d: { type: 'disk', source: '/tmp', path: '/x', readonly: 'yes' } }, /bad value for "readonly": expected "true" or "false"/, InvalidArgument],
    ['relative path', { d: { type: 'disk', source: '/tmp', path: 'x' } }, /bad value for "path": expected an absolute path/, InvalidArgument],
    ['.. in the path', { d: { type: 'disk', source: '/tmp', path: '/a/../../etc' } }, /"\." and "\.\." are not allowed/, InvalidArgument],
    ['two devices on one path', { a: { type: 'disk', source: '/tmp', path: '/x' }, b: { type: 'disk', source: '/var', path: '/x/' } }, /devices "a" and "b" both use the path \/x/, InvalidArgument],
    ['a device name that is not an identifier', { 'no/slash': { type: 'disk', source: '/tmp', path: '/x' } }, /invalid device name "no\/slash"/, InvalidArgument],
    ['a missing source', { d: { type: 'disk', source: '/no/such/dir', path: '/x' } }, /"source" \/no\/such\/dir does not exist/, InvalidArgument],
    ['a char device whose source is not one', { d: { type: 'unix-char', source: '/etc/hostname' } }, /\/etc\/hostname is not a character device/, InvalidArgument],
    ['a key of the other instance type', { d: { type: 'disk', size: '1GiB' } }, /"size" applies to vm instances only/, InvalidArgument],
    ['a disk without its path', { d: { type: 'disk', source: '/tmp' } }, /"path" is required/, InvalidArgument],
  ];
  test.each(cases)('create: %s', async (_what, devices, message, type) => {
    const name = t.name('bad');
    const err = await t.host.create(name, { image: 'busybox', devices: devices as never }).catch((e) => e);
    expect(err).toBeInstanceOf(type);
    expect(err.message).toMatch(message);
    expect(readdirSync(path.join(t.dir, 'instances'))).not.toContain(name);
  });

  test('a source the unprivileged container cannot reach is refused, naming the directory in the way', async () => {
    const closed = mkdtempSync(path.join(os.tmpdir(), 'lxq-closed-')); // 0700, root's
    mkdirSync(path.join(closed, 'inner'));
    try {
      for (const shift of ['false', 'true'] as const) {
        const name = t.name('closed');
        const err = await t.host.create(name, { image: 'busybox', devices: { d: { type: 'disk', source: path.join(closed, 'inner'), path: '/x', shift } } }).catch((e) => e);
        expect(err).toBeInstanceOf(InvalidArgument);
        expect(err.message).toMatch(/cannot reach "source" .*inner: .*lxq-closed-\w+ is not searchable by others \(mode 0700\); chmod o\+x it/);
        expect(readdirSync(path.join(t.dir, 'instances'))).not.toContain(name);
      }
      await expect(c.addDevice('closed', { type: 'disk', source: path.join(closed, 'inner'), path: '/x' })).rejects.toThrow(/not searchable by others/);
      expect(c.devices).toEqual({});
    } finally {
      rmSync(closed, { recursive: true, force: true });
    }
  });

  test('unix devices on a VM: NotSupported naming the condition, before anything is made', async () => {
    const name = t.name('badvm');
    const err = await t.host.create(name, { type: 'vm', image: 'vm/default', devices: { tun: { type: 'unix-char', source: '/dev/net/tun' } } }).catch((e) => e);
    expect(err).toBeInstanceOf(NotSupported);
    expect(err.message).toMatch(/"unix-char" devices apply to container instances only, not to a vm/);
    expect(readdirSync(path.join(t.dir, 'instances'))).not.toContain(name);
  });

  test('on an instance: a used name, a device that is not there, a bad patch; the record and the container unchanged', async () => {
    await c.addDevice('one', { type: 'disk', source: shared, path: '/mnt/one' });
    try {
      const record = readFileSync(path.join(t.dir, 'instances', c.name, 'lxq.json'), 'utf8');
      const config = readFileSync(path.join(t.dir, 'instances', c.name, 'config'), 'utf8');
      const mounts = (await sh(c, 'cat /proc/mounts')).out;
      await expect(c.addDevice('one', { type: 'disk', source: shared, path: '/mnt/other' })).rejects.toThrow(AlreadyExists);
      await expect(c.addDevice('two', { type: 'disk', source: shared, path: '/mnt/one' })).rejects.toThrow(/both use the path \/mnt\/one/);
      await expect(c.removeDevice('nothing')).rejects.toThrow(NotFound);
      await expect(c.updateDevice('nothing', { readonly: 'true' })).rejects.toThrow(NotFound);
      await expect(c.updateDevice('one', { type: 'unix-char' })).rejects.toThrow(/the type of a device cannot change/);
      await expect(c.updateDevice('one', { path: null })).rejects.toThrow(/"path" is required/);
      await expect(c.addDevice('two', { type: 'disk', source: '/no/such', path: '/mnt/two' })).rejects.toThrow(/does not exist/);
      expect(readFileSync(path.join(t.dir, 'instances', c.name, 'lxq.json'), 'utf8')).toBe(record);
      expect(readFileSync(path.join(t.dir, 'instances', c.name, 'config'), 'utf8')).toBe(config);
      expect((await sh(c, 'cat /proc/mounts')).out).toBe(mounts);
    } finally {
      await c.removeDevice('one');
    }
  });
});

describe('disks of a container', () => {
  let d: Instance;
  let roDir: string;
  beforeAll(async () => {
    roDir = mkdtempSync(path.join(os.tmpdir(), 'lxq-ro-'));
    chmodSync(roDir, 0o755);
    writeFileSync(path.join(roDir, 'keep'), 'do not touch\n');
    d = await t.host.create(t.name('disks'), {
      image: 'busybox',
      devices: {
        data: { type: 'disk', source: shared, path: '/data' },
        ro: { type: 'disk', source: roDir, path: '/srv/ro', readonly: 'true' },
        shifted: { type: 'disk', source: shared, path: '/shifted', shift: true },
        file: { type: 'disk', source: path.join(shared, 'from-host'), path: '/etc/from-host', readonly: true },
        optional: { type: 'disk', source: '/no/such/dir', path: '/opt/none', required: 'false' },
      },
    });
    await d.start();
  });
  afterAll(() => rmSync(roDir, { recursive: true, force: true }));

  test('the devices are in the record as strings, and state() lists them', async () => {
    expect(d.devices.ro).toEqual({ type: 'disk', source: roDir, path: '/srv/ro', readonly: 'true' });
    expect(d.devices.shifted.shift).toBe('true');
    const s = await d.state();
    expect(s.devices.map((x) => x.name)).toEqual(['data', 'file', 'optional', 'ro', 'shifted']);
    // With its live mount (the source's filesystem and where it is in it depend on the host's /tmp).
    const mount = { fstype: expect.any(String), readOnly: false, root: expect.any(String), source: expect.any(String), target: '/data' };
    expect(s.devices.find((x) => x.name === 'data')).toEqual({ name: 'data', type: 'disk', source: shared, path: '/data', mount });
  });

  test('written on the host, read inside, and the reverse', async () => {
    expect((await sh(d, 'cat /data/from-host')).out).toBe('hello from the host\n');
    expect((await sh(d, 'cat /etc/from-host')).out).toBe('hello from the host\n');
    writeFileSync(path.join(shared, 'later'), 'written later\n');
    expect((await sh(d, 'cat /data/later')).out).toBe('written later\n');
    expect((await sh(d, 'echo from inside > /shifted/inside')).code).toBe(0);
    expect(readFileSync(path.join(shared, 'inside'), 'utf8')).toBe('from inside\n');
  });

  test('readonly is refused inside', async () => {
    const r = await sh(d, 'echo x > /srv/ro/new; echo x > /srv/ro/keep');
    expect(r.err).toMatch(/Read-only file system/);
    expect(readdirSync(roDir)).toEqual(['keep']);
    expect(readFileSync(path.join(roDir, 'keep'), 'utf8')).toBe('do not touch\n');
    expect((await sh(d, 'echo x > /etc/from-host')).err).toMatch(/Read-only file system/);
  });

  test('shift: host root is root inside; without it, host root is nobody', async () => {
    expect((await sh(d, 'stat -c %u:%g /shifted/from-host')).out.trim()).toBe('0:0');
    expect((await sh(d, 'stat -c %u:%g /data/from-host')).out.trim()).toBe('65534:65534');
    // A file root made inside through the shifted mount is root's on the host too.
    expect(statSync(path.join(shared, 'inside')).uid).toBe(0);
  });

  test('a missing source that is not required is skipped', async () => {
    expect((await sh(d, 'test -e /opt/none && echo there || echo absent')).out.trim()).toBe('absent');
  });

  test('the devices are there again after a restart and from a new Host', async () => {
    await d.stop({ force: true });
    const again = await (await Host.open({ path: t.dir, images: SHARED_IMAGES })).get(d.name);
    expect(again.devices).toEqual(d.devices);
    await again.start();
    expect((await sh(again, 'cat /data/from-host; stat -c %u /shifted/from-host')).out).toBe('hello from the host\n0\n');
    await again.stop({ force: true });
    await d.start();
  });
});

test('a device added by a process that is then killed (SIGKILL) is kept, live and in the record', async () => {
  const script = `
    const { Host } = require(${JSON.stringify(path.join(__dirname, '..', 'lib'))});
    (async () => {
      const host = await Host.open({ path: ${JSON.stringify(t.dir)}, images: ${JSON.stringify(SHARED_IMAGES)} });
      const c = await host.get(${JSON.stringify(c.name)});
      await c.addDevice('crash', { type: 'disk', source: ${JSON.stringify(shared)}, path: '/mnt/crash' });
      process.kill(process.pid, 'SIGKILL');
    })();`;
  const r = spawnSync(process.execPath, ['-r', path.join(__dirname, 'helpers', 'ts-register.js'), '-e', script], { timeout: 60_000 });
  expect(r.signal).toBe('SIGKILL');
  const again = await (await Host.open({ path: t.dir, images: SHARED_IMAGES })).get(c.name);
  expect(again.devices.crash).toEqual({ type: 'disk', source: shared, path: '/mnt/crash' });
  expect((await sh(again, 'cat /mnt/crash/from-host')).out).toBe('hello from the host\n');
  await again.removeDevice('crash');
  expect((await sh(again, 'grep -c /mnt/crash /proc/mounts')).out.trim()).toBe('0');
  // This process's instance object reads its record again on the next get().
  c = await t.host.get(c.name);
});

describe('hot-plug into a running container', () => {
  test('add, see, update, remove; the next start has what the record says', async () => {
    const hostBefore = hostMounts();
    await c.addDevice('live', { type: 'disk', source: shared, path: '/mnt/live/deep' });
    expect((await sh(c, 'cat /mnt/live/deep/from-host')).out).toBe('hello from the host\n');
    expect((await sh(c, 'stat -c %u /mnt/live/deep/from-host')).out.trim()).toBe('65534');
    expect(hostMounts()).toBe(hostBefore);

    await c.updateDevice('live', { shift: 'true', readonly: 'true' });
    expect((await sh(c, 'stat -c %u /mnt/live/deep/from-host')).out.trim()).toBe('0');
    expect((await sh(c, 'touch /mnt/live/deep/x')).err).toMatch(/Read-only file system/);
    expect((await sh(c, 'grep -c " /mnt/live/deep " /proc/mounts')).out.trim()).toBe('1');

    await c.stop({ force: true });
    await c.start();
    expect((await sh(c, 'stat -c %u /mnt/live/deep/from-host')).out.trim()).toBe('0');

    await c.removeDevice('live');
    expect((await sh(c, 'ls /mnt/live/deep')).out).toBe('');
    expect(c.devices).toEqual({});
    await c.stop({ force: true });
    await c.start();
    expect((await sh(c, 'grep -c /mnt/live /proc/mounts')).out.trim()).toBe('0');
  });

  test('a file source, added live', async () => {
    await c.addDevice('one-file', { type: 'disk', source: path.join(shared, 'from-host'), path: '/etc/motd2' });
    expect((await sh(c, 'cat /etc/motd2')).out).toBe('hello from the host\n');
    await c.removeDevice('one-file');
    expect((await sh(c, 'cat /etc/motd2')).out).toBe('');
  });
});

describe('a symlink planted at the target never makes a mount land outside the container', () => {
  const targets = { toRoot: '/', toEtc: '/etc', upward: '../../..' };
  beforeAll(() => {
    sentinel = mkdtempSync(path.join(os.tmpdir(), 'lxq-sentinel-'));
    chmodSync(sentinel, 0o755);
    writeFileSync(path.join(sentinel, 'secret'), 'the host only\n');
  });
  afterAll(() => rmSync(sentinel, { recursive: true, force: true }));

  test.each(Object.entries(targets))('live, a link to %s at the target is refused', async (name, target) => {
    const hostBefore = hostMounts();
    const etcBefore = readdirSync('/etc').sort();
    const inside = (await sh(c, 'cat /proc/mounts')).out;
    expect((await sh(c, `mkdir -p /evil && rm -f /evil/${name} && ln -s ${target} /evil/${name}`)).code).toBe(0);
    const err = await c.addDevice(`evil-${name}`, { type: 'disk', source: sentinel, path: `/evil/${name}` }).catch((e) => e);
    expect(err.message).toMatch(new RegExp(`/evil/${name} is a symbolic link inside the container`));
    expect(c.devices[`evil-${name}`]).toBeUndefined();
    expect(hostMounts()).toBe(hostBefore);
    expect(readdirSync('/etc').sort()).toEqual(etcBefore);
    expect((await sh(c, 'cat /proc/mounts')).out).toBe(inside);
  });

  test('live, a link on the way resolves inside the container root', async () => {
    const hostBefore = hostMounts();
    expect((await sh(c, 'mkdir -p /evil && rm -f /evil/up && ln -s ../../../.. /evil/up')).code).toBe(0);
    await c.addDevice('evil-way', { type: 'disk', source: sentinel, path: '/evil/up/landed' });
    try {
      expect(hostMounts()).toBe(hostBefore);
      expect(() => statSync('/landed')).toThrow();
      expect((await sh(c, 'cat /landed/secret')).out).toBe('the host only\n');
    } finally {
      await c.removeDevice('evil-way');
    }
    expect((await sh(c, 'ls /landed')).out).toBe('');
  });

  test('at start, links planted in the stopped rootfs', async () => {
    const e = await t.host.create(t.name('evil'), { image: 'busybox' });
    mkdirSync(path.join(rootfs(e), 'evil'));
    for (const [name, target] of Object.entries(targets)) symlinkSync(target, path.join(rootfs(e), 'evil', name));
    const devices = Object.fromEntries(Object.keys(targets).map((n) => [`evil-${n}`, { type: 'disk' as const, source: sentinel, path: `/evil/${n}` }]));
    for (const [n, dev] of Object.entries(devices)) await e.addDevice(n, dev);
    const hostBefore = hostMounts();
    const etcBefore = readdirSync('/etc').sort();
    const started = await e.start().then(() => true, () => false);
    try {
      // liblxc refuses to mount through a symlink (the start fails) or mounts inside the rootfs:
      // either way, nothing reaches the host.
      expect(hostMounts()).toBe(hostBefore);
      expect(readdirSync('/etc').sort()).toEqual(etcBefore);
      expect(() => statSync('/secret')).toThrow();
      if (started) expect((await sh(e, 'cat /proc/1/mountinfo')).out).not.toMatch(/ \/ \/ .*lxq-sentinel/);
    } finally {
      await e.delete({ force: true });
    }
  });
});

describe('unix-char devices', () => {
  test('at start and live: the node with its mode and owner, usable inside (the devices cgroup allows it)', async () => {
    const u = await t.host.create(t.name('unix'), {
      image: 'busybox',
      devices: { tun: { type: 'unix-char', source: '/dev/net/tun', mode: '0666', uid: 1000, gid: 1000 } },
    });
    await u.start();
    try {
      expect((await sh(u, 'stat -c "%F %t:%T %a %u:%g" /dev/net/tun')).out.trim()).toBe('character special file a:c8 666 1000:1000');
      // Opening the tun device needs the cgroup's permission; reading an unconfigured one then fails with EBADFD.
      expect((await sh(u, 'cat /dev/net/tun')).err).toMatch(/File descriptor in bad state/);

      await u.addDevice('loop', { type: 'unix-char', path: '/dev/lxq-null', major: 1, minor: 3, mode: '0600' });
      expect((await sh(u, 'stat -c "%F %a %u" /dev/lxq-null; echo x > /dev/lxq-null && echo ok')).out).toBe('character special file 600 0\nok\n');
      await u.removeDevice('loop');
      expect((await sh(u, 'test -e /dev/lxq-null && echo there || echo gone')).out.trim()).toBe('gone');
      await u.removeDevice('tun');
      // The cgroup no longer allows it: a node of it, even one the container could reach, cannot be opened.
      expect((await sh(u, 'test -e /dev/net/tun && echo there || echo gone')).out.trim()).toBe('gone');
    } finally {
      await u.delete({ force: true });
    }
  });

  test('unix-block: a block node by major and minor, allowed in the cgroup', async () => {
    await c.addDevice('loop', { type: 'unix-block', path: '/dev/lxq-loop', major: 7, minor: 0, mode: '0640', gid: 6 });
    expect((await sh(c, 'stat -c "%F %t:%T %a %g" /dev/lxq-loop')).out.trim()).toBe('block special file 7:0 640 6');
    expect(readFileSync(path.join(t.dir, 'instances', c.name, 'config'), 'utf8')).toMatch(/lxc.cgroup.devices.allow = b 7:0 rwm/);
    await c.removeDevice('loop');
    expect(readFileSync(path.join(t.dir, 'instances', c.name, 'config'), 'utf8')).not.toMatch(/b 7:0/);
  });

  test('a device the cgroup does not allow cannot be opened (the default list is closed)', async () => {
    // /dev/kmsg-like nodes: make one on the host inside a shared dir and bind it in as a plain disk.
    const dir = mkdtempSync(path.join(os.tmpdir(), 'lxq-node-'));
    chmodSync(dir, 0o755);
    try {
      execFileSync('mknod', [path.join(dir, 'tun'), 'c', '10', '200']);
      execFileSync('chmod', ['666', path.join(dir, 'tun')]);
      await c.addDevice('sneaky', { type: 'disk', source: dir, path: '/mnt/sneaky' });
      expect((await sh(c, 'cat /mnt/sneaky/tun')).err).toMatch(/Operation not permitted/);
      await c.removeDevice('sneaky');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

// When this fails: npx tsc -p tsconfig.json && node dist/scripts/options-table.js rewrites the table.
test('the README device table is the one generated from the declarations', () => {
  const readme = readFileSync(path.join(__dirname, '..', 'README.md'), 'utf8');
  expect(/<!-- devices:begin -->\n([\s\S]*?)\n<!-- devices:end -->/.exec(readme)?.[1]).toBe(describeDevices());
});
