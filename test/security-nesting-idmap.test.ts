/**
 * security.idmap.isolated/base/size (a container's own id range, allocated host-wide, never
 * overlapping) and security.nesting (a container that runs containers: an unprivileged busybox
 * container started with Debian's lxc-start inside debian/12, from a derived image with Debian's
 * lxc, built here through the image store's packages and cached in the shared store).
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import * as path from 'node:path';

import { Host, Instance, InvalidArgument } from '../lib';
import { IDMAP_REGISTRY } from '../lib/drivers/container/idmap-alloc';
import { sh, SHARED_IMAGES, tempHost, TestHost, thrown } from './helpers/host';

let t: TestHost;

beforeAll(async () => {
  t = await tempHost();
});
afterAll(async () => {
  await t?.dispose();
});

/** The container's uid_map as seen inside: [inside, host, count]. */
async function uidMap(c: Instance): Promise<number[]> {
  return (await sh(c, 'cat /proc/self/uid_map')).out.trim().split(/\s+/).map(Number);
}

describe('security.idmap.*', () => {
  test('isolated containers get ranges of their own, overlapping neither each other nor the shared one, even when made at once by two hosts; delete gives them back', async () => {
    const other = await Host.open({ path: t.dir, images: SHARED_IMAGES });
    const shared = await t.host.create(t.name('shared'), { image: 'busybox' });
    const made = await Promise.all([
      t.host.create(t.name('iso'), { image: 'busybox', config: { 'security.idmap.isolated': true } }),
      other.create(t.name('iso'), { image: 'busybox', config: { 'security.idmap.isolated': true } }),
      t.host.create(t.name('iso'), { image: 'busybox', config: { 'security.idmap.isolated': 'true', 'security.idmap.size': 131072 } }),
    ]);
    const maps: number[][] = [];
    for (const c of [shared, ...made]) {
      await c.start();
      maps.push(await uidMap(c));
      // The root's files belong to the container's root on the host.
      expect(statSync(path.join(t.dir, 'instances', c.name, 'rootfs', 'bin')).uid).toBe(maps[maps.length - 1][1]);
      // And its init runs as that id on the host.
      const pid = (await c.state()).pid!;
      expect(readFileSync(`/proc/${pid}/status`, 'utf8')).toMatch(new RegExp(`\\nUid:\\s+${maps[maps.length - 1][1]}\\s`));
    }
    expect(maps[3][2]).toBe(131072);
    for (let i = 0; i < maps.length; i++) {
      for (let j = i + 1; j < maps.length; j++) {
        const [a, b] = [maps[i], maps[j]];
        expect([a, b, a[1] < b[1] + b[2] && b[1] < a[1] + a[2]]).toEqual([a, b, false]);
      }
    }
    for (const c of made) expect(existsSync(path.join(IDMAP_REGISTRY, `${(await uidMap(c))[1]}.json`))).toBe(true);
    for (const c of made) await c.delete({ force: true });
    for (const m of maps.slice(1)) expect(existsSync(path.join(IDMAP_REGISTRY, `${m[1]}.json`))).toBe(false);
    await shared.delete({ force: true });
    await other.close();
  });

  test('security.idmap.base places the range; a base in use, outside root\'s ids, or with privileged is refused naming the key, and nothing is made', async () => {
    const first = await t.host.create(t.name('iso'), { image: 'busybox', config: { 'security.idmap.isolated': true } });
    const taken = JSON.parse(readFileSync(path.join(t.dir, 'instances', first.name, 'lxq.json'), 'utf8')).idmap.base as number;
    // A free base well above the ones handed out.
    const base = taken + 40 * 65536;
    const placed = await t.host.create(t.name('base'), { image: 'busybox', config: { 'security.idmap.isolated': true, 'security.idmap.base': base } });
    await placed.start();
    expect(await uidMap(placed)).toEqual([0, base, 65536]);
    const cases: Array<[Record<string, unknown>, RegExp, unknown]> = [
      [{ 'security.idmap.isolated': true, 'security.idmap.base': taken + 100 }, /"security.idmap.base": .* overlaps ids in use/, InvalidArgument],
      [{ 'security.idmap.isolated': true, 'security.idmap.base': 5 }, /"security.idmap.base": .* outside root's subordinate ids/, InvalidArgument],
      [{ 'security.idmap.isolated': true, 'security.privileged': true }, /"security.idmap.isolated" cannot be set on a privileged container/, InvalidArgument],
      [{ 'security.idmap.base': base + 65536 * 4 }, /"security.idmap.base" needs "security.idmap.isolated"/, InvalidArgument],
      [{ 'security.idmap.isolated': true, 'security.idmap.size': 1000 }, /"security.idmap.size".*at least 65536/, InvalidArgument],
    ];
    for (const [config, message, type] of cases) {
      const name = t.name('bad');
      const err = await thrown(t.host.create(name, { image: 'busybox', config: config as never }));
      expect([err.constructor, err.message]).toEqual([type, expect.stringMatching(message)]);
      expect((await t.host.list()).map((i) => i.name)).not.toContain(name);
    }
    // Fixed at create; a copy keeping its security.idmap.base would overlap it (test/idmap-shift copies).
    expect(await thrown(placed.update({ 'security.idmap.isolated': false }))).toBeInstanceOf(InvalidArgument);
    const copied = await thrown(t.host.copy(placed.name, t.name('copy')));
    expect([copied.constructor, copied.message]).toEqual([InvalidArgument, expect.stringMatching(/"security.idmap.base": .* overlaps ids in use/)]);
    await placed.delete({ force: true });
    await first.delete({ force: true });
  });

  test('an import of an isolated container (beside its source) gets a fresh range; its root and snapshot are shifted into it, ownership kept inside', async () => {
    const src = await t.host.create(t.name('isoexp'), { image: 'busybox', config: { 'security.idmap.isolated': true } });
    try {
      await src.start();
      expect((await sh(src, 'mkdir -p /home/u && echo x > /home/u/f && chown -R 1000:1001 /home/u && echo ok')).out).toBe('ok\n');
      await src.stop({ force: true });
      await src.snapshots.create('s1');
      const file = path.join(t.dir, 'iso.tar');
      await src.export(file);
      const srcMap = JSON.parse(readFileSync(path.join(t.dir, 'instances', src.name, 'lxq.json'), 'utf8')).idmap as { base: number; size: number };
      const imp = await t.host.import(file, { name: t.name('isoimp') });
      const impMap = JSON.parse(readFileSync(path.join(t.dir, 'instances', imp.name, 'lxq.json'), 'utf8')).idmap as { base: number; size: number };
      expect(impMap.base + impMap.size <= srcMap.base || srcMap.base + srcMap.size <= impMap.base).toBe(true);
      expect(existsSync(path.join(IDMAP_REGISTRY, `${impMap.base}.json`))).toBe(true);
      // On the host, the files are in the new range; the snapshot's record names it too.
      const rootfs = path.join(t.dir, 'instances', imp.name, 'rootfs');
      expect([statSync(path.join(rootfs, 'bin')).uid, statSync(path.join(rootfs, 'home/u/f')).uid, statSync(path.join(rootfs, 'home/u/f')).gid]).toEqual([impMap.base, impMap.base + 1000, impMap.base + 1001]);
      const snapMeta = JSON.parse(readFileSync(path.join(t.dir, 'instances', imp.name, 'snapshots', 's1', 'snapshot.json'), 'utf8'));
      expect(snapMeta.record.idmap).toEqual(impMap);
      expect(statSync(path.join(t.dir, 'instances', imp.name, 'snapshots', 's1', 'rootfs', 'home/u/f')).uid).toBe(impMap.base + 1000);
      await imp.start();
      expect(await uidMap(imp)).toEqual([0, impMap.base, impMap.size]);
      expect((await sh(imp, 'stat -c %u:%g /home/u/f /bin; cat /home/u/f')).out).toBe('1000:1001\n0:0\nx\n');
      await imp.delete({ force: true });
      expect(existsSync(path.join(IDMAP_REGISTRY, `${impMap.base}.json`))).toBe(false);
    } finally {
      await src.delete({ force: true });
    }
  }, 240_000);
});

describe('security.nesting', () => {
  const image = 'lxq-test/debian-12-lxc';
  const inner = [
    'echo root:10000:50000 > /etc/subuid && echo root:10000:50000 > /etc/subgid',
    'printf "lxc.include = /usr/share/lxc/config/userns.conf\\nlxc.idmap = u 0 10000 50000\\nlxc.idmap = g 0 10000 50000\\nlxc.net.0.type = empty\\n" > /etc/lxc/nested.conf',
    'lxc-create -n inner -t busybox -f /etc/lxc/nested.conf >/dev/null 2>&1',
    'lxc-start -n inner -o /tmp/inner.log',
    'lxc-attach -n inner -- sh -c "cat /proc/self/uid_map; echo nested-ok"',
  ].join(' && ');

  beforeAll(async () => {
    // Cached in the shared store after the first build (minutes: Debian's lxc from the archive).
    await t.host.images.build(image, { from: 'debian/12', packages: ['lxc', 'busybox', 'uidmap'] });
  }, 1_800_000);

  test.each([
    ['true', 0, 'runs'],
    ['false', 1, 'cannot mount its proc'],
  ])('security.nesting=%s: an unprivileged busybox container started with lxc-start inside debian/12 %s', async (nesting, failing) => {
    const c = await t.host.create(t.name('nest'), { image, config: { 'security.nesting': nesting } });
    try {
      await c.start({ wait: { for: 'systemd', timeout: 300_000 } });
      const r = await sh(c, inner);
      if (failing) {
        expect(r.code).not.toBe(0);
        expect((await sh(c, 'cat /tmp/inner.log')).out).toMatch(/Failed to mount "proc"/);
      } else {
        expect(r).toMatchObject({ code: 0, out: expect.stringMatching(/^\s*0\s+10000\s+50000\n(.|\n)*nested-ok\n$/) });
      }
    } finally {
      await c.delete({ force: true });
    }
  }, 600_000);
});
