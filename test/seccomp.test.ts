/**
 * The default seccomp policy of containers (LXD's deny list, plus the kernel keyring's calls),
 * unprivileged and privileged: seen from inside real containers with a static probe program
 * (test/helpers/syscall-probe.c) that makes each denied call and prints its errno. This
 * machine's kernel has no modules and no kexec (ENOSYS for those calls anyway): the keyring calls
 * and open_by_handle_at, which the kernel has, are what a container without the policy (last
 * test) shows to be the policy's doing.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';

import { Host, Instance, InvalidArgument } from '../lib';
import { seccompPolicy } from '../lib/drivers/container/lxc-config';
import { sh, SHARED_IMAGES, tempHost, TestHost, thrown } from './helpers/host';

const ENOSYS = 38;
const DENIED = ['keyctl', 'add_key', 'request_key', 'kexec_load', 'init_module', 'finit_module', 'delete_module', 'open_by_handle_at'];

let t: TestHost;
let probe: string;

beforeAll(async () => {
  t = await tempHost();
  probe = path.join(t.dir, 'syscall-probe');
  execFileSync('cc', ['-static', '-O2', '-o', probe, path.join(__dirname, 'helpers', 'syscall-probe.c')]);
});
afterAll(async () => {
  await t?.dispose();
});

/** The probe's "<call> <result> <errno>" lines, run inside `i`, by call name. */
async function probeInside(i: Instance): Promise<Record<string, { rc: number; errno: number }>> {
  await i.files.push(probe, '/probe', { mode: 0o755 });
  const r = await sh(i, '/probe');
  expect(r).toMatchObject({ code: 0, err: '' });
  const out: Record<string, { rc: number; errno: number }> = {};
  for (const line of r.out.trim().split('\n')) {
    const [name, rc, errno] = line.split(' ');
    out[name] = { rc: Number(rc), errno: Number(errno) };
  }
  return out;
}

/** The Seccomp mode of a process inside (2: filtered). */
async function seccompMode(i: Instance, pid: string): Promise<string> {
  const r = await sh(i, `grep '^Seccomp:' /proc/${pid}/status`);
  expect(r.code).toBe(0);
  return r.out.split(/\s+/)[1];
}

test('the policy text: LXD\'s default deny list and the keyring calls, ENOSYS each', () => {
  const text = seccompPolicy({});
  expect(text.split('\n')).toEqual([
    '2',
    'denylist',
    'reject_force_umount',
    '[all]',
    'kexec_load errno 38',
    'open_by_handle_at errno 38',
    'init_module errno 38',
    'finit_module errno 38',
    'delete_module errno 38',
    'keyctl errno 38',
    'add_key errno 38',
    'request_key errno 38',
    '',
  ]);
  // Privileged or not: one policy.
  expect(seccompPolicy({ 'security.privileged': 'true' })).toBe(text);
});

describe.each([
  ['an unprivileged', {}],
  ['a privileged', { 'security.privileged': 'true' }],
])('%s container', (_what, config) => {
  let c: Instance;
  beforeAll(async () => {
    c = await t.host.create(t.name('sc'), { image: 'busybox', config });
    await c.start();
  });
  afterAll(async () => {
    await c?.delete({ force: true }).catch(() => undefined);
  });

  test('its directory holds the policy and its config names it', () => {
    const dir = path.join(t.dir, 'instances', c.name);
    expect(readFileSync(path.join(dir, 'seccomp.policy'), 'utf8')).toBe(seccompPolicy(config));
    expect(readFileSync(path.join(dir, 'config'), 'utf8')).toContain(`\nlxc.seccomp.profile = ${path.join(dir, 'seccomp.policy')}\n`);
  });

  test('init and the processes exec starts are filtered (Seccomp: 2)', async () => {
    expect(await seccompMode(c, '1')).toBe('2');
    expect(await seccompMode(c, 'self')).toBe('2');
  });

  test('each denied call fails with ENOSYS; an allowed one works', async () => {
    const r = await probeInside(c);
    for (const call of DENIED) expect([call, r[call]]).toEqual([call, { rc: -1, errno: ENOSYS }]);
    expect(r.getpid.rc).toBeGreaterThan(0);
    expect(r.getpid.errno).toBe(0);
  });

  test('ordinary programs still work; a mount can be unmounted, but not forced (reject_force_umount)', async () => {
    expect(await sh(c, 'echo hello; ls / >/dev/null && cat /proc/self/comm; mkdir -p /tmp/x && echo data > /tmp/x/f && cat /tmp/x/f')).toEqual({
      code: 0,
      out: 'hello\ncat\ndata\n',
      err: '',
    });
    expect((await sh(c, 'mkdir -p /mnt/t && mount -t tmpfs none /mnt/t && grep -c " /mnt/t " /proc/mounts')).out).toBe('1\n');
    const forced = await sh(c, 'umount -f /mnt/t');
    expect(forced.code).not.toBe(0);
    expect(forced.err).toMatch(/Permission denied/);
    expect((await sh(c, 'grep -c " /mnt/t " /proc/mounts')).out).toBe('1\n');
    expect(await sh(c, 'umount /mnt/t && grep -c " /mnt/t " /proc/mounts')).toEqual({ code: 1, out: '0\n', err: '' });
  });

  test('the policy survives a config rewrite and a restart', async () => {
    await c.update({ 'environment.SECCOMP_TEST': '1' });
    await c.restart();
    expect(await seccompMode(c, '1')).toBe('2');
    expect((await probeInside(c)).keyctl).toEqual({ rc: -1, errno: ENOSYS });
  });
});

test('the ENOSYS comes from the policy: a container whose raw.lxc clears the profile (with consent) reaches the keyring calls', async () => {
  const c = await t.host.create(t.name('nosc'), { image: 'busybox', config: { 'raw.lxc': 'lxc.seccomp.profile =', 'security.syscalls.deny_default': 'false' } });
  try {
    await c.start();
    expect(await seccompMode(c, '1')).toBe('0');
    const r = await probeInside(c);
    // add_key of a key type that does not exist: ENODEV; request_key of a key that is not there: ENOKEY.
    expect(r.add_key).toEqual({ rc: -1, errno: 19 });
    expect(r.request_key).toEqual({ rc: -1, errno: 126 });
    expect(r.keyctl.errno).not.toBe(ENOSYS);
    // No handle given: EFAULT, the call itself exists.
    expect(r.open_by_handle_at.errno).not.toBe(ENOSYS);
    // And umount -f is the kernel's to refuse or not: here it unmounts.
    expect(await sh(c, 'mkdir -p /mnt/t && mount -t tmpfs none /mnt/t && umount -f /mnt/t && grep -c " /mnt/t " /proc/mounts')).toEqual({ code: 1, out: '0\n', err: '' });
  } finally {
    await c.delete({ force: true });
  }
});

test('raw.lxc replaces the policy only with consent (security.syscalls.deny_default: false): refused at create, update, in a profile, expanded, and at the start of a record written before the rule', async () => {
  const names = async () => (await t.host.list()).map((i) => i.name);
  const before = await names();
  for (const raw of ['lxc.seccomp.profile =', 'lxc.signal.halt = SIGUSR1\n  lxc.seccomp.profile = /tmp/none.policy', 'lxc.seccomp.notify.proxy = unix:/tmp/none.sock', 'lxc.include = /usr/share/lxc/config/common.conf']) {
    for (const consent of [{}, { 'security.syscalls.deny_default': 'true' }]) {
      const e = await thrown(t.host.create(t.name('rc'), { image: 'busybox', config: { 'raw.lxc': raw, ...consent } }));
      expect(e).toBeInstanceOf(InvalidArgument);
      expect(e.message).toContain('security.syscalls.deny_default');
    }
  }
  // With consent, what the policy would have held cannot be asked for beside it: it would be ignored.
  const ignored = await thrown(t.host.create(t.name('rc'), { image: 'busybox', config: { 'raw.lxc': 'lxc.seccomp.profile =', 'security.syscalls.deny_default': 'false', 'security.syscalls.deny': 'mount' } }));
  expect(ignored).toBeInstanceOf(InvalidArgument);
  expect(ignored.message).toMatch(/security\.syscalls\.deny" would be ignored/);
  expect(await names()).toEqual(before);

  const c = await t.host.create(t.name('upd'), { image: 'busybox', config: { 'raw.lxc': 'lxc.seccomp.allow_nesting = 1' } }); // stacks filters: removes none
  try {
    expect(await thrown(c.update({ 'raw.lxc': 'lxc.seccomp.profile =' }))).toBeInstanceOf(InvalidArgument);
    expect(c.config['raw.lxc']).toBe('lxc.seccomp.allow_nesting = 1');
    // A profile alone is checked as an instance's options are; a consenting profile undone by the instance's own key is caught by the config's writer.
    expect(await thrown(t.host.profiles.create(t.name('pr'), { config: { 'raw.lxc': 'lxc.seccomp.profile =' } }))).toBeInstanceOf(InvalidArgument);
    const p = t.name('pc');
    await t.host.profiles.create(p, { config: { 'raw.lxc': 'lxc.seccomp.profile =', 'security.syscalls.deny_default': 'false' } });
    const e = await thrown(t.host.create(t.name('exp'), { image: 'busybox', profiles: ['default', p], config: { 'security.syscalls.deny_default': 'true' } }));
    expect(e).toBeInstanceOf(InvalidArgument);
    expect(await names()).toEqual([...before, c.name].sort());
    await t.host.profiles.delete(p);

    // A record written before the rule (or by hand): its next start writes the config again and refuses; the container stays stopped.
    const file = path.join(t.dir, 'instances', c.name, 'lxq.json');
    const record = JSON.parse(readFileSync(file, 'utf8'));
    writeFileSync(file, JSON.stringify({ ...record, config: { ...record.config, 'raw.lxc': 'lxc.seccomp.profile =' } }));
    const other = await Host.open({ path: t.dir, images: SHARED_IMAGES });
    try {
      const reopened = await other.get(c.name);
      const started = await thrown(reopened.start());
      expect(started).toBeInstanceOf(InvalidArgument);
      expect(started.message).toContain('security.syscalls.deny_default');
      expect(await reopened.status()).toBe('stopped');
      writeFileSync(file, JSON.stringify(record));
      const again = await other.get(c.name);
      await again.start();
      expect(await seccompMode(again, '1')).toBe('2');
      await again.stop({ force: true });
    } finally {
      await other.close();
    }
  } finally {
    await c.delete({ force: true }).catch(() => undefined);
  }
});

test('a container made before the default filter existed (no policy file, no profile line) gets it at its next start', async () => {
  const c = await t.host.create(t.name('old'), { image: 'busybox' });
  try {
    const dir = path.join(t.dir, 'instances', c.name);
    // As lxq left a container before: the config without the profile, no policy beside it.
    const config = readFileSync(path.join(dir, 'config'), 'utf8');
    writeFileSync(path.join(dir, 'config'), config.split('\n').filter((l) => !l.startsWith('lxc.seccomp.profile')).join('\n'));
    rmSync(path.join(dir, 'seccomp.policy'));
    // Nor the digest of what the config was made from, which came later (profiles).
    rmSync(path.join(dir, 'config.source'), { force: true });
    const reopened = await (await Host.open({ path: t.dir, images: SHARED_IMAGES })).get(c.name);
    await reopened.start();
    expect(await seccompMode(reopened, '1')).toBe('2');
    expect(readFileSync(path.join(dir, 'config'), 'utf8')).toContain(`\nlxc.seccomp.profile = ${path.join(dir, 'seccomp.policy')}\n`);
    await reopened.stop({ force: true });
  } finally {
    await c.delete({ force: true }).catch(() => undefined);
  }
});
