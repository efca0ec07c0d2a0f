/**
 * Container snapshots on real containers: what the rootfs copy keeps (checked with the host's
 * own tools), restore of a stopped and a running container, events, bad input, and a child Node
 * process killed midway through a snapshot.
 */
import { spawn } from 'node:child_process';
import { existsSync, promises as fs, readdirSync, statSync } from 'node:fs';
import * as path from 'node:path';

import { AlreadyExists, Host, InvalidArgument, NotFound, NotSupported } from '../lib';
import { tempHost, TestHost } from './helpers/host';
import { sh } from './helpers/storage';

let t: TestHost;

beforeAll(async () => {
  t = await tempHost();
  await t.host.images.ensure('busybox');
  // The copy's own semantics are tested on the dir pool, where a snapshot is a copy of the whole tree.
  await t.host.storage.pools.create('dir', { driver: 'dir' });
});
afterAll(async () => {
  await t?.dispose();
});


test('a snapshot keeps ownership, modes, xattrs, capabilities, ACLs, hard links, device nodes and holes; restore brings them back', async () => {
  const c = await t.host.create(t.name('snap'), { image: 'busybox', config: { 'user.k': 'before' }, pool: 'dir' });
  const root = path.join(t.dir, 'instances', c.name, 'rootfs');
  sh(`cd ${root} && mkdir -p data && cd data && echo hi > f && chown 1000005:1000007 f && chmod 4750 f && setcap cap_net_raw+ep f &&
      setfacl -m u:1234:rwx f && setfattr -n user.foo -v bar f && ln f hl && mknod null c 1 3 && mkfifo fifo &&
      truncate -s 64M sparse && printf x | dd of=sparse bs=1 seek=32M conv=notrunc 2>/dev/null`);
  const events: string[] = [];
  c.on('snapshot-created', (e) => events.push(`created ${e.snapshot}`));
  c.on('snapshot-restored', (e) => events.push(`restored ${e.snapshot}`));
  c.on('snapshot-deleted', (e) => events.push(`deleted ${e.snapshot}`));
  const s0 = await c.snapshots.create(undefined, { description: 'first' });
  expect(s0.name).toBe('snap0');
  expect(s0.description).toBe('first');
  expect(s0.record.config['user.k']).toBe('before');
  const snapData = path.join(t.dir, 'instances', c.name, 'snapshots', 'snap0', 'rootfs', 'data');
  const describe = (dir: string) =>
    sh(`cd ${dir} && stat -c '%n %h %u %g %a %F %t:%T' f hl null fifo sparse && getcap f && getfacl -c f && getfattr -d f && du -k sparse | cut -f1`);
  const original = describe(path.join(root, 'data'));
  expect(describe(snapData)).toBe(original);
  expect(original).toContain('cap_net_raw=ep');
  expect(original).toContain('user:1234:rwx');
  expect(original).toContain('user.foo="bar"');
  expect(statSync(path.join(snapData, 'f')).ino).toBe(statSync(path.join(snapData, 'hl')).ino);
  expect(Number(sh(`du -k ${snapData}/sparse | cut -f1`))).toBeLessThan(1024); // holes kept

  // Change files and the record, then restore.
  sh(`cd ${root}/data && rm hl && chmod 600 f && echo changed > f2 && setfacl -b f`);
  await c.update({ 'user.k': 'after' });
  await c.snapshots.restore('snap0');
  expect(describe(path.join(root, 'data'))).toBe(original);
  expect(existsSync(path.join(root, 'data', 'f2'))).toBe(false);
  expect(c.config['user.k']).toBe('before');
  const again = await t.host.get(c.name);
  expect(again.config['user.k']).toBe('before');
  expect(readdirSync(path.join(t.dir, 'instances', c.name)).filter((n) => n.startsWith('.'))).toEqual([]);

  await c.snapshots.rename('snap0', 'base');
  expect((await c.snapshots.list()).map((s) => s.name)).toEqual(['base']);
  expect((await c.snapshots.get('base')).size).toBeGreaterThan(0);
  await c.snapshots.delete('base');
  expect(await c.snapshots.list()).toEqual([]);
  expect(events).toEqual(['created snap0', 'restored snap0', 'deleted base']);
  await c.delete();
});

test('a running container is frozen for the snapshot and runs again after it; restore of a running one ends running', async () => {
  const c = await t.host.create(t.name('run'), { image: 'busybox' });
  await c.start();
  try {
    await c.files.write('/root/a.txt', 'one\n');
    const statuses: string[] = [];
    c.on('status', (e) => statuses.push(e.status));
    await c.snapshots.create('s1');
    expect(await c.status()).toBe('running');
    expect(statuses).toContain('frozen');
    await c.files.write('/root/a.txt', 'two\n');
    await c.files.write('/root/b.txt', 'new\n');
    await c.exec(['chmod', '600', '/bin/busybox']);
    await c.snapshots.restore('s1');
    expect(await c.status()).toBe('running');
    expect((await c.files.read('/root/a.txt')).toString()).toBe('one\n');
    await expect(c.files.read('/root/b.txt')).rejects.toThrow();
    const r = await c.exec(['stat', '-c', '%a', '/bin/busybox']);
    expect(r.stdout.toString().trim()).toBe('755');
  } finally {
    await c.delete({ force: true });
  }
});

test('bad input is refused with a typed error and changes nothing', async () => {
  const c = await t.host.create(t.name('bad'), { image: 'busybox' });
  await c.snapshots.create('keep');
  const dir = path.join(t.dir, 'instances', c.name);
  const before = sh(`cd ${dir} && find . | sort`);
  await expect(c.snapshots.create('a/b')).rejects.toThrow(InvalidArgument);
  await expect(c.snapshots.create('')).rejects.toThrow(InvalidArgument);
  await expect(c.snapshots.create('x'.repeat(64))).rejects.toThrow(InvalidArgument);
  await expect(c.snapshots.create('keep')).rejects.toThrow(AlreadyExists);
  await expect(c.snapshots.create('e', { expiresAt: 'not a date' })).rejects.toThrow(InvalidArgument);
  await expect(c.snapshots.restore('nope')).rejects.toThrow(NotFound);
  await expect(c.snapshots.delete('nope')).rejects.toThrow(NotFound);
  await expect(c.snapshots.rename('keep', 'keep')).rejects.toThrow(AlreadyExists);
  const stateful = await c.snapshots.create('st', { stateful: true }).catch((e) => e);
  expect(stateful).toBeInstanceOf(NotSupported);
  expect(stateful.message).toMatch(/criu/i);
  expect(sh(`cd ${dir} && find . | sort`)).toBe(before);
  await c.delete();
});

test('an expired snapshot is pruned when the snapshots are next touched', async () => {
  const c = await t.host.create(t.name('exp'), { image: 'busybox' });
  await c.snapshots.create('soon', { expiresAt: new Date(Date.now() + 1500) });
  await c.snapshots.create('later', { expiresAt: new Date(Date.now() + 3_600_000) });
  await new Promise((r) => setTimeout(r, 1600));
  expect((await c.snapshots.list()).map((s) => s.name)).toEqual(['later']);
  await c.delete();
});

// On each pool: a dir snapshot copies the whole tree (rootfs/), an overlay one the upper directory (upper/).
const POOLS = [
  { pool: 'dir', kept: 'rootfs' },
  { pool: 'default', kept: 'upper' },
];

test.each(POOLS)('a Node process killed during a snapshot leaves no half snapshot, and the next one clears its leftovers ($pool pool)', async ({ pool, kept }) => {
  const c = await t.host.create(t.name('kill'), { image: 'busybox', pool });
  // A rootfs big enough that the copy takes a while.
  const root = path.join(t.dir, 'instances', c.name, 'rootfs');
  sh(`mkdir -p ${root}/big && for i in $(seq 1 40); do head -c 8M /dev/urandom > ${root}/big/f$i; done`);
  const script = `
    const { Host } = require(${JSON.stringify(path.resolve('lib'))});
    Host.open({ path: ${JSON.stringify(t.dir)}, images: ${JSON.stringify(t.host.images.dir)} })
      .then((h) => h.get(${JSON.stringify(c.name)})).then((i) => i.snapshots.create('half'));`;
  const child = spawn(process.execPath, ['-r', path.resolve('test/helpers/ts-register.js'), '-e', script], { stdio: 'ignore', detached: true });
  const snaps = path.join(t.dir, 'instances', c.name, 'snapshots');
  // Kill it once the copy is under way.
  const deadline = Date.now() + 60_000;
  while (!(existsSync(snaps) && readdirSync(snaps).some((n) => n.startsWith('.lxq-tmp-') && existsSync(path.join(snaps, n, kept))))) {
    if (Date.now() > deadline) throw new Error('the child never started copying');
    await new Promise((r) => setTimeout(r, 20));
  }
  // The whole process group: the Node process and the cp it runs.
  const exited = new Promise((r) => child.once('exit', r));
  process.kill(-child.pid!, 'SIGKILL');
  await exited;
  await new Promise((r) => setTimeout(r, 200));
  expect(readdirSync(snaps).some((n) => n.startsWith('.lxq-tmp-'))).toBe(true); // the leftover is there
  const next = await Host.open({ path: t.dir, images: t.host.images.dir });
  expect(readdirSync(snaps)).toEqual([]); // Host.open cleared it
  const again = await next.get(c.name);
  expect(await again.snapshots.list()).toEqual([]);
  expect(readdirSync(snaps)).toEqual([]);
  await again.snapshots.create('whole');
  expect((await again.snapshots.list()).map((s) => s.name)).toEqual(['whole']);
  await fs.rm(path.join(root, 'big'), { recursive: true });
  await again.delete();
});

test.each(POOLS)('a Node process killed during a restore leaves the container as it was, and the next Host.open clears the staged copy ($pool pool)', async ({ pool, kept }) => {
  const c = await t.host.create(t.name('rkill'), { image: 'busybox', pool });
  const dir = path.join(t.dir, 'instances', c.name);
  const root = path.join(dir, 'rootfs');
  sh(`mkdir -p ${root}/big && for i in $(seq 1 40); do head -c 8M /dev/urandom > ${root}/big/f$i; done`);
  await c.snapshots.create('big');
  sh(`rm -rf ${root}/big && echo after > ${root}/marker`);
  const before = sh(`cd ${root} && find . | sort`);
  const script = `
    const { Host } = require(${JSON.stringify(path.resolve('lib'))});
    Host.open({ path: ${JSON.stringify(t.dir)}, images: ${JSON.stringify(t.host.images.dir)} })
      .then((h) => h.get(${JSON.stringify(c.name)})).then((i) => i.snapshots.restore('big'));`;
  const child = spawn(process.execPath, ['-r', path.resolve('test/helpers/ts-register.js'), '-e', script], { stdio: 'ignore', detached: true });
  const deadline = Date.now() + 60_000;
  while (!readdirSync(dir).some((n) => n.startsWith('.lxq-tmp-') && existsSync(path.join(dir, n, kept, 'big')))) {
    if (Date.now() > deadline) throw new Error('the child never started staging the restore');
    await new Promise((r) => setTimeout(r, 20));
  }
  const exited = new Promise((r) => child.once('exit', r));
  process.kill(-child.pid!, 'SIGKILL'); // the Node process and its cp
  await exited;
  await new Promise((r) => setTimeout(r, 200));
  expect(readdirSync(dir).some((n) => n.startsWith('.lxq-tmp-'))).toBe(true);
  expect(sh(`cd ${root} && find . | sort`)).toBe(before); // not restored, not torn
  await Host.open({ path: t.dir, images: t.host.images.dir });
  expect(readdirSync(dir).filter((n) => n.startsWith('.'))).toEqual([]);
  expect(sh(`cd ${root} && find . | sort`)).toBe(before);
  await c.snapshots.restore('big');
  expect(existsSync(path.join(root, 'marker'))).toBe(false);
  expect(readdirSync(path.join(root, 'big'))).toHaveLength(40);
  await c.delete();
});
