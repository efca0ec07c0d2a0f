/**
 * LXD's security.*, raw.seccomp, raw.apparmor and migration.* keys, each by its effect on real
 * containers: the seccomp policy
 * security.syscalls.* make, seen from inside (a denied call killed, as liblxc does for a bare
 * name in LXD, or failed with the errno given); and the
 * keys whose meaning this host or lxq lacks, refused with NotSupported before anything is made.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import * as path from 'node:path';

import { Instance, InvalidArgument, NotSupported } from '../lib';
import { SYSCALL_NAMES } from '../lib/config/options/syscalls';
import { seccompPolicy } from '../lib/drivers/container/seccomp';
import { sh, tempHost, TestHost, thrown } from './helpers/host';

const SIGSYS_EXIT = 128 + 31;

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


/** A started busybox container with `config`, deleted after `body`. */
async function withContainer(config: Record<string, string>, body: (c: Instance) => Promise<void>): Promise<void> {
  const c = await t.host.create(t.name('sec'), { image: 'busybox', config });
  try {
    await c.start();
    await body(c);
  } finally {
    await c.delete({ force: true }).catch(() => undefined);
  }
}

/** The seccomp probe's errno per call, run inside. */
async function probeInside(c: Instance): Promise<Record<string, number>> {
  await c.files.push(probe, '/probe', { mode: 0o755 });
  const r = await sh(c, '/probe');
  expect(r).toMatchObject({ code: 0, err: '' });
  return Object.fromEntries(r.out.trim().split('\n').map((l) => [l.split(' ')[0], Number(l.split(' ')[2])]));
}

/** Whatever the call, the host holds no instance named so afterwards. */
async function refusedWithNothingMade(config: Record<string, unknown>, type: 'container' | 'vm' = 'container'): Promise<Error> {
  const name = t.name('bad');
  const err = await thrown(t.host.create(name, { type, image: type === 'vm' ? 'vm/default' : 'busybox', config: config as never }));
  expect((await t.host.list()).map((i) => i.name)).not.toContain(name);
  return err;
}

describe('security.syscalls.*', () => {
  test('deny: "name errno N" fails the call with that errno, a bare name kills the caller (SIGSYS, as liblxc does for LXD); the defaults stay', async () => {
    await withContainer({ 'security.syscalls.deny': 'mkdir errno 1\nmkdirat errno 1\nsethostname' }, async (c) => {
      const mk = await sh(c, 'mkdir /tmp/denied');
      expect(mk.code).not.toBe(0);
      expect(mk.err).toMatch(/Operation not permitted/);
      expect((await sh(c, '(hostname lxq-renamed); echo $?')).out).toBe(`${SIGSYS_EXIT}\n`);
      expect((await sh(c, 'hostname')).out).not.toBe('lxq-renamed\n');
      expect((await probeInside(c)).keyctl).toBe(38);
      expect((await sh(c, 'echo ok > /tmp/f && cat /tmp/f')).out).toBe('ok\n');
    });
  });

  test('deny_default=false: the default list is gone (the keyring calls reach the kernel), umount -f is no longer refused', async () => {
    expect(seccompPolicy({ 'security.syscalls.deny_default': 'false' })).toBe('2\ndenylist\n[all]\n');
    await withContainer({ 'security.syscalls.deny_default': 'false' }, async (c) => {
      const r = await probeInside(c);
      expect(r.add_key).toBe(19); // ENODEV: no such key type, from the kernel
      expect(r.request_key).toBe(126); // ENOKEY
      expect((await sh(c, 'mkdir -p /mnt/t && mount -t tmpfs none /mnt/t && umount -f /mnt/t && grep -c " /mnt/t " /proc/mounts')).out).toBe('0\n');
    });
  });

  test('allow: only the listed calls work, any other kills the caller', async () => {
    const allowed = [...SYSCALL_NAMES].filter((s) => s !== 'mkdir' && s !== 'mkdirat');
    await withContainer({ 'security.syscalls.allow': allowed.join('\n') }, async (c) => {
      expect(readFileSync(path.join(t.dir, 'instances', c.name, 'seccomp.policy'), 'utf8')).toMatch(/^2\nallowlist\n\[all\]\n_sysctl\naccept\n/);
      expect((await sh(c, 'echo alive; ls / >/dev/null; echo $?')).out).toBe('alive\n0\n');
      expect((await sh(c, '(mkdir /tmp/x); echo $?')).out).toBe(`${SIGSYS_EXIT}\n`);
    });
  });

  test("deny_compat: LXD's compat list is denied for the i386 ABI (this kernel runs no 32-bit program: the policy is checked loaded, not exercised)", async () => {
    const text = seccompPolicy({ 'security.syscalls.deny_compat': 'true' });
    expect(text).toContain('\n[x86]\nrt_sigaction errno 38\nioctl errno 38\n');
    expect(text.endsWith('io_submit errno 38\n[all]\n')).toBe(true);
    await withContainer({ 'security.syscalls.deny_compat': 'true' }, async (c) => {
      expect((await sh(c, "grep '^Seccomp:' /proc/1/status")).out).toMatch(/Seccomp:\s+2/);
      expect((await probeInside(c)).keyctl).toBe(38);
    });
  });

  test('raw.seccomp: the whole policy, as given', async () => {
    const raw = '2\ndenylist\n[all]\nmkdir errno 13\nmkdirat errno 13\n';
    await withContainer({ 'raw.seccomp': raw }, async (c) => {
      expect(readFileSync(path.join(t.dir, 'instances', c.name, 'seccomp.policy'), 'utf8')).toBe(raw + '\n');
      expect((await sh(c, 'mkdir /tmp/x')).err).toMatch(/Permission denied/);
      expect((await probeInside(c)).add_key).toBe(19); // no default list in a raw policy
    });
  });

  test('bad values are refused, naming the key, and nothing is made', async () => {
    const cases: Array<[Record<string, unknown>, RegExp]> = [
      [{ 'security.syscalls.deny': 'mkdri' }, /"security.syscalls.deny".*"mkdri" is not a system call/],
      [{ 'security.syscalls.deny': 'mkdir errno' }, /"security.syscalls.deny".*not a seccomp action/],
      [{ 'security.syscalls.deny': 'mkdir notify' }, /"security.syscalls.deny".*notify/],
      [{ 'security.syscalls.allow': '\n# nothing\n' }, /"security.syscalls.allow".*no system call named/],
      [{ 'security.syscalls.allow': 'read', 'security.syscalls.deny': 'write' }, /"security.syscalls.allow" and "security.syscalls.deny" exclude each other/],
      [{ 'security.syscalls.deny_compat': 'yes' }, /"security.syscalls.deny_compat".*"true" or "false"/],
      [{ 'raw.seccomp': 'denylist\n[all]\n' }, /"raw.seccomp".*first line must be "2"/],
      [{ 'raw.seccomp': '2\ndenylist\nmount notify\n' }, /"raw.seccomp".*notify/],
      [{ 'raw.seccomp': '2\ndenylist\n', 'security.syscalls.deny': 'mkdir' }, /"raw.seccomp" is the whole seccomp policy: "security.syscalls.deny"/],
    ];
    for (const [config, message] of cases) {
      const err = await refusedWithNothingMade(config);
      expect(err).toBeInstanceOf(InvalidArgument);
      expect(err.message).toMatch(message);
    }
  });

  test.each(['mount', 'bpf', 'sched_setscheduler'])('intercept.%s=true is refused with NotSupported (lxq\'s listener does not answer it); false is accepted', async (k) => {
    const err = await refusedWithNothingMade({ [`security.syscalls.intercept.${k}`]: 'true' });
    expect(err).toBeInstanceOf(NotSupported);
    expect(err.message).toMatch(new RegExp(`"security.syscalls.intercept.${k}": lxq's seccomp listener does not answer ${k}`));
    const c = await t.host.create(t.name('ok'), { image: 'busybox', config: { [`security.syscalls.intercept.${k}`]: 'false' } as never });
    await c.delete();
  });
});

describe('keys whose meaning lxq or this host lacks: NotSupported, saying why, nothing made', () => {
  test.each([
    [{ 'security.devlxd': 'true' }, 'container', /no daemon to serve \/dev\/lxd/],
    [{ 'security.devlxd.images': 'true' }, 'container', /no daemon to serve \/dev\/lxd/],
    [{ 'security.delegate_bpf': 'true' }, 'container', /delegated bpffs/],
    [{ 'security.sev': 'true' }, 'vm', /SEV/],
    [{ 'security.sev.session.dh': 'abc' }, 'vm', /SEV/],
    [{ 'raw.apparmor': 'deny /x rw,' }, 'container', /AppArmor is not enabled on this host/],
    [{ 'security.devlxd.management.volumes': 'true' }, 'container', /no daemon to serve \/dev\/lxd/],
    [{ 'ubuntu_pro.guest_attach': 'on' }, 'vm', /no daemon to serve \/dev\/lxd/],
    [{ 'security.syscalls.intercept.mount.allowed': 'ext4' }, 'container', /seccomp listener does not answer mount/],
    [{ 'security.syscalls.intercept.mount.shift': 'true' }, 'container', /seccomp listener does not answer mount/],
    [{ 'security.syscalls.intercept.bpf': 'true' }, 'container', /seccomp listener does not answer bpf/],
    [{ 'security.syscalls.intercept.bpf.devices': 'true' }, 'container', /seccomp listener does not answer bpf/],
    [{ 'security.syscalls.intercept.sched_setscheduler': 'true' }, 'container', /seccomp listener does not answer sched_setscheduler/],
    [{ 'migration.incremental.memory.goal': '50' }, 'container', /no live migration/],
    [{ 'migration.incremental.memory': 'true' }, 'container', /"criu check" fails on this host: .*(kernel features|not installed)|criu check passes/s],
  ] as const)('%j on a %s', async (config, type, why) => {
    const err = await refusedWithNothingMade(config, type);
    expect(err).toBeInstanceOf(NotSupported);
    expect(err.message).toMatch(`"${Object.keys(config)[0]}"`);
    expect(err.message).toMatch(why);
  });

  test('their off values are what lxq does, and accepted', async () => {
    const c = await t.host.create(t.name('off'), { image: 'busybox', config: { 'security.devlxd': 'false', 'ubuntu_pro.guest_attach': 'off', 'security.delegate_bpf': false, 'migration.incremental.memory': 'false' } });
    await c.delete();
  });
});
