/**
 * An existing instance's profiles changed (instance.setProfiles, `lxq profile add|remove|assign`,
 * LXD's `lxc profile add/remove`): the expansion recomputed, checked before anything changes,
 * applied live where the key or device allows it and at the next start otherwise, one
 * instance-updated each; on a container and on a VM (booted once).
 */
import { chmodSync, mkdtempSync, readFileSync } from 'node:fs';
import * as path from 'node:path';

import { Host, InvalidArgument, LifecycleEvent, NotFound } from '../lib';
import type { VmInstance } from '../lib/drivers/vm/vm';
import { hostPerFile, lxqArgv, runNode, SHARED_IMAGES, sh, thrown } from './helpers/host';

const MiB = 2 ** 20;
const t = hostPerFile();

/** The instance-updated events of `name` the host reported while `op` ran (events arrive asynchronously: waited for). */
async function updatedEvents(name: string, count: number, op: () => Promise<void>): Promise<number> {
  const seen: LifecycleEvent[] = [];
  const on = (e: LifecycleEvent) => void (e.name === name && e.action === 'instance-updated' && seen.push(e));
  t.host.on('lifecycle', on);
  try {
    await op();
    for (let i = 0; i < 600 && seen.length < count; i++) await new Promise((r) => setTimeout(r, 50));
    return seen.length;
  } finally {
    t.host.off('lifecycle', on);
  }
}

/** The liblxc config lxq wrote for container `name` (what its next start runs). */
function lxcConfig(name: string): string {
  return readFileSync(path.join(t.dir, 'instances', name, 'config'), 'utf8');
}

/** init's open-files limit inside `c`. */
const NOFILE = "grep 'Max open files' /proc/1/limits | awk '{ print $4 }'";

/** The profiles of `name` as another Host object (another process) reads them from its record. */
async function reopenedProfiles(name: string): Promise<readonly string[]> {
  const h = await Host.open({ path: t.dir, images: SHARED_IMAGES });
  try {
    return (await h.get(name)).profiles;
  } finally {
    await h.close();
  }
}

describe('profiles of an existing container', () => {
  test('added to a running container: its limit and disk live, a non-live key at the next start; removed: all of it goes, one instance-updated each', async () => {
    const share = mkdtempSync(path.join(t.dir, 'share-'));
    chmodSync(t.dir, 0o755);
    chmodSync(share, 0o755);
    const mem = t.name('mem');
    const fwd = t.name('fwd');
    await t.host.profiles.create(mem, { config: { 'limits.memory': '88MiB' }, devices: { data: { type: 'disk', source: share, path: '/mnt/data' } } });
    await t.host.profiles.create(fwd, { config: { 'limits.kernel.nofile': '1234' } });
    const c = await t.host.create(t.name('c'), { image: 'busybox' });
    try {
      await c.start();
      expect((await c.state()).memory.limitBytes).toBeNull();
      expect(await updatedEvents(c.name, 1, () => c.setProfiles(['default', mem, fwd]))).toBe(1);
      expect(c.profiles).toEqual(['default', mem, fwd]);
      expect(c.config).toEqual({});
      expect(c.expandedConfig).toEqual({ 'limits.memory': '88MiB', 'limits.kernel.nofile': '1234' });
      const s = await c.state();
      expect([s.profiles, s.memory.limitBytes]).toEqual([['default', mem, fwd], 88 * MiB]);
      // limits.kernel.nofile is init's rlimit: the running init keeps its own until the next start.
      const nofile = NOFILE;
      expect((await sh(c, `grep -q /mnt/data /proc/mounts && echo mounted; ${nofile}`)).out).not.toMatch(/^mounted\n1234\n/);
      expect((await sh(c, 'grep -q /mnt/data /proc/mounts && echo mounted')).out).toBe('mounted\n');
      // liblxc's config (the next start's), written once after the change: the new options and devices together.
      expect(lxcConfig(c.name)).toMatch(/^lxc\.prlimit\.nofile = 1234$/m);
      expect(lxcConfig(c.name)).toMatch(/^lxc\.mount\.entry = \S+ mnt\/data /m);
      // Another Host object (as another process) sees the new list.
      expect(await reopenedProfiles(c.name)).toEqual(['default', mem, fwd]);
      await c.restart();
      expect((await sh(c, nofile)).out).toBe('1234\n');
      expect(await updatedEvents(c.name, 1, () => c.setProfiles([]))).toBe(1);
      expect([c.profiles, c.expandedConfig, (await c.state()).memory.limitBytes]).toEqual([[], {}, null]);
      expect((await sh(c, 'grep -q /mnt/data /proc/mounts && echo mounted; echo end')).out).toBe('end\n');
    } finally {
      await c.delete({ force: true });
    }
  }, 240_000);

  test('set on a stopped container: its liblxc config has the new options and devices together at once, and the start runs them', async () => {
    const share = mkdtempSync(path.join(t.dir, 'share-'));
    chmodSync(t.dir, 0o755);
    chmodSync(share, 0o755);
    const both = t.name('both');
    await t.host.profiles.create(both, { config: { 'limits.kernel.nofile': '1234' }, devices: { data: { type: 'disk', source: share, path: '/mnt/data' } } });
    const c = await t.host.create(t.name('s'), { image: 'busybox' });
    try {
      expect(lxcConfig(c.name)).not.toMatch(/prlimit|mnt\/data/);
      await c.setProfiles(['default', both]);
      const config = lxcConfig(c.name);
      expect(config).toMatch(/^lxc\.prlimit\.nofile = 1234$/m);
      expect(config).toMatch(/^lxc\.mount\.entry = \S+ mnt\/data /m);
      await c.start();
      expect((await sh(c, `grep -q /mnt/data /proc/mounts && echo mounted; ${NOFILE}`)).out).toBe('mounted\n1234\n');
      expect(lxcConfig(c.name)).toBe(config);
      await c.stop({ force: true });
      // Taken away while stopped: both go from the config together.
      await c.setProfiles(['default']);
      expect(lxcConfig(c.name)).not.toMatch(/prlimit|mnt\/data/);
    } finally {
      await c.delete({ force: true });
    }
  }, 120_000);

  test('bad lists are refused before anything changes: typed errors naming the profile or key', async () => {
    const vmOnly = t.name('vmonly');
    const priv = t.name('priv');
    const clash = t.name('clash');
    await t.host.profiles.create(vmOnly, { config: { 'raw.qemu': '-no-reboot' } });
    await t.host.profiles.create(priv, { config: { 'security.privileged': 'true' } });
    await t.host.profiles.create(clash, { devices: { eth0: { type: 'disk', source: '/tmp', path: '/mnt/x' } } });
    const c = await t.host.create(t.name('bad'), { image: 'busybox', devices: { eth0: { type: 'nic', nictype: 'p2p' } } });
    try {
      await c.start();
      const cases: Array<[unknown, unknown, RegExp]> = [
        [['default', t.name('none')], NotFound, /no profile named "none-/],
        [['default', 'default'], InvalidArgument, /profile "default" is named twice/],
        ['default', InvalidArgument, /profiles must be an array/],
        [['a/b'], InvalidArgument, /bad profile name "a\/b"/],
        [[vmOnly], InvalidArgument, new RegExp(`profile "${vmOnly}" cannot apply to ${c.name} \\(a container\\): .*raw\\.qemu`)],
        [[priv], InvalidArgument, new RegExp(`security.privileged of ${c.name} is fixed when the container is created`)],
        [[clash], InvalidArgument, new RegExp(`device "eth0" of ${c.name} is a nic, and profile "${clash}" has a disk`)],
      ];
      for (const [list, type, re] of cases) {
        const e = await thrown(c.setProfiles(list as string[]));
        expect([list, e]).toEqual([list, expect.any(type)]);
        expect([list, e.message]).toEqual([list, expect.stringMatching(re)]);
        expect(c.profiles).toEqual(['default']);
      }
      expect(await c.status()).toBe('running');
    } finally {
      await c.delete({ force: true });
    }
  }, 120_000);

  test('lxq profile add, remove and assign', async () => {
    const p = t.name('cli');
    await t.host.profiles.create(p, { config: { 'user.tier': 'web' } });
    const name = t.name('cli');
    await t.host.create(name, { image: 'busybox' });
    const lxq = (...args: string[]) => runNode([...lxqArgv(t.dir), ...args]);
    const profilesOf = () => reopenedProfiles(name);
    expect((await lxq('profile', 'add', name, p)).code).toBe(0);
    expect(await profilesOf()).toEqual(['default', p]);
    const again = await lxq('profile', 'add', name, p);
    expect(again.code).not.toBe(0);
    expect(again.stderr).toMatch(new RegExp(`profile "${p}" is already applied to ${name}`));
    expect((await lxq('profile', 'remove', name, 'default')).code).toBe(0);
    expect(await profilesOf()).toEqual([p]);
    const missing = await lxq('profile', 'remove', name, 'default');
    expect(missing.code).not.toBe(0);
    expect(missing.stderr).toMatch(new RegExp(`profile "default" is not applied to ${name}`));
    expect((await lxq('profile', 'assign', name, `${p},default`)).code).toBe(0);
    expect(await profilesOf()).toEqual([p, 'default']);
    expect((await lxq('profile', 'assign', name, '')).code).toBe(0);
    expect(await profilesOf()).toEqual([]);
    await (await t.host.get(name)).delete();
  }, 120_000);

});

describe('profiles of an existing VM (one boot)', () => {
  test('set while stopped: taken at the start; while running: a live key at once, the others at the next start, not refused', async () => {
    const mem = t.name('vmmem');
    const cpu = t.name('vmcpu');
    await t.host.profiles.create(mem, { config: { 'limits.memory': '320MiB' } });
    await t.host.profiles.create(cpu, { config: { 'limits.cpu.allowance': '25ms/100ms', 'limits.cpu': '2' } });
    const vm = (await t.host.create(t.name('vm'), { type: 'vm', image: 'vm/default' })) as VmInstance;
    try {
      await vm.setProfiles(['default', mem]);
      expect(vm.expandedConfig['limits.memory']).toBe('320MiB');
      await vm.start();
      const memory = await vm.qmp.execute('query-memory-size-summary');
      expect(memory['base-memory']).toBe(320 * MiB);
      const pid = (await vm.state()).pid!;
      expect(await updatedEvents(vm.name, 1, () => vm.setProfiles(['default', mem, cpu]))).toBe(1);
      // limits.cpu.allowance is live: QEMU's cpu cgroup has it now.
      const rel = readFileSync(`/proc/${pid}/cgroup`, 'utf8').split('\n').find((l) => l.split(':')[1] === 'cpu')!.split(':')[2];
      expect(readFileSync(`/sys/fs/cgroup/cpu${rel}/cpu.cfs_quota_us`, 'utf8').trim()).toBe('25000');
      // limits.cpu waits for the next start (no CPU hotplug): still one vCPU, and no refusal.
      expect(vm.expandedConfig['limits.cpu']).toBe('2');
      expect(await vm.qmp.execute('query-cpus-fast')).toHaveLength(1);
      // Removing both: the allowance goes at once, the memory stays until the next start.
      await vm.setProfiles(['default']);
      expect(readFileSync(`/sys/fs/cgroup/cpu${rel}/cpu.cfs_quota_us`, 'utf8').trim()).toBe('-1');
      expect((await vm.qmp.execute('query-memory-size-summary'))['base-memory']).toBe(320 * MiB);
      expect([vm.profiles, vm.expandedConfig]).toEqual([['default'], {}]);
      expect(await thrown(vm.setProfiles(['default', t.name('none')]))).toBeInstanceOf(NotFound);
    } finally {
      await vm.delete({ force: true });
    }
  }, 600_000);
});
