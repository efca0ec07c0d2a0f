/**
 * unix-hotplug devices (containers): a loop device made by the test (losetup on a file in the
 * test's directory, at a free number, so the kernel sends "add"; LOOP_CTL_REMOVE sends "remove")
 * appears in a running container while it is there and goes with it. The match is LXD's on a
 * node that appears: a loop device has no USB device above it, so its ids are 0000:0000, and
 * `vendorid: "0000", subsystem: "block"` matches it; the same device present at the start does
 * not match (LXD matches present nodes with their ids as they are), which is what keeps the
 * host's own disks out of the test's container. Another process's loop device appearing
 * meanwhile may be added too; the test looks only at its own. The matching rules, the keys'
 * checks, and the pure functions are tested without a container.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';

import { Host, InvalidArgument, NotSupported, type Instance } from '../lib';
import { hotplugMatches, padded } from '../lib/devices/hotplug';
import { flockHeld } from '../lib/native/sys';
import { SHARED_IMAGES, sh, tempHost, type TestHost, thrown } from './helpers/host';
import { until } from './helpers/wait';

jest.setTimeout(300_000);

let t: TestHost;
beforeAll(async () => {
  t = await tempHost();
});
afterAll(async () => {
  await t?.dispose();
});

/** LOOP_CTL_REMOVE of /dev/loopN (losetup detaches only): the kernel's "remove" uevent. */
function removeLoop(n: number): void {
  execFileSync('losetup', ['-d', `/dev/loop${n}`], { stdio: 'ignore' });
  execFileSync('python3', ['-c', `import os, fcntl; fcntl.ioctl(os.open('/dev/loop-control', os.O_RDWR), 0x4C81, ${n})`]);
}

/** A loop device at a number nobody has (losetup makes it: "add"), over `file`. */
function makeLoop(file: string): number {
  for (let tries = 0; ; tries++) {
    const n = 1000 + Math.floor(Math.random() * 9000);
    if (existsSync(`/dev/loop${n}`)) continue;
    try {
      execFileSync('losetup', [`/dev/loop${n}`, file], { stdio: 'pipe' });
      return n;
    } catch (e) {
      if (tries > 20) throw e;
    }
  }
}

/** The container's devices cgroup (v1) rules, read from its init's cgroup; null where devices is on cgroup v2. */
function devicesList(pid: number): string[] | null {
  const line = readFileSync(`/proc/${pid}/cgroup`, 'utf8').split('\n').find((l) => /^\d+:([^:]*,)?devices(,[^:]*)?:/.test(l));
  if (!line) return null;
  return readFileSync(path.join('/sys/fs/cgroup/devices', line.split(':')[2], 'devices.list'), 'utf8').trim().split('\n');
}

test('a loop device appearing while the container runs is made in it (readable: the cgroup allows it) and removed when it goes; kept by a restarted device process; gone with the device', async () => {
  const image = path.join(t.dir, 'hp.img');
  writeFileSync(image, Buffer.concat([Buffer.from('lxq-hotplug-marker\n'), Buffer.alloc(1024 * 1024)]));
  const name = t.name('hp');
  const c: Instance = await t.host.create(name, { image: 'busybox', devices: { hp: { type: 'unix-hotplug', vendorid: '0000', subsystem: 'block', mode: '0640' } } });
  let loop: number | undefined;
  try {
    await c.start();
    const has = async (n: number) => (await sh(c, `test -b /dev/loop${n} && echo yes || echo no`)).out.trim() === 'yes';
    // The host's loop devices present at the start do not match (ids as they are: none).
    expect(existsSync('/dev/loop0')).toBe(true);
    loop = makeLoop(image);
    const n = loop;
    await until(`/dev/loop${n} in the container`, () => has(n));
    // Made with the device's mode and root as its owner, and allowed: the container reads it.
    expect((await sh(c, `stat -c '%a %u %g %t:%T' /dev/loop${n}`)).out.trim()).toBe(`640 0 0 7:${n.toString(16)}`);
    expect((await sh(c, `head -c 19 /dev/loop${n}`)).out).toBe('lxq-hotplug-marker\n');
    expect(await has(0)).toBe(false);
    const nodes = async () => (await c.state()).devices.find((d) => d.name === 'hp')?.nodes;
    expect(await nodes()).toContain(`/dev/loop${n}`);
    const pid = (await c.state()).pid!;
    const rules = devicesList(pid);
    if (rules) expect(rules).toContain(`b 7:${n} rwm`);
    // Its device process killed: the next lxq process to open the container starts another, which keeps the node.
    const lock = readFileSync(path.join(t.dir, 'instances', name, 'proxy.lock'), 'utf8');
    process.kill(Number(lock.split(' ')[0]), 'SIGKILL');
    // Gone first (its lock let go): a Host opening the container meanwhile would find it still serving.
    await until('the killed device process to let go of its lock', async () => !(await flockHeld(path.join(t.dir, 'instances', name, 'proxy.lock'))));
    const other = await Host.open({ path: t.dir, images: SHARED_IMAGES });
    try {
      await until('a new device process', async () => {
        await other.get(name);
        const now = readFileSync(path.join(t.dir, 'instances', name, 'proxy.lock'), 'utf8');
        return now !== lock && now.trim() !== '';
      });
      expect(await has(n)).toBe(true);
      // Gone from the host: gone from the container, and from its cgroup.
      removeLoop(n);
      loop = undefined;
      await until(`/dev/loop${n} to leave the container`, async () => !(await has(n)));
      await until('state() to stop listing it', async () => !(await nodes())!.includes(`/dev/loop${n}`));
      if (rules) await until('the cgroup rule to go', () => !devicesList(pid)!.includes(`b 7:${n} rwm`));
    } finally {
      await other.close();
    }
    // Appearing again, then the device removed from the running container: the node goes with it.
    loop = makeLoop(image);
    const again = loop;
    await until(`/dev/loop${again} in the container`, () => has(again));
    await c.removeDevice('hp');
    await until(`/dev/loop${again} to leave with the device`, async () => !(await has(again)));
    expect(existsSync(path.join(t.dir, 'instances', name, 'devices', `hotplug.hp.loop${again}`))).toBe(false);
  } finally {
    if (loop !== undefined) removeLoop(loop);
    await c.delete({ force: true });
  }
});

test('bad keys: typed errors naming the key, nothing made', async () => {
  const bad = async (device: Record<string, unknown>) => thrown(t.host.create(t.name('hpbad'), { image: 'busybox', devices: { hp: { type: 'unix-hotplug', ...device } as never } }));
  const none = await bad({ uid: 1000 });
  expect(none).toBeInstanceOf(InvalidArgument);
  expect(none.message).toMatch(/needs "vendorid", "productid" or "subsystem"/);
  for (const [key, value] of [['vendorid', '0A5C'], ['vendorid', '12345'], ['productid', 'xyz1'], ['subsystem', 'a/b'], ['mode', '0999'], ['uid', '-1'], ['required', 'yes']]) {
    const e = await bad({ [key]: value });
    expect(e).toBeInstanceOf(InvalidArgument);
    expect(e.message).toContain(`"${key}"`);
  }
  const inherit = await bad({ subsystem: 'block', uid: 1, gid: 1, 'ownership.inherit': true });
  expect(inherit.message).toMatch(/"ownership.inherit"/);
  expect((await bad({ vendorid: 'ffff', productid: 'fffe', required: true })).message).toMatch(/required, and no device node of this host matches vendorid ffff, productid fffe/);
  expect(await thrown(t.host.create(t.name('hpvm'), { type: 'vm', image: 'vm/default', devices: { hp: { type: 'unix-hotplug', subsystem: 'block' } } }))).toBeInstanceOf(NotSupported);
  expect(await t.host.list()).toEqual([]);
});

test('the match is LXD\'s: ids padded for a node that appears, as they are for one present; USB nodes and major 0 never', () => {
  const loop = { devname: 'loop5', subsystem: 'block', major: 7, minor: 5, vendor: '', product: '' };
  const d = { type: 'unix-hotplug' as const, vendorid: '0000', subsystem: 'block' };
  expect(hotplugMatches(d, loop)).toBe(false);
  expect(hotplugMatches(d, padded(loop))).toBe(true);
  expect(hotplugMatches({ type: 'unix-hotplug', subsystem: 'tty' }, padded(loop))).toBe(false);
  const serial = { devname: 'ttyUSB0', subsystem: 'tty', major: 188, minor: 0, vendor: '0403', product: '6001' };
  expect(hotplugMatches({ type: 'unix-hotplug', vendorid: '0403', productid: '6001' }, serial)).toBe(true);
  expect(hotplugMatches({ type: 'unix-hotplug', vendorid: '0403', productid: '6002' }, serial)).toBe(false);
  expect(hotplugMatches({ type: 'unix-hotplug', vendorid: '0403' }, { ...serial, subsystem: 'usb' })).toBe(false);
  expect(hotplugMatches({ type: 'unix-hotplug', subsystem: 'block' }, { ...loop, major: 0 })).toBe(false);
});
