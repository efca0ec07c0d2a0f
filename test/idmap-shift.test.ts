/**
 * Roots shifted from one id map to another: the copy of a security.idmap.isolated container (and
 * of its snapshot) gets a fresh range and its trees are shifted into it, a namespaced file
 * capability's root id and POSIX ACLs with them; a raw.idmap change re-shifts a container's root (as LXD) so
 * that its files keep their inside owners; a copy killed midway leaves nothing.
 */
import { spawn, execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import * as path from 'node:path';

import { Host, Instance, InvalidArgument, NotFound } from '../lib';
import { parseRawIdmap } from '../lib/config/options';
import { rootIdRange } from '../lib/drivers/container/host-facts';
import { IDMAP_REGISTRY } from '../lib/drivers/container/idmap-alloc';
import { lxqArgv, runNode, sh, tempHost, TestHost, thrown } from './helpers/host';

let t: TestHost;

beforeAll(async () => {
  t = await tempHost();
});
afterAll(async () => {
  await t?.dispose();
});

type Range = { base: number; size: number };
const rangeOf = (c: Instance): Range => JSON.parse(readFileSync(path.join(t.dir, 'instances', c.name, 'lxq.json'), 'utf8')).idmap;
const rootfs = (c: Instance, snapshot?: string) => path.join(t.dir, 'instances', c.name, ...(snapshot ? ['snapshots', snapshot] : []), 'rootfs');
const overlaps = (a: Range, b: Range) => a.base < b.base + b.size && b.base < a.base + a.size;

/** A v3 (namespaced) security.capability: cap_net_bind_service (10) permitted and effective, for the namespace whose root is host uid `rootid`. */
function v3Cap(rootid: number): string {
  const b = Buffer.alloc(24);
  b.writeUInt32LE(0x03000001, 0); // revision 3, effective
  b.writeUInt32LE(1 << 10, 4); // permitted (low word)
  b.writeUInt32LE(rootid, 20);
  return `0x${b.toString('hex')}`;
}
/** The named user and group entries of a file's ACL (`default`: a directory's default ACL), ids numeric, as getfacl shows them. */
const aclNamed = (file: string, dflt = false) =>
  execFileSync('getfacl', ['--numeric', '--omit-header', '--absolute-names', ...(dflt ? ['--default'] : ['--access']), file], { encoding: 'utf8' })
    .split('\n')
    .filter((l) => /^(user|group):\d+:/.test(l));
const setfacl = (file: string, ...args: string[]) => execFileSync('setfacl', [...args, file]);
const capRoot = (file: string) => Buffer.from(execFileSync('getfattr', ['--only-values', '--absolute-names', '-n', 'security.capability', file])).readUInt32LE(20);

/** CapEff of a process that user 1000 runs from the file with the capability. */
async function capEff(c: Instance): Promise<string> {
  const r = await c.exec(['/bin/busybox-cap', 'grep', 'CapEff', '/proc/self/status'], { user: 1000 });
  return r.stdout.toString().trim();
}

describe('a copy of an isolated container', () => {
  test('gets a fresh range, its root and snapshot shifted into it; both run; owners and a file capability keep working inside', async () => {
    const src = await t.host.create(t.name('isosrc'), { image: 'busybox', config: { 'security.idmap.isolated': true } });
    await src.start();
    expect((await sh(src, 'mkdir -p /home/u && echo x > /home/u/f && chown -R 1000:1001 /home/u && cp /bin/busybox /bin/busybox-cap && echo ok')).out).toBe('ok\n');
    await src.stop({ force: true });
    const srcMap = rangeOf(src);
    // As setcap inside the container writes it: the root id is the container's root on the host.
    execFileSync('setfattr', ['-n', 'security.capability', '-v', v3Cap(srcMap.base), path.join(rootfs(src), 'bin/busybox-cap')]);
    // ACLs as setfacl inside would write them: host ids of the container's range (a named user, a directory's default group).
    setfacl(path.join(rootfs(src), 'home/u/f'), '-m', `u:${srcMap.base + 1000}:rw`);
    setfacl(path.join(rootfs(src), 'home/u'), '-d', '-m', `g:${srcMap.base + 1001}:rx`);
    await src.snapshots.create('s1');
    await src.start();
    expect(await capEff(src)).toBe('CapEff:\t0000000000000400');

    // A copy of the running source, its snapshot with it.
    const copy = await t.host.copy(src.name, t.name('isocp'));
    const map = rangeOf(copy);
    expect([overlaps(map, srcMap), map.size]).toEqual([false, srcMap.size]);
    expect(existsSync(path.join(IDMAP_REGISTRY, `${map.base}.json`))).toBe(true);
    const f = statSync(path.join(rootfs(copy), 'home/u/f'));
    expect([statSync(path.join(rootfs(copy), 'bin')).uid, f.uid, f.gid]).toEqual([map.base, map.base + 1000, map.base + 1001]);
    expect(capRoot(path.join(rootfs(copy), 'bin/busybox-cap'))).toBe(map.base);
    expect(aclNamed(path.join(rootfs(copy), 'home/u/f'))).toEqual([`user:${map.base + 1000}:rw-`]);
    expect(aclNamed(path.join(rootfs(copy), 'home/u'), true)).toEqual([`group:${map.base + 1001}:r-x`]);
    const snapMeta = JSON.parse(readFileSync(path.join(t.dir, 'instances', copy.name, 'snapshots', 's1', 'snapshot.json'), 'utf8'));
    expect(snapMeta.record.idmap).toEqual(map);
    await copy.start();
    expect((await src.status())).toBe('running');
    expect((await sh(copy, 'cat /proc/self/uid_map')).out.trim().split(/\s+/).map(Number)).toEqual([0, map.base, map.size]);
    expect((await sh(copy, 'stat -c %u:%g /home/u/f /bin; cat /home/u/f')).out).toBe('1000:1001\n0:0\nx\n');
    expect(await capEff(copy)).toBe('CapEff:\t0000000000000400');
    // The source is as it was.
    expect(capRoot(path.join(rootfs(src), 'bin/busybox-cap'))).toBe(srcMap.base);
    expect(await capEff(src)).toBe('CapEff:\t0000000000000400');

    // A copy of the snapshot, from the CLI: a range of its own again.
    const fromSnap = t.name('isosnap');
    const cli = await runNode([...lxqArgv(t.dir), 'copy', src.name, fromSnap, '--snapshot', 's1']);
    expect([cli.code, cli.stderr]).toEqual([0, '']);
    const snapCopy = await t.host.get(fromSnap);
    const snapMap = rangeOf(snapCopy);
    expect([overlaps(snapMap, srcMap), overlaps(snapMap, map)]).toEqual([false, false]);
    await snapCopy.start();
    expect((await sh(snapCopy, 'stat -c %u:%g /home/u/f')).out).toBe('1000:1001\n');
    expect(await capEff(snapCopy)).toBe('CapEff:\t0000000000000400');

    // Its id map cannot change on the way; delete gives the ranges back.
    expect(await thrown(t.host.copy(src.name, t.name('no'), { config: { 'security.idmap.isolated': false } }))).toBeInstanceOf(InvalidArgument);
    for (const c of [copy, snapCopy]) await c.delete({ force: true });
    for (const m of [map, snapMap]) expect(existsSync(path.join(IDMAP_REGISTRY, `${m.base}.json`))).toBe(false);
    await src.delete({ force: true });
  }, 300_000);

  test('a Node process killed during the copy leaves no instance; its staging goes at the next Host.open and its range at the next allocation', async () => {
    const src = await t.host.create(t.name('isokill'), { image: 'busybox', config: { 'security.idmap.isolated': true } });
    execFileSync('sh', ['-c', `mkdir -p ${rootfs(src)}/big && for i in $(seq 1 24); do head -c 8M /dev/urandom > ${rootfs(src)}/big/f$i; done`]);
    const target = t.name('half');
    const dir = path.join(t.dir, 'instances', target);
    const script = `
      const { Host } = require(${JSON.stringify(path.resolve('lib'))});
      Host.open({ path: ${JSON.stringify(t.dir)}, images: ${JSON.stringify(t.host.images.dir)} })
        .then((h) => h.copy(${JSON.stringify(src.name)}, ${JSON.stringify(target)}));`;
    const child = spawn(process.execPath, ['-r', path.resolve('test/helpers/ts-register.js'), '-e', script], { stdio: 'ignore', detached: true });
    const exited = new Promise((r) => child.once('exit', r));
    const instances = path.join(t.dir, 'instances');
    const staged = () => readdirSync(instances).filter((n) => n.startsWith('.lxq-tmp-'));
    const allocated = () => readdirSync(IDMAP_REGISTRY).filter((n) => n.endsWith('.json') && JSON.parse(readFileSync(path.join(IDMAP_REGISTRY, n), 'utf8')).dir === dir);
    const deadline = Date.now() + 120_000;
    // Its range is taken and its tree is being written (the whole tree goes into the upper directory of an overlay pool).
    while (!(allocated().length && staged().some((n) => existsSync(path.join(instances, n, 'upper', 'big')) || existsSync(path.join(instances, n, 'rootfs', 'big'))))) {
      if (Date.now() > deadline) throw new Error('the child never started copying');
      await new Promise((r) => setTimeout(r, 20));
    }
    const range = allocated()[0];
    process.kill(-child.pid!, 'SIGKILL');
    await exited;
    await expect(t.host.get(target)).rejects.toBeInstanceOf(NotFound);
    const next = await Host.open({ path: t.dir, images: t.host.images.dir });
    expect(staged()).toEqual([]);
    // The next allocation takes back the range of the dead process's copy.
    const whole = await next.copy(src.name, target);
    expect(existsSync(path.join(IDMAP_REGISTRY, range))).toBe(rangeOf(whole).base === Number(range.replace('.json', '')));
    await whole.delete({ force: true });
    await next.close();
    await src.delete({ force: true });
  }, 300_000);
});

describe('raw.idmap re-shifts the root', () => {
  /** A host id root may map (its /etc/subuid range) far above the ranges lxq hands out. */
  const hostUid = rootIdRange().end - 2000;

  test('a change on a stopped container moves the files of remapped ids so they keep their inside owners; a change while running at the next start', async () => {
    const c = await t.host.create(t.name('rawsh'), { image: 'busybox' });
    await c.start();
    expect((await sh(c, 'mkdir -p /home/u && echo x > /home/u/f && chown -R 1000:1000 /home/u && touch /home/g && chown 0:1000 /home/g && echo ok')).out).toBe('ok\n');
    await c.stop({ force: true });
    const base = statSync(path.join(rootfs(c), 'bin')).uid;
    expect(statSync(path.join(rootfs(c), 'home/u/f')).uid).toBe(base + 1000);
    const [aclFile, aclDir] = [path.join(rootfs(c), 'home/u/f'), path.join(rootfs(c), 'home/u')];
    setfacl(aclFile, '-m', `u:${base + 1000}:r,g:${base + 1000}:rw`);
    setfacl(aclDir, '-d', '-m', `u:${base + 1000}:rwx`);
    // uid 1000 (only) becomes the host uid: the files it owns go with it, gid 1000 stays in the range.
    await c.update({ 'raw.idmap': `uid ${hostUid} 1000` });
    const moved = statSync(path.join(rootfs(c), 'home/u/f'));
    expect([moved.uid, moved.gid, statSync(path.join(rootfs(c), 'home/g')).gid]).toEqual([hostUid, base + 1000, base + 1000]);
    expect([aclNamed(aclFile), aclNamed(aclDir, true)]).toEqual([[`user:${hostUid}:r--`, `group:${base + 1000}:rw-`], [`user:${hostUid}:rwx`]]);
    await c.start();
    expect((await sh(c, 'stat -c %u:%g /home/u/f /home/u /home/g; cat /home/u/f')).out).toBe('1000:1000\n1000:1000\n0:1000\nx\n');
    // Changed while running: at the next start (the root is shifted only while nothing runs in it).
    await c.update({ 'raw.idmap': `both ${hostUid} 1000` });
    expect(statSync(path.join(rootfs(c), 'home/u/f')).gid).toBe(base + 1000);
    await c.restart({ force: true });
    expect(statSync(path.join(rootfs(c), 'home/u/f')).gid).toBe(hostUid);
    expect(aclNamed(aclFile)).toEqual([`user:${hostUid}:r--`, `group:${hostUid}:rw-`]);
    expect((await sh(c, 'stat -c %u:%g /home/u/f /home/g')).out).toBe('1000:1000\n0:1000\n');
    await c.stop({ force: true });
    // Removed: back into the range.
    await c.update({ 'raw.idmap': null });
    const back = statSync(path.join(rootfs(c), 'home/u/f'));
    expect([back.uid, back.gid]).toEqual([base + 1000, base + 1000]);
    expect([aclNamed(aclFile), aclNamed(aclDir, true)]).toEqual([[`user:${base + 1000}:r--`, `group:${base + 1000}:rw-`], [`user:${base + 1000}:rwx`]]);
    await c.start();
    expect((await sh(c, 'stat -c %u:%g /home/u/f /home/g')).out).toBe('1000:1000\n0:1000\n');
    await c.delete({ force: true });
  }, 300_000);
  test("on an overlay pool the image's shared lower layer is seen through the new map: its root-owned files stay root's when raw.idmap moves root", async () => {
    const c = await t.host.create(t.name('rawlow'), { image: 'busybox' });
    try {
      expect(existsSync(path.join(t.dir, 'instances', c.name, 'overlay.json'))).toBe(true); // the default pool is an overlay one
      const base = statSync(path.join(rootfs(c), 'bin')).uid; // /bin is the image's, in the lower layer
      await c.update({ 'raw.idmap': `both ${hostUid} 0` });
      const bin = statSync(path.join(rootfs(c), 'bin'));
      expect([bin.uid, bin.gid]).toEqual([hostUid, hostUid]);
      await c.start();
      expect((await sh(c, 'stat -c %u:%g /bin /etc/passwd; touch /etc/passwd; mkdir /root/new; stat -c %u:%g /root/new')).out).toBe('0:0\n0:0\n0:0\n');
      await c.stop({ force: true });
      // Back: the image's files and the copied-up ones in the range again.
      await c.update({ 'raw.idmap': null });
      expect([statSync(path.join(rootfs(c), 'bin')).uid, statSync(path.join(rootfs(c), 'etc/passwd')).uid, statSync(path.join(rootfs(c), 'root/new')).uid]).toEqual([base, base, base]);
      await c.start();
      expect((await sh(c, 'stat -c %u:%g /bin /etc/passwd /root/new')).out).toBe('0:0\n0:0\n0:0\n');
    } finally {
      await c.delete({ force: true });
    }
  }, 300_000);

  test('a re-shift killed midway is finished into the map it was going to before a later change applies', async () => {
    const c = await t.host.create(t.name('rawkill'), { image: 'busybox' });
    try {
      await c.start();
      expect((await sh(c, 'mkdir -p /home/a /home/b && chown 1000 /home/a /home/b && echo ok')).out).toBe('ok\n');
      await c.stop({ force: true });
      const upper = path.join(t.dir, 'instances', c.name, 'upper'); // the default pool is an overlay one: the container's own files
      const base = statSync(path.join(upper, 'home/a')).uid - 1000;
      // As a process killed while shifting to "uid hostUid 1000" leaves it: the lines it was going to written, /home/a moved, /home/b not yet.
      execFileSync('setfattr', ['-n', 'trusted.lxq.raw_idmap_next', '-v', JSON.stringify(parseRawIdmap(`uid ${hostUid} 1000`)), upper]);
      execFileSync('chown', [String(hostUid), path.join(upper, 'home/a')]);
      await c.update({ 'raw.idmap': `uid ${hostUid + 1000} 1000` });
      expect([statSync(path.join(upper, 'home/a')).uid, statSync(path.join(upper, 'home/b')).uid]).toEqual([hostUid + 1000, hostUid + 1000]);
      expect(() => execFileSync('getfattr', ['-n', 'trusted.lxq.raw_idmap_next', upper], { stdio: 'pipe' })).toThrow();
      await c.start();
      expect((await sh(c, 'stat -c %u /home/a /home/b /bin')).out).toBe('1000\n1000\n0\n');
      expect(base).toBe(statSync(path.join(rootfs(c), 'bin')).uid);
    } finally {
      await c.delete({ force: true });
    }
  }, 300_000);

  test('security.protection.shift: a raw.idmap change is refused, stopped or running, and so is a start that would shift; nothing changes', async () => {
    const c = await t.host.create(t.name('prot'), { image: 'busybox', config: { 'security.protection.shift': 'true' } });
    try {
      await expect(c.update({ 'raw.idmap': `uid ${hostUid} 1000` })).rejects.toThrow(/security\.protection\.shift/);
      expect(c.config['raw.idmap']).toBeUndefined();
      await c.start();
      await expect(c.update({ 'raw.idmap': `uid ${hostUid} 1000` })).rejects.toThrow(InvalidArgument);
      expect(c.config['raw.idmap']).toBeUndefined();
      // Changed while unprotected and running, protected again before the next start: that start refuses.
      await c.update({ 'security.protection.shift': 'false' });
      await c.update({ 'raw.idmap': `uid ${hostUid} 1000` });
      await c.update({ 'security.protection.shift': 'true' });
      await c.stop({ force: true });
      const owner = statSync(path.join(rootfs(c), 'bin')).uid;
      await expect(c.start()).rejects.toThrow(/security\.protection\.shift/);
      expect(await c.status()).toBe('stopped');
      expect(statSync(path.join(rootfs(c), 'bin')).uid).toBe(owner);
      await c.update({ 'security.protection.shift': 'false' });
      await c.start();
      expect((await sh(c, 'stat -c %u /bin')).out).toBe('0\n');
    } finally {
      await c.delete({ force: true });
    }
  }, 300_000);
});
