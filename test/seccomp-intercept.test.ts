/**
 * security.syscalls.intercept.mknod/setxattr/sysinfo: lxq's seccomp listener (lxq_intercept)
 * answers the calls from inside real unprivileged busybox containers, seen with a static probe
 * (test/helpers/intercept-probe.c) that prints each call's errno (0: done) or sysinfo's figures.
 * One container with the keys, one without; the listener's life is checked against the
 * container's (gone at stop, started again by lxq if killed, untouched by a killed Node process).
 */
import { execFileSync, spawn } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import * as path from 'node:path';

import { Host, Instance } from '../lib';
import { seccompPolicy } from '../lib/drivers/container/lxc-config';
import { sh, SHARED_IMAGES, tempHost, TestHost } from './helpers/host';

const EPERM = 1;
const LIMIT = 256 * 1024 * 1024;
const KEYS = {
  'security.syscalls.intercept.mknod': 'true',
  'security.syscalls.intercept.setxattr': 'true',
  'security.syscalls.intercept.sysinfo': 'true',
  'limits.memory': '256MiB',
} as const;

let t: TestHost;
let probe: string;

beforeAll(async () => {
  t = await tempHost();
  probe = path.join(t.dir, 'intercept-probe');
  execFileSync('cc', ['-static', '-O2', '-o', probe, path.join(__dirname, 'helpers', 'intercept-probe.c')]);
});
afterAll(async () => {
  await t?.dispose();
});

/** The probe's output inside `i` for one call. */
async function call(i: Instance, args: string): Promise<string> {
  const r = await sh(i, `/probe ${args}`);
  expect(r).toMatchObject({ code: 0, err: '' });
  return r.out.trim();
}

/** The live (not zombie) lxq_intercept processes of the container in `dir` (by their lock's path). */
function listeners(dir: string): number[] {
  const lock = path.join(dir, 'intercept.lock');
  return readdirSync('/proc')
    .filter((p) => /^\d+$/.test(p))
    .filter((p) => {
      try {
        const argv = readFileSync(`/proc/${p}/cmdline`, 'utf8').split('\0');
        return argv[0].endsWith('lxq_intercept') && argv[2] === lock;
      } catch {
        return false;
      }
    })
    .map(Number);
}

async function until(what: string, ok: () => boolean | Promise<boolean>, ms = 60_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await ok())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

test('the policy: notify rules for the enabled calls only (LXD\'s), after the deny list', () => {
  expect(seccompPolicy({ 'security.syscalls.intercept.sysinfo': 'true' })).toMatch(/\nrequest_key errno 38\nseccomp errno 22 \[1,2146435072,SCMP_CMP_MASKED_EQ,2146435072\]\nseccomp errno 22 \[1,8,SCMP_CMP_MASKED_EQ,8\]\nsysinfo notify\n$/);
  const mknod = seccompPolicy({ 'security.syscalls.intercept.mknod': 'true' });
  expect(mknod).toContain('\nmknod notify [1,8192,SCMP_CMP_MASKED_EQ,61440]\nmknodat notify [2,8192,SCMP_CMP_MASKED_EQ,61440]\n');
  expect(mknod).not.toMatch(/sysinfo|setxattr/);
  expect(seccompPolicy({ 'security.syscalls.intercept.mknod': 'false' })).not.toMatch(/notify/);
});

describe('an unprivileged container with the three keys, and one without', () => {
  let c: Instance;
  let plain: Instance;
  let dir: string;
  beforeAll(async () => {
    c = await t.host.create(t.name('ic'), { image: 'busybox', config: KEYS });
    plain = await t.host.create(t.name('ip'), { image: 'busybox', config: { 'limits.memory': '256MiB' } });
    dir = path.join(t.dir, 'instances', c.name);
    await c.start();
    await plain.start();
    for (const i of [c, plain]) await i.files.push(probe, '/probe', { mode: 0o755 });
  }, 180_000);
  afterAll(async () => {
    await c?.delete({ force: true }).catch(() => undefined);
    await plain?.delete({ force: true }).catch(() => undefined);
  });

  test('mknod of /dev/null\'s numbers works with the key (a usable node, owned by root inside, umask applied) and fails (EPERM) without', async () => {
    expect(await call(c, 'mknod /tmp/n 1 3')).toBe('0');
    expect(await sh(c, 'ls -ln /tmp/n | cut -c1-10; echo data > /tmp/n && cat /tmp/n | wc -c; stat -c "%u %g %t %T" /tmp/n')).toEqual({ code: 0, out: 'crw-r--r--\n0\n0 0 1 3\n', err: '' });
    expect(await call(plain, 'mknod /tmp/n 1 3')).toBe(String(EPERM));
    expect((await sh(plain, 'ls /tmp/n')).code).not.toBe(0);
  });

  test('mknodat relative to a directory fd and mknod relative to the cwd are made where the caller means', async () => {
    expect(await call(c, 'mknodat /tmp z 1 5')).toBe('0');
    expect(await sh(c, 'cd /tmp && /probe mknod rel 1 9 && stat -c "%t %T" /tmp/z /tmp/rel')).toEqual({ code: 0, out: '0\n1 5\n1 9\n', err: '' });
  });

  test('a node outside the list (char 1:1 /dev/mem, a block device) still fails with EPERM, and nothing is made', async () => {
    expect(await call(c, 'mknod /tmp/mem 1 1')).toBe(String(EPERM));
    expect(await call(c, 'mknod /tmp/loop 7 0 b')).toBe(String(EPERM));
    expect(await sh(c, 'ls /tmp/mem /tmp/loop 2>/dev/null; echo $?')).toMatchObject({ out: '1\n' });
  });

  test('commands in a row all start, each once (liblxc\'s attach failed now and then: see kInterceptAttempts in native/runner)', async () => {
    // Each command appends a line: a command run by a failed attempt as well would add two.
    for (let i = 0; i < 40; i++) expect((await sh(c, `echo ${i} >> /tmp/runs`)).code).toBe(0);
    expect((await sh(c, 'cat /tmp/runs')).out).toBe(Array.from({ length: 40 }, (_, i) => `${i}\n`).join(''));
  });

  test('sysinfo and free show the container\'s limits.memory and uptime; without the key, the host\'s', async () => {
    const [total, free, , , procs, uptime] = (await call(c, 'sysinfo')).split(' ').map(Number);
    expect(total).toBe(LIMIT);
    expect(free).toBeGreaterThan(0);
    expect(free).toBeLessThan(LIMIT);
    expect(procs).toBeGreaterThanOrEqual(1);
    const hostUptime = Number(readFileSync('/proc/uptime', 'utf8').split(' ')[0]);
    expect(uptime).toBeLessThan(Math.min(hostUptime, 3600));
    // busybox free: the total from sysinfo, in KiB (its "used" subtracts the host's cache from /proc/meminfo: without lxcfs it overflows into the next column)
    const mem = (await sh(c, 'free')).out.split('\n').find((l) => l.startsWith('Mem:'))!;
    expect(mem.replace(/^Mem:\s+/, '')).toMatch(new RegExp(`^${LIMIT / 1024}`));
    const [hostTotal] = (await call(plain, 'sysinfo')).split(' ').map(Number);
    expect(hostTotal).toBeGreaterThan(LIMIT);
  });

  test('setxattr trusted.overlay.opaque = "y" works with the key (seen from the host) and fails (EPERM) without; another trusted.overlay.* attribute still fails', async () => {
    const prep = 'mkdir -p /mnt/t && mount -t tmpfs none /mnt/t && mkdir /mnt/t/d';
    for (const i of [c, plain]) expect((await sh(i, prep)).code).toBe(0);
    expect(await call(c, 'setxattr /mnt/t/d trusted.overlay.opaque y')).toBe('0');
    expect(await call(c, 'setxattr /mnt/t/d trusted.overlay.other y')).toBe(String(EPERM));
    expect(await call(plain, 'setxattr /mnt/t/d trusted.overlay.opaque y')).toBe(String(EPERM));
    const init = (await c.state()).pid;
    expect(execFileSync('getfattr', ['--absolute-names', '--only-values', '-n', 'trusted.overlay.opaque', `/proc/${init}/root/mnt/t/d`]).toString()).toBe('y');
  });

  test('one listener, for the container with the keys; killed, it is started again by the next lxq call and answers', async () => {
    const [pid] = listeners(dir);
    expect(listeners(dir)).toEqual([pid]);
    expect(listeners(path.join(t.dir, 'instances', plain.name))).toEqual([]);
    process.kill(pid, 'SIGKILL');
    await until('the listener to die', () => !listeners(dir).includes(pid));
    await c.state(); // any lxq call that looks at the container
    const [again] = listeners(dir);
    expect(again).toBeGreaterThan(0);
    expect(again).not.toBe(pid);
    expect(await call(c, 'mknod /tmp/n2 1 7')).toBe('0');
  });

  test('the listener is gone once the container stops', async () => {
    expect(listeners(dir)).toHaveLength(1);
    await c.stop({ force: true });
    await until('the listener to end', () => listeners(dir).length === 0);
  }, 180_000);
});

test('a Node process killed after starting the container leaves it answered by the same listener', async () => {
  const name = t.name('ik');
  const script = `
    const { Host } = require(${JSON.stringify(path.join(__dirname, '..', 'lib'))});
    (async () => {
      const host = await Host.open({ path: ${JSON.stringify(t.dir)}, images: ${JSON.stringify(SHARED_IMAGES)} });
      const c = await host.create(${JSON.stringify(name)}, { image: 'busybox', config: ${JSON.stringify(KEYS)} });
      await c.start();
      console.log('started');
      setInterval(() => undefined, 1000);
    })();`;
  const child = spawn(process.execPath, ['-r', path.join(__dirname, 'helpers', 'ts-register.js'), '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  child.stdout.on('data', (d) => (out += d));
  await until('the child to start the container', () => out.includes('started'), 180_000);
  const dir = path.join(t.dir, 'instances', name);
  const before = listeners(dir);
  expect(before).toHaveLength(1);
  child.kill('SIGKILL');
  await new Promise((r) => child.once('close', r));
  const host = await Host.open({ path: t.dir, images: SHARED_IMAGES });
  const c = await host.get(name);
  try {
    await c.files.push(probe, '/probe', { mode: 0o755 });
    expect(await call(c, 'mknod /tmp/n 1 3')).toBe('0');
    expect(listeners(dir)).toEqual(before);
  } finally {
    await c.delete({ force: true });
  }
  await until('the listener to end', () => listeners(dir).length === 0);
}, 300_000);
