/**
 * A container disk's I/O limits (`limits.read`, `limits.write`, `limits.max`) on a filesystem of
 * a loop device this file makes: the block I/O cgroup rule on that device, read back from the
 * container's cgroup, set at start, changed live without a remount, on hot-plug and removal;
 * direct I/O inside measured against the limit; a source on tmpfs refused naming the device; the
 * root disk's limits on the device under the container's root.
 */
import { execSync } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import { type Instance, InvalidArgument, NotSupported } from '../lib';
import { tempHost, TestHost } from './helpers/host';

let t: TestHost;
let base: string; // the loop image, its mount point, a tmpfs
let loop = '';
let device = ''; // the loop device's major:minor
let c: Instance;
const sh = (s: string) => execSync(s, { encoding: 'utf8' }).trim();
const mnt = () => path.join(base, 'mnt');

/** The container's blkio throttle rules: file (read_bps …) → its lines, from the container's own cgroup on the host. */
async function rules(i: Instance): Promise<Record<string, string>> {
  const pid = (await i.state()).pid;
  const line = readFileSync(`/proc/${pid}/cgroup`, 'utf8')
    .split('\n')
    .find((l) => /^\d+:([^:]*,)?blkio(,[^:]*)?:/.test(l));
  // This project's hosts have the blkio controller on cgroup v1 (a v1 + v2 hybrid): the rules are its throttle files.
  expect(line).toBeDefined();
  const dir = path.join('/sys/fs/cgroup/blkio', line!.split(':')[2]);
  const out: Record<string, string> = {};
  for (const f of ['read_bps', 'write_bps', 'read_iops', 'write_iops']) out[f] = readFileSync(path.join(dir, `blkio.throttle.${f}_device`), 'utf8').trim();
  return out;
}

/** Bytes per second of a dd with direct I/O inside (timed inside from /proc/uptime). */
async function ddRate(i: Instance, args: string, bytes: number): Promise<number> {
  const r = await i.exec(['sh', '-c', `read a _ < /proc/uptime; dd ${args} 2>&1 || exit 9; read b _ < /proc/uptime; echo "took $a $b"`]);
  expect(r.exitCode).toBe(0);
  const m = /took ([\d.]+) ([\d.]+)/.exec(r.stdout.toString())!;
  return bytes / Math.max(0.01, Number(m[2]) - Number(m[1]));
}

/** The mount id of `/data` inside (a remount would change it). */
async function mountId(i: Instance): Promise<string> {
  const r = await i.exec(['sh', '-c', "awk '$5 == \"/data\" { print $1 }' /proc/self/mountinfo"]);
  return r.stdout.toString().trim();
}

beforeAll(async () => {
  t = await tempHost();
  base = mkdtempSync(path.join(os.tmpdir(), 'lxq-disklimits-'));
  chmodSync(base, 0o755);
  sh(`truncate -s 96M ${base}/img && mkfs.ext4 -q ${base}/img`);
  loop = sh(`losetup --find --show ${base}/img`);
  device = sh(`lsblk -dno MAJ:MIN ${loop}`);
  mkdirSync(mnt());
  sh(`mount ${loop} ${mnt()} && chmod 1777 ${mnt()}`);
  // 24 MB to read back, written from the host (not limited).
  sh(`dd if=/dev/urandom of=${mnt()}/big bs=1M count=24 status=none && chmod 644 ${mnt()}/big && sync`);
  c = await t.host.create(t.name('dl'), { image: 'busybox', devices: { data: { type: 'disk', source: mnt(), path: '/data', 'limits.read': '10MB', 'limits.write': '8MB' } } });
  await c.start();
}, 120_000);

afterAll(async () => {
  await t?.dispose();
  if (base) sh(`umount ${base}/tmpfs 2>/dev/null || true; umount ${mnt()} 2>/dev/null || true`);
  if (loop) sh(`losetup -d ${loop} 2>/dev/null || true`);
  if (base) rmSync(base, { recursive: true, force: true });
});

test('the limits are the block I/O cgroup rules on the loop device under the source, from the start', async () => {
  expect(await rules(c)).toEqual({ read_bps: `${device} 10000000`, write_bps: `${device} 8000000`, read_iops: '', write_iops: '' });
});

test('direct I/O inside stays within the limits (reads 10 MB/s, writes 8 MB/s, 20 % tolerance)', async () => {
  const read = await ddRate(c, 'if=/data/big of=/dev/null bs=1M iflag=direct', 24 * 2 ** 20);
  const write = await ddRate(c, 'if=/dev/zero of=/data/w bs=1M count=16 oflag=direct', 16 * 2 ** 20);
  // A loaded machine can only be slower: the limits are upper bounds.
  expect(read).toBeLessThan(10_000_000 * 1.2);
  expect(write).toBeLessThan(8_000_000 * 1.2);
  // Both ran through to the end, on the device the rules name.
  expect(readFileSync(`${mnt()}/w`).length).toBe(16 * 2 ** 20);
}, 120_000);

test('changed live in place (no remount), lifted when removed, limits.max and iops', async () => {
  const before = await mountId(c);
  await c.updateDevice('data', { 'limits.read': '5MB', 'limits.write': null });
  expect(await rules(c)).toEqual({ read_bps: `${device} 5000000`, write_bps: '', read_iops: '', write_iops: '' });
  await c.updateDevice('data', { 'limits.read': null, 'limits.max': '200iops' });
  expect(await rules(c)).toEqual({ read_bps: '', write_bps: '', read_iops: `${device} 200`, write_iops: `${device} 200` });
  expect(await mountId(c)).toBe(before);
  await c.updateDevice('data', { 'limits.max': null });
  expect(await rules(c)).toEqual({ read_bps: '', write_bps: '', read_iops: '', write_iops: '' });
  expect(await mountId(c)).toBe(before);
  // The next start has what the device says now.
  await c.updateDevice('data', { 'limits.write': '3MB' });
  await c.restart({ force: true });
  expect(await rules(c)).toEqual({ read_bps: '', write_bps: `${device} 3000000`, read_iops: '', write_iops: '' });
}, 120_000);

test('a hot-plugged disk brings its rules, and two disks on one device share the average', async () => {
  mkdirSync(`${mnt()}/sub`, { mode: 0o777 });
  await c.addDevice('more', { type: 'disk', source: `${mnt()}/sub`, path: '/more', 'limits.write': '5MB' });
  expect((await rules(c)).write_bps).toBe(`${device} 4000000`); // (3 MB + 5 MB) / 2, as LXD
  await c.removeDevice('more');
  expect((await rules(c)).write_bps).toBe(`${device} 3000000`);
  await c.removeDevice('data');
  expect(await rules(c)).toEqual({ read_bps: '', write_bps: '', read_iops: '', write_iops: '' });
}, 120_000);

test('a source with no block device under it (tmpfs) is refused, naming the device; nothing changes', async () => {
  mkdirSync(`${base}/tmpfs`);
  sh(`mount -t tmpfs -o size=1M,mode=0755 lxq-test ${base}/tmpfs`);
  const name = t.name('tmpfs');
  const err = await t.host.create(name, { image: 'busybox', devices: { scratch: { type: 'disk', source: `${base}/tmpfs`, path: '/s', 'limits.read': '1MB' } } }).catch((e) => e);
  expect(err).toBeInstanceOf(NotSupported);
  expect(err.message).toMatch(/device "scratch": a container disk's limits are block I\/O cgroup rules .* no block device \(tmpfs\)/);
  expect(readdirSync(path.join(t.dir, 'instances'))).not.toContain(name);
  await expect(c.addDevice('scratch', { type: 'disk', source: `${base}/tmpfs`, path: '/s', 'limits.max': '10iops' })).rejects.toThrow(NotSupported);
  expect(c.devices).toEqual({});
  // Without limits the same source is fine; bad units are InvalidArgument.
  await expect(c.addDevice('scratch', { type: 'disk', source: `${base}/tmpfs`, path: '/s', 'limits.read': '10 parsecs' })).rejects.toThrow(InvalidArgument);
  await c.addDevice('scratch', { type: 'disk', source: `${base}/tmpfs`, path: '/s' });
  await c.removeDevice('scratch');
}, 120_000);

test("the root disk's limits go on the block device under the container's root, and with its copies", async () => {
  // The host's directory is on the machine's disk: the instance's root (an overlay's upper layer, or a directory) is there.
  let root = sh(`findmnt -no MAJ:MIN -T ${t.dir}`);
  if (readdirSync(`/sys/dev/block/${root}`).includes('partition')) root = readFileSync(`/sys/dev/block/${root}/../dev`, 'utf8').trim();
  const r = await t.host.create(t.name('root'), { image: 'busybox', devices: { root: { type: 'disk', path: '/', pool: 'default', 'limits.read': '20MB', 'limits.write': '300iops' } } });
  await r.start();
  expect(await rules(r)).toEqual({ read_bps: `${root} 20000000`, write_bps: '', read_iops: '', write_iops: `${root} 300` });
  // A disk hot-plugged on the same device shares the rule with the root, and gives it back.
  mkdirSync(`${base}/onroot`);
  await r.addDevice('side', { type: 'disk', source: `${base}/onroot`, path: '/side', 'limits.read': '40MB' });
  expect((await rules(r)).read_bps).toBe(`${root} 30000000`);
  await r.removeDevice('side');
  expect(await rules(r)).toEqual({ read_bps: `${root} 20000000`, write_bps: '', read_iops: '', write_iops: `${root} 300` });
  await r.stop({ force: true });
  const copy = await t.host.copy(r.name, t.name('rootcopy'));
  await copy.start();
  expect(await rules(copy)).toEqual({ read_bps: `${root} 20000000`, write_bps: '', read_iops: '', write_iops: `${root} 300` });
  await copy.delete({ force: true });
  await r.delete({ force: true });
  // Bad units are InvalidArgument, a VM's root disk limits NotSupported; nothing is made.
  const bad = t.name('rootbad');
  await expect(t.host.create(bad, { image: 'busybox', devices: { root: { type: 'disk', path: '/', pool: 'default', 'limits.max': 'fast' } } })).rejects.toThrow(InvalidArgument);
  await expect(t.host.create(bad, { type: 'vm', image: 'vm/default', devices: { root: { type: 'disk', path: '/', pool: 'default', 'limits.max': '10MB' } } })).rejects.toThrow(NotSupported);
  expect(readdirSync(path.join(t.dir, 'instances'))).not.toContain(bad);
}, 180_000);
