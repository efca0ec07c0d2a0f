/**
 * raw.idmap (LXD's form: "both 1000 1000", "uid 50-60 500-510"): host ids punched into a
 * container's map. A host directory owned by a host uid of root's, bind-mounted (no shift), is
 * owned by the mapped id inside, and what that id writes there is the host uid's on the host.
 */
import { chmodSync, chownSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import { InvalidArgument, PermissionDenied } from '../lib';
import { rootIdRange } from '../lib/drivers/container/host-facts';
import { sh, tempHost, TestHost, thrown } from './helpers/host';

let t: TestHost;
let share: string;
/** A host id root may map (its /etc/subuid range) far above the shared and isolated ranges lxq hands out. */
const hostUid = rootIdRange().end - 1000;

beforeAll(async () => {
  t = await tempHost();
  share = mkdtempSync(path.join(os.tmpdir(), 'lxq-rawidmap-'));
  chmodSync(share, 0o755);
  chownSync(share, hostUid, hostUid);
});
afterAll(async () => {
  await t?.dispose();
  if (share) rmSync(share, { recursive: true, force: true });
});

describe('raw.idmap', () => {
  test('a host uid mapped to 1000: a bind-mounted host directory it owns is 1000\'s inside, and what 1000 writes there is the host uid\'s', async () => {
    const c = await t.host.create(t.name('raw'), {
      image: 'busybox',
      config: { 'raw.idmap': `both ${hostUid} 1000` },
      devices: { share: { type: 'disk', source: share, path: '/mnt/share' } },
    });
    await c.start();
    // The range is split around inside id 1000, which is the host uid.
    const map = (await sh(c, 'cat /proc/self/uid_map')).out.trim().split('\n').map((l) => l.trim().split(/\s+/).map(Number));
    expect(map).toContainEqual([1000, hostUid, 1]);
    expect(map.find((l) => l[0] === 0)![2]).toBe(1000);
    expect((await sh(c, 'stat -c %u:%g /mnt/share')).out.trim()).toBe('1000:1000');
    const w = await c.exec(['sh', '-c', 'echo hi > /mnt/share/from-inside && stat -c %u:%g /mnt/share/from-inside'], { user: 1000 });
    expect([w.exitCode, w.stdout.toString().trim()]).toEqual([0, '1000:1000']);
    const st = statSync(path.join(share, 'from-inside'));
    expect([st.uid, st.gid]).toEqual([hostUid, hostUid]);
    // The files API translates through the same map.
    await c.files.write('/tmp/owned', 'x', { uid: 1000, gid: 1000 });
    expect((await sh(c, 'stat -c %u:%g /tmp/owned')).out.trim()).toBe('1000:1000');
    expect(await c.files.stat('/mnt/share/from-inside')).toMatchObject({ uid: 1000, gid: 1000 });
    await c.delete({ force: true });
  });

  test('bad lines, host ids root may not map, ids inside the container\'s own range and VMs are refused naming the key, and nothing is made', async () => {
    const base = rootIdRange().start;
    const cases: Array<[string, RegExp]> = [
      ['both 1000', /"raw.idmap".*each line reads "both\|uid\|gid HOST\[-END\] INSIDE\[-END\]"/],
      ['user 1000 1000', /"raw.idmap".*each line reads/],
      ['uid 50-60 500-505', /"raw.idmap".*"uid 50-60 500-505": the host range has 11 ids and the inside one 6/],
      ['uid 60-50 500-490', /"raw.idmap".*ends before it starts/],
      ['both 4294967295 1', /"raw.idmap".*is not an id/],
      [`both ${hostUid} 1000\nuid ${hostUid} 2000`, /"raw.idmap".*map the same host ids/],
      [`both ${hostUid} 1000\nuid ${hostUid + 1} 1000`, /"raw.idmap".*map the same ids inside/],
      ['both 1000\u0007 1000', /"raw.idmap"/],
      ['both 7 1000', /"raw.idmap": "both 7 1000": host uids 7-7 are not root's to map: add "root:7:1" to \/etc\/subuid/],
      [`both ${base + 5} 1000`, /"raw.idmap": .*overlap the container's own range/],
    ];
    for (const [value, re] of cases) {
      const name = t.name('bad');
      const e = await thrown(t.host.create(name, { image: 'busybox', config: { 'raw.idmap': value } }));
      expect([value, e]).toEqual([value, expect.any(InvalidArgument)]);
      expect([value, e.message]).toEqual([value, expect.stringMatching(re)]);
      expect((await t.host.list()).map((i) => i.name)).not.toContain(name);
    }
    const vm = await thrown(t.host.create(t.name('vm'), { type: 'vm', image: 'vm/default', config: { 'raw.idmap': 'both 1000 1000' } }));
    expect(vm).toBeInstanceOf(InvalidArgument);
    expect(vm.message).toMatch(/"raw.idmap" applies to container instances only/);
    // A refused update changes nothing either.
    const c = await t.host.create(t.name('upd'), { image: 'busybox' });
    await expect(c.update({ 'raw.idmap': 'both 7 1000' })).rejects.toThrow(/not root's to map/);
    expect(c.config['raw.idmap']).toBeUndefined();
    // As a key that reaches into the host, an archive holding it needs the importer's trust.
    await c.update({ 'raw.idmap': `both ${hostUid} 1000` });
    const file = path.join(t.dir, 'raw.tar');
    await c.export(file);
    const denied = await thrown(t.host.import(file, { name: t.name('imp') }));
    expect(denied).toBeInstanceOf(PermissionDenied);
    expect(denied.message).toMatch(/option raw\.idmap/);
    const trusted = await t.host.import(file, { name: t.name('imp'), trust: 'host-access' });
    expect(trusted.config['raw.idmap']).toBe(`both ${hostUid} 1000`);
    await trusted.delete({ force: true });
    await c.delete({ force: true });
  });
});
