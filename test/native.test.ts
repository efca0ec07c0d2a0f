/**
 * The native addon on its own: every wrapped liblxc call, the error shape, per-container
 * serialization, and the start hazard (the caller's cgroups never change, no monitor cgroup
 * is left behind).
 */
import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import { detectCgroupLayout, detectIdMap } from '../lib/drivers/container/host-facts';
import { lxc, LxcContainer, LxcError } from '../lib/native/lxc';
import { monitorCgroups } from './helpers/host';

const lxcpath = mkdtempSync(path.join(os.tmpdir(), 'lxq-native-'));
chmodSync(lxcpath, 0o711);
const tag = randomBytes(3).toString('hex');
const names: string[] = [];
const handles: LxcContainer[] = [];

function handle(name: string): LxcContainer {
  const h = new (lxc().Container)(name, lxcpath);
  handles.push(h);
  return h;
}

/** A busybox container made by liblxc's own busybox template, unprivileged. */
async function makeContainer(suffix: string): Promise<LxcContainer> {
  const name = `n-${tag}-${suffix}`;
  names.push(name);
  const c = handle(name);
  const { base, size } = detectIdMap();
  for (const [k, v] of [
    ['lxc.net.0.type', 'empty'],
    ['lxc.apparmor.profile', 'unconfined'],
    ['lxc.idmap', `u 0 ${base} ${size}`],
    ['lxc.idmap', `g 0 ${base} ${size}`],
    ['lxc.log.file', path.join(lxcpath, `${name}.log`)],
  ]) {
    expect(await c.setConfigItem(k, v)).toBe(true);
  }
  expect(await c.create('busybox', null, [])).toBe(true);
  return c;
}

/** The cgroup of `pid` for a v1 controller, from /proc/<pid>/cgroup. */
function cgroupOf(pid: number, controller: string): string {
  const line = readFileSync(`/proc/${pid}/cgroup`, 'utf8')
    .split('\n')
    .find((l) => l.split(':')[1]?.split(',').includes(controller));
  return line?.split(':').slice(2).join(':') ?? '';
}

afterAll(async () => {
  for (const name of names) {
    const c = new (lxc().Container)(name, lxcpath);
    if ((await c.state()) !== 'STOPPED') await c.stop().catch(() => undefined);
    await c.destroy().catch(() => undefined);
    c.release();
  }
  for (const h of handles) h.release();
  rmSync(lxcpath, { recursive: true, force: true });
});

test('the addon reports the liblxc version', () => {
  expect(lxc().liblxcVersion).toMatch(/^\d+\.\d+/);
});

describe('one container through every call', () => {
  let c: LxcContainer;
  beforeAll(async () => {
    c = await makeContainer('a');
  });

  test('create from a template defines the container; listAllContainers sees it', async () => {
    expect(await c.defined()).toBe(true);
    expect(await c.state()).toBe('STOPPED');
    expect(await c.initPid()).toBe(-1);
    const list = await lxc().listAllContainers(lxcpath);
    expect(list.defined).toContain(names[0]);
    expect(list.active).not.toContain(names[0]);
  });

  test('config items: get, set, clear, keys, save', async () => {
    expect(await c.getConfigItem('lxc.uts.name')).toBe(names[0]);
    expect(await c.setConfigItem('lxc.environment', 'LXQ_TEST=1')).toBe(true);
    expect(await c.getConfigItem('lxc.environment')).toContain('LXQ_TEST=1');
    expect(await c.clearConfigItem('lxc.environment')).toBe(true);
    expect(await c.getConfigItem('lxc.environment')).toBe('');
    const keys = await c.getKeys();
    expect(keys).toEqual(expect.arrayContaining(['lxc.rootfs.path', 'lxc.idmap', 'lxc.uts.name']));
    expect(await c.getKeys('lxc.net.0')).toEqual(expect.arrayContaining(['type']));
    expect(await c.setConfigItem('lxc.cgroup.pids.max', '64')).toBe(true);
    expect(await c.saveConfig()).toBe(true);
    expect(readFileSync(path.join(lxcpath, names[0], 'config'), 'utf8')).toContain('lxc.cgroup.pids.max = 64');
  });

  test('a bad key rejects with the call, errno and log', async () => {
    const e = (await c.setConfigItem('lxc.no.such.key', 'x').catch((err) => err)) as LxcError;
    expect(Object.prototype.toString.call(e)).toBe('[object Error]');
    expect(e.message).toMatch(/set_config_item failed/);
    expect(e.call).toBe('set_config_item');
    expect(typeof e.errno).toBe('number');
    expect(typeof e.log).toBe('string');
  });

  test('start, state, init pid, cgroup items, running config, ips', async () => {
    expect(await c.start([])).toBe(true);
    expect(await c.state()).toBe('RUNNING');
    const pid = await c.initPid();
    expect(pid).toBeGreaterThan(1);
    expect(await c.getCgroupItem('pids.max')).toBe('64');
    expect(await c.setCgroupItem('pids.max', '80')).toBe(true);
    expect(await c.getCgroupItem('pids.max')).toBe('80');
    expect(Number(await c.getCgroupItem('memory.usage_in_bytes'))).toBeGreaterThan(0);
    expect(await c.getRunningConfigItem('lxc.uts.name')).toBe(names[0]);
    expect(Array.isArray(await c.getIps())).toBe(true);
  });

  test('freeze, unfreeze, wait', async () => {
    // Through the bounded v1 freeze first, as lxq always freezes: liblxc 5.0.2's freeze alone
    // rewrites FROZEN once a second for as long as the cgroup reads FREEZING, with no limit, and
    // it did not return for 8 minutes in 1 of 20 soak runs here at load 6 (every later call on the
    // handle queued behind it).
    expect(await c.freeze(detectCgroupLayout().v1Mount('freezer'))).toBe(true);
    expect(await c.state()).toBe('FROZEN');
    expect(await c.unfreeze()).toBe(true);
    expect(await c.wait('RUNNING', 5)).toBe(true);
  });

  test('freeze through the v1 freezer first, and the state precondition of freeze/unfreeze', async () => {
    const v1 = detectCgroupLayout().v1Mount('freezer');
    expect(await c.freeze(v1, 'RUNNING')).toBe(true);
    expect(await c.state()).toBe('FROZEN');
    if (v1) expect(readFileSync(path.join(v1, cgroupOf(await c.initPid(), 'freezer'), 'freezer.state'), 'utf8').trim()).toBe('FROZEN');
    // Refused in the same call, for the state found: call "state", ESRCH (3), nothing changed.
    const again = (await c.freeze(v1, 'RUNNING').catch((err) => err)) as LxcError;
    expect(again).toMatchObject({ call: 'state', errno: 3, log: 'FROZEN' });
    expect(await c.unfreeze('FROZEN')).toBe(true);
    expect(await c.state()).toBe('RUNNING');
    expect(await c.unfreeze('FROZEN').catch((err) => err)).toMatchObject({ call: 'state', errno: 3, log: 'RUNNING' });
  });

  test('shutdown asks init to halt and waits', async () => {
    expect(await c.shutdown(10)).toBe(true);
    expect(await c.state()).toBe('STOPPED');
  });

  test('stop kills; a failed call carries the log excerpt of that call', async () => {
    await c.start([]);
    expect(await c.stop()).toBe(true);
    expect(await c.state()).toBe('STOPPED');
    const e = (await c.freeze().catch((err) => err)) as LxcError;
    expect(e.call).toBe('freeze');
    expect(e.log).toMatch(/freeze/i);
  });

  test('destroy removes it', async () => {
    expect(await c.destroy()).toBe(true);
    expect(await c.defined()).toBe(false);
    expect((await lxc().listAllContainers(lxcpath)).defined).not.toContain(names[0]);
  });
});

test('a handle opens nothing until its first call, which opens it off the event loop', async () => {
  const made = await makeContainer('lazy');
  const name = names[names.length - 1];
  expect(await made.saveConfig()).toBe(true);
  const log = path.join(lxcpath, `${name}.log`);
  rmSync(log, { force: true });
  const h = handle(name);
  // lxc_container_new parses the config and creates the log (ms on a slow filesystem): not yet.
  expect(existsSync(log)).toBe(false);
  expect(await h.defined()).toBe(true);
  expect(existsSync(log)).toBe(true);
});

test('calls on one handle run in call order', async () => {
  const c = await makeContainer('order');
  const order: string[] = [];
  await Promise.all([
    c.start([]).then(() => order.push('start')),
    c.state().then((s) => order.push(`state:${s}`)),
    c.stop().then(() => order.push('stop')),
    c.state().then((s) => order.push(`state:${s}`)),
  ]);
  expect(order).toEqual(['start', 'state:RUNNING', 'stop', 'state:STOPPED']);
});

test('a released handle refuses further calls', async () => {
  const h = new (lxc().Container)(`n-${tag}-gone`, lxcpath);
  h.release();
  expect(() => h.state()).toThrow(/released/);
});

test('start hazard: 20 start/stop cycles leave the caller in its cgroups and no monitor cgroup behind', async () => {
  const c = await makeContainer('cycles');
  const before = readFileSync('/proc/self/cgroup', 'utf8');
  for (let i = 0; i < 20; i++) {
    expect(await c.start([])).toBe(true);
    expect(readFileSync('/proc/self/cgroup', 'utf8')).toBe(before);
    expect(await c.stop()).toBe(true);
  }
  expect(readFileSync('/proc/self/cgroup', 'utf8')).toBe(before);
  expect(monitorCgroups().filter((d) => d.includes(tag))).toEqual([]);
});

test("the container's init starts with an empty signal mask and default dispositions", async () => {
  const c = await makeContainer('sigs');
  // `sleep` as pid 1 touches no signal: what it has is what it inherited from the start.
  await c.start(['/bin/sleep', '600']);
  try {
    const status = readFileSync(`/proc/${await c.initPid()}/status`, 'utf8');
    expect(/SigBlk:\s+([0-9a-f]+)/.exec(status)![1]).toMatch(/^0+$/);
    // Node ignores SIGPIPE; the container's processes must not inherit that.
    const ignored = BigInt('0x' + /SigIgn:\s+([0-9a-f]+)/.exec(status)![1]);
    expect(ignored & (1n << 12n)).toBe(0n); // SIGPIPE is signal 13 → bit 12
  } finally {
    await c.stop();
  }
});
