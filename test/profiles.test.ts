/**
 * Profiles (host.profiles) on real containers: expansion order, a change reaching a running
 * container live and a stopped one at its start, a change made by another process, bad input.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import * as path from 'node:path';
import { promisify } from 'node:util';

import { AlreadyExists, Busy, InvalidArgument, LifecycleEvent, NotFound, ProfileEvent } from '../lib';
import { hostPerFile, lxqArgv, SHARED_IMAGES, tempHost } from './helpers/host';
import { lxdPerFile } from './helpers/lxd';

const MiB = 2 ** 20;
const t = hostPerFile();

/** Resolves once `check` holds for an event `collected` has seen (events arrive asynchronously). */
async function eventually<T>(collected: T[], check: (e: T) => boolean): Promise<T> {
  for (;;) {
    const found = collected.find(check);
    if (found) return found;
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe('profiles', () => {
  test('default exists, is empty, and is every new instance’s unless told otherwise', async () => {
    const d = await t.host.profiles.get('default');
    expect(d).toMatchObject({ name: 'default', config: {}, devices: {} });
    expect((await t.host.profiles.list()).map((p) => p.name)[0]).toBe('default');
    const c = await t.host.create(t.name('dflt'), { image: 'busybox' });
    expect(c.profiles).toEqual(['default']);
    expect((await t.host.profiles.get('default')).usedBy).toContain(c.name);
    await c.delete();
  });

  test('expansion: the profiles in order, then the instance’s own; state() reports it; exec sees the environment', async () => {
    const p1 = t.name('p1');
    const p2 = t.name('p2');
    await t.host.profiles.create(p1, { config: { 'limits.memory': '96MiB', 'environment.WHO': 'p1', 'user.a': 'p1', 'user.b': 'p1' }, description: 'first' });
    const shared = mkdtempSync(path.join(t.dir, 'shared-'));
    await t.host.profiles.create(p2, { config: { 'environment.WHO': 'p2', 'user.a': 'p2' }, devices: { tmp: { type: 'disk', source: shared, path: '/mnt/tmp' } } });
    const c = await t.host.create(t.name('exp'), { image: 'busybox', profiles: ['default', p1, p2], config: { 'user.a': 'own' } });
    expect(c.config).toEqual({ 'user.a': 'own' });
    expect(c.expandedConfig).toEqual({ 'limits.memory': '96MiB', 'environment.WHO': 'p2', 'user.a': 'own', 'user.b': 'p1' });
    expect(c.expandedDevices.tmp).toMatchObject({ type: 'disk', source: shared, path: '/mnt/tmp' });
    await c.start();
    try {
      const s = await c.state();
      expect(s.profiles).toEqual(['default', p1, p2]);
      expect(s.expandedConfig['environment.WHO']).toBe('p2');
      expect(s.devices.map((d) => d.name)).toContain('tmp');
      expect(s.memory.limitBytes).toBe(96 * MiB);
      expect((await c.exec(['sh', '-c', 'echo $WHO; test -d /mnt/tmp && echo mounted'])).stdout.toString()).toBe('p2\nmounted\n');
      // Reopened by another Host object (another process would do the same): the same expansion.
      const again = await (await import('../lib')).Host.open({ path: t.dir, images: SHARED_IMAGES });
      expect((await again.get(c.name)).expandedConfig).toEqual(c.expandedConfig);
      await again.close();
    } finally {
      await c.delete({ force: true });
    }
  });

  test('a change reaches a running container live (its cgroup) and a stopped one at its start, one instance-updated each', async () => {
    const p = t.name('mem');
    await t.host.profiles.create(p, { config: { 'limits.memory': '80MiB' } });
    const running = await t.host.create(t.name('run'), { image: 'busybox', profiles: [p] });
    const stopped = await t.host.create(t.name('stop'), { image: 'busybox', profiles: [p] });
    const events: LifecycleEvent[] = [];
    const profileEvents: ProfileEvent[] = [];
    const onEvent = (e: LifecycleEvent) => events.push(e);
    const onProfile = (e: ProfileEvent) => profileEvents.push(e);
    t.host.on('lifecycle', onEvent);
    t.host.on('profile', onProfile);
    try {
      await running.start();
      expect((await running.state()).memory.limitBytes).toBe(80 * MiB);
      const updated = await t.host.profiles.update(p, { config: { 'limits.memory': '112MiB' } });
      expect(updated.usedBy.sort()).toEqual([running.name, stopped.name].sort());
      expect((await running.state()).memory.limitBytes).toBe(112 * MiB);
      expect(running.config).toEqual({});
      await stopped.start();
      expect((await stopped.state()).memory.limitBytes).toBe(112 * MiB);
      expect(events.filter((e) => e.action === 'instance-updated').map((e) => e.name).sort()).toEqual([running.name, stopped.name].sort());
      expect(profileEvents).toEqual([expect.objectContaining({ action: 'profile-updated', name: p, requestor: 'local' })]);
      // Removing the key: the running container's limit goes with it.
      await t.host.profiles.update(p, { config: { 'limits.memory': null } });
      expect((await running.state()).memory.limitBytes).toBeNull();
    } finally {
      t.host.off('lifecycle', onEvent);
      t.host.off('profile', onProfile);
      await running.delete({ force: true });
      await stopped.delete({ force: true });
    }
  }, 120_000);

  test('another process changes a profile: this one sees the events and the effect', async () => {
    const p = t.name('xproc');
    await t.host.profiles.create(p, { config: { 'limits.memory': '72MiB' } });
    const c = await t.host.create(t.name('xp'), { image: 'busybox', profiles: ['default', p] });
    const events: LifecycleEvent[] = [];
    const profileEvents: ProfileEvent[] = [];
    const onEvent = (e: LifecycleEvent) => events.push(e);
    const onProfile = (e: ProfileEvent) => profileEvents.push(e);
    t.host.on('lifecycle', onEvent);
    t.host.on('profile', onProfile);
    await t.host.ready();
    try {
      await c.start();
      const [node, ...args] = [process.execPath, ...lxqArgv(t.dir), 'profile', 'set', p, 'limits.memory=104MiB'];
      await promisify(execFile)(node, args, { cwd: path.join(__dirname, '..') });
      expect(await eventually(profileEvents, (e) => e.action === 'profile-updated')).toMatchObject({ name: p, requestor: 'external' });
      expect(await eventually(events, (e) => e.action === 'instance-updated' && e.name === c.name)).toMatchObject({ requestor: 'external' });
      expect((await c.state()).memory.limitBytes).toBe(104 * MiB);
      expect(c.expandedConfig['limits.memory']).toBe('104MiB');
    } finally {
      t.host.off('lifecycle', onEvent);
      t.host.off('profile', onProfile);
      await c.delete({ force: true });
    }
  }, 120_000);

  test('rename follows into the instances; delete is Busy while used; events for each', async () => {
    const p = t.name('ren');
    const q = t.name('ren2');
    await t.host.profiles.create(p, { config: { 'user.k': 'v' } });
    const c = await t.host.create(t.name('rn'), { image: 'busybox', profiles: ['default', p] });
    const profileEvents: ProfileEvent[] = [];
    const onProfile = (e: ProfileEvent) => profileEvents.push(e);
    t.host.on('profile', onProfile);
    try {
      await t.host.profiles.rename(p, q);
      expect(c.profiles).toEqual(['default', q]);
      expect((await t.host.get(c.name)).expandedConfig['user.k']).toBe('v');
      await expect(t.host.profiles.get(p)).rejects.toThrow(NotFound);
      const busy = await t.host.profiles.delete(q).catch((e) => e);
      expect(busy).toBeInstanceOf(Busy);
      expect(busy.users).toEqual([c.name]);
      await c.delete();
      await t.host.profiles.delete(q);
      expect(profileEvents.map((e) => [e.action, e.name, e.previous])).toEqual([
        ['profile-renamed', q, p],
        ['profile-deleted', q, undefined],
      ]);
    } finally {
      t.host.off('profile', onProfile);
      await c.delete({ force: true }).catch(() => undefined);
    }
  });

  test('bad input: typed errors naming what is wrong, nothing changed', async () => {
    const p = t.name('bad');
    await t.host.profiles.create(p, { config: { 'limits.memory': '90MiB' }, devices: { data: { type: 'disk', source: '/tmp', path: '/data' } } });
    await expect(t.host.profiles.create(p)).rejects.toThrow(AlreadyExists);
    await expect(t.host.profiles.create('default')).rejects.toThrow(AlreadyExists);
    for (const bad of ['', 'a/b', '.', '..', 'x\ny']) await expect(t.host.profiles.create(bad)).rejects.toThrow(InvalidArgument);
    await expect(t.host.profiles.create(t.name('k'), { config: { 'limits.memroy': '1GiB' } as never })).rejects.toThrow(/limits\.memroy/);
    await expect(t.host.profiles.delete('default')).rejects.toThrow(/default profile cannot be deleted/);
    await expect(t.host.profiles.rename('default', t.name('x'))).rejects.toThrow(/default profile cannot be renamed/);
    await expect(t.host.profiles.update(t.name('none'), { config: {} })).rejects.toThrow(NotFound);

    const missing = t.name('missing');
    const name = t.name('nop');
    await expect(t.host.create(name, { image: 'busybox', profiles: [missing] })).rejects.toThrow(new RegExp(`no profile named "${missing}"`));
    await expect(t.host.get(name)).rejects.toThrow(NotFound);
    // A device of the profile's name with another type.
    await expect(t.host.create(name, { image: 'busybox', profiles: [p], devices: { data: { type: 'unix-char', source: '/dev/null', path: '/dev/data' } } })).rejects.toThrow(/device "data".*unix-char.*disk/);
    // A VM-only key in a profile: fine on the profile, refused for a container using it.
    const vmOnly = t.name('vmonly');
    await t.host.profiles.create(vmOnly, { config: { 'raw.qemu': '-no-reboot' } });
    await expect(t.host.create(name, { image: 'busybox', profiles: [vmOnly] })).rejects.toThrow(/raw\.qemu/);
    await expect(t.host.get(name)).rejects.toThrow(NotFound);

    const c = await t.host.create(name, { image: 'busybox', profiles: [p] });
    await expect(t.host.profiles.update(p, { config: { 'raw.qemu': '-no-reboot' } })).rejects.toThrow(new RegExp(`raw\\.qemu.*${c.name}|${c.name}.*raw\\.qemu`));
    await expect(t.host.profiles.update(p, { config: { 'security.privileged': true } })).rejects.toThrow(/security\.privileged/);
    await expect(c.addDevice('data', { type: 'unix-char', source: '/dev/null', path: '/dev/data' })).rejects.toThrow(InvalidArgument);
    expect((await t.host.profiles.get(p)).config).toEqual({ 'limits.memory': '90MiB' });
    expect(c.expandedConfig).toEqual({ 'limits.memory': '90MiB' });
    await expect(t.host.profiles.delete(p)).rejects.toThrow(Busy);
    await c.delete();
  });

  test('copy keeps the profiles; an export names them and an import needs them here (as LXD), nothing made otherwise', async () => {
    const p = t.name('carry');
    await t.host.profiles.create(p, { config: { 'user.from': 'profile', 'limits.memory': '88MiB' } });
    const c = await t.host.create(t.name('src'), { image: 'busybox', profiles: ['default', p] });
    const other = await tempHost();
    try {
      const copy = await t.host.copy(c.name, t.name('cp'));
      expect(copy.profiles).toEqual(['default', p]);
      expect(copy.expandedConfig['user.from']).toBe('profile');
      const file = path.join(t.dir, 'carry.tar.zst');
      await c.export(file);
      const missing = await other.host.import(file).catch((e) => e);
      expect(missing).toBeInstanceOf(NotFound);
      expect(missing.message).toContain(`"${p}"`);
      expect(await other.host.list()).toEqual([]);
      await other.host.profiles.create(p, { config: { 'user.from': 'there' } });
      const imported = await other.host.import(file);
      expect(imported.profiles).toEqual(['default', p]);
      expect(imported.expandedConfig).toEqual({ 'user.from': 'there' });
      await imported.start();
      expect((await imported.state()).memory.limitBytes).toBeNull();
    } finally {
      await other.dispose();
      await c.delete({ force: true });
    }
  }, 120_000);
});

describe('profiles on an LXD server', () => {
  const POOL = 'lxq-pf';
  const PROFILE = 'lxq-pf';
  const ALIAS = 'lxq-pf-busybox';
  const server = lxdPerFile('lxq-lxd-pf-', { pool: POOL, profile: PROFILE, alias: ALIAS });

  test('the same interface over /1.0/profiles: create, expansion, a live change, rename, Busy, bad input, an instance\'s own list', async () => {
    const p = t.name('lxdp').replace(/[^a-zA-Z0-9-]/g, '-');
    await server.remote.profiles.create(p, { config: { 'limits.memory': '200MiB', 'user.k': 'v' }, description: 'from lxq' });
    expect((await server.remote.profiles.list()).map((x) => x.name)).toEqual(expect.arrayContaining(['default', PROFILE, p]));
    const name = t.name('rc');
    server.made.push(name);
    // busybox's init halts on SIGUSR1 (LXD sends SIGPWR unless told).
    const c = await server.remote.create(name, { image: ALIAS, profiles: [PROFILE, p], config: { 'raw.lxc': 'lxc.signal.halt = SIGUSR1' } });
    expect(c.profiles).toEqual([PROFILE, p]);
    expect(c.expandedConfig).toMatchObject({ 'limits.memory': '200MiB', 'user.k': 'v' });
    await c.start();
    expect((await c.state()).memory.limitBytes).toBe(200 * MiB);
    await server.remote.profiles.update(p, { config: { 'limits.memory': '232MiB', 'user.k': null } });
    expect((await c.state()).memory.limitBytes).toBe(232 * MiB);
    expect((await c.state()).expandedConfig['user.k']).toBeUndefined();
    expect((await server.remote.profiles.get(p)).usedBy).toEqual([name]);
    await expect(server.remote.profiles.delete(p)).rejects.toThrow(/in use|used/i);
    await expect(server.remote.profiles.create(p)).rejects.toThrow(AlreadyExists);
    await expect(server.remote.profiles.update(p, { config: { 'limits.memroy': '1GiB' } as never })).rejects.toThrow(/limits\.memroy/);
    await expect(server.remote.profiles.rename('default', 'x')).rejects.toThrow(InvalidArgument);
    await expect(server.remote.profiles.get(t.name('none').replace(/[^a-zA-Z0-9-]/g, '-'))).rejects.toThrow(NotFound);
    // The instance's own list (LXD's lxc profile remove/add): a PUT of profiles, applied by the server.
    await c.setProfiles([PROFILE]);
    expect([c.profiles, c.expandedConfig['limits.memory']]).toEqual([[PROFILE], undefined]);
    await expect(c.setProfiles([PROFILE, 'lxq-no-such-profile'])).rejects.toThrow(NotFound);
    await c.setProfiles([PROFILE, p]);
    expect([c.profiles, c.expandedConfig['limits.memory'], (await c.state()).memory.limitBytes]).toEqual([[PROFILE, p], '232MiB', 232 * MiB]);
    await c.stop({ force: true });
    await c.delete();
    const q = `${p}-2`;
    await server.remote.profiles.rename(p, q);
    await expect(server.remote.profiles.get(p)).rejects.toThrow(NotFound);
    await server.remote.profiles.delete(q);
  }, 300_000);
});
