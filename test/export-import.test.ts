/**
 * Export and import on real containers and a stopped VM: the round trip keeps files (with their
 * ownership, modes, xattrs, ACLs, hard links), config and snapshots; a truncated, foreign or
 * escaping tarball is refused with a typed error and leaves the host's tree as it was.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import { AlreadyExists, InvalidArgument, NotFound, PermissionDenied } from '../lib';
import { tempHost, TestHost } from './helpers/host';
import { sh } from './helpers/storage';

let t: TestHost;
let work: string;

beforeAll(async () => {
  t = await tempHost();
  work = mkdtempSync(path.join(os.tmpdir(), 'lxq-export-'));
  await t.host.images.ensure('busybox');
  await t.host.images.ensure('vm/default');
}, 600_000);
afterAll(async () => {
  await t?.dispose();
  rmSync(work, { recursive: true, force: true });
}, 120_000);

const tree = () => execFileSync('find', [path.join(t.dir, 'instances'), '-printf', '%P %s %m %u\\n'], { encoding: 'utf8' }).split('\n').sort().join('\n');

test('export → delete → import of a container gives the same files, config and snapshots', async () => {
  const c = await t.host.create(t.name('exp'), { image: 'busybox', config: { 'user.k': 'kept' } });
  const root = (name: string) => path.join(t.dir, 'instances', name, 'rootfs');
  sh(`cd ${root(c.name)} && mkdir data && cd data && echo hi > f && chown 1000005:1000007 f && chmod 4750 f && setcap cap_net_raw+ep f &&
      setfacl -m u:1234:rwx f && setfattr -n user.foo -v bar f && ln f hl && truncate -s 16M sparse`);
  await c.snapshots.create('s0', { description: 'before' });
  sh(`echo after > ${root(c.name)}/data/g`);
  const describe = (name: string) =>
    sh(`cd ${root(name)}/data && stat -c '%n %h %u %g %a %F %s' f hl g sparse && getcap f && getfacl -c f && getfattr -d f && du -k sparse | cut -f1`);
  const original = describe(c.name);
  const file = path.join(work, 'c.tar.zst');
  await c.start();
  try {
    await c.export(file); // running: frozen for it; its snapshots too (the default)
    expect(await c.status()).toBe('running');
  } finally {
    await c.stop({ force: true });
  }
  expect(readFileSync(file).subarray(0, 4).toString('hex')).toBe('28b52ffd'); // zstd magic
  const name = c.name;
  await c.delete();
  const back = await t.host.import(file);
  expect(back.name).toBe(name);
  expect(describe(name)).toBe(original);
  expect(back.config['user.k']).toBe('kept');
  const snaps = await back.snapshots.list();
  expect(snaps.map((s) => [s.name, s.description])).toEqual([['s0', 'before']]);
  expect(readFileSync(path.join(t.dir, 'instances', name, 'config'), 'utf8')).toContain(root(name));
  await back.start();
  try {
    expect((await back.exec(['cat', '/data/g'])).stdout.toString()).toBe('after\n');
  } finally {
    await back.stop({ force: true });
  }
  await back.snapshots.restore('s0');
  expect(existsSync(path.join(root(name), 'data/g'))).toBe(false);

  // Under another name, and never over an existing one.
  const other = await t.host.import(file, { name: t.name('imp') });
  expect(describe(other.name)).toBe(original);
  // instanceOnly leaves the snapshots out; the old option is refused by name.
  const alone = path.join(work, 'alone.tar.zst');
  await other.export(alone, { instanceOnly: true });
  const single = await t.host.import(alone, { name: t.name('one') });
  expect(await single.snapshots.list()).toEqual([]);
  await expect(other.export(alone, { snapshots: true } as never)).rejects.toThrow(/unknown export option "snapshots"/);
  await single.delete();
  const before = tree();
  await expect(t.host.import(file)).rejects.toBeInstanceOf(AlreadyExists);
  expect(tree()).toBe(before);
}, 300_000);

test('truncated, foreign and escaping tarballs are refused and leave the tree unchanged', async () => {
  const c = await t.host.create(t.name('src'), { image: 'busybox' });
  const good = path.join(work, 'good.tar.zst');
  await c.export(good);
  await c.delete();
  const meta = path.join(work, 'm');
  sh(`mkdir -p ${meta}/instance/rootfs/etc && tar -xf ${good} -C ${meta} lxq-export.json`);
  const before = tree();
  const bad: Record<string, string> = {
    truncated: `head -c ${Math.floor(statSync(good).size / 2)} ${good} > OUT`,
    foreign: `tar -cf OUT -C ${meta}/instance rootfs`,
    lxdBackup: `mkdir -p ${meta}/lxd/backup/container/rootfs && echo 'name: c1' > ${meta}/lxd/backup/index.yaml && tar -cf OUT -C ${meta}/lxd backup`,
    notar: `echo hello > OUT`,
    dotdot: `tar -cf OUT -C ${meta} lxq-export.json instance --transform='s,^instance/rootfs/etc,instance/../../etc,' -P`,
    absolute: `tar -cPf OUT -C ${meta} lxq-export.json /etc/hostname`,
    outside: `tar -cf OUT -C ${meta} lxq-export.json --transform='s,^instance,elsewhere,' instance`,
    symlinkOut: `cd ${meta} && ln -sfn ../../../.. instance/rootfs/up && tar -cf OUT lxq-export.json instance && rm instance/rootfs/up`,
    underSymlink: `cd ${meta} && ln -sfn /etc instance/rootfs/x && mkdir -p y && echo pwn > y/passwd && tar -cf OUT lxq-export.json instance/rootfs/x --transform='s,^y,instance/rootfs/x,' y/passwd && rm -rf instance/rootfs/x y`,
  };
  const WHY: Record<string, RegExp> = {
    truncated: /not a complete lxq export/,
    foreign: /not an lxq export/,
    lxdBackup: /an LXD backup \(lxc export\), not an lxq export/,
    notar: /not a complete lxq export/,
    dotdot: /contains "\.\."/,
    absolute: /absolute path/,
    outside: /outside "instance\/"/,
    symlinkOut: /symlink to .* out of the archive/,
    underSymlink: /under a symlink/,
  };
  for (const [what, cmd] of Object.entries(bad)) {
    const out = path.join(work, `${what}.tar`);
    sh(cmd.replace(/OUT/g, out));
    const refused = await t.host.import(out).then(() => undefined, (e) => e);
    expect([what, refused]).toEqual([what, expect.any(InvalidArgument)]);
    expect([what, refused.message]).toEqual([what, expect.stringMatching(WHY[what])]);
    expect(tree()).toBe(before);
  }
  expect(existsSync('/etc/pwn')).toBe(false);
  await expect(t.host.import(path.join(work, 'none.tar'))).rejects.toBeInstanceOf(NotFound);
  await expect(t.host.import(good, { name: 'bad/name' })).rejects.toBeInstanceOf(InvalidArgument);
  expect(tree()).toBe(before);
}, 120_000);

test('a stopped VM round-trips: its overlay on the same backing image, its config', async () => {
  const vm = await t.host.create(t.name('vme'), { type: 'vm', image: 'vm/default', config: { 'user.k': 'vm' } });
  const disk = (name: string) => path.join(t.dir, 'instances', name, 'disk.qcow2');
  const info = (f: string) => JSON.parse(execFileSync('qemu-img', ['info', '-U', '--output=json', f], { encoding: 'utf8' }));
  const backing = info(disk(vm.name))['full-backing-filename'];
  const file = path.join(work, 'vm.tar.zst');
  await vm.export(file);
  const name = vm.name;
  await vm.delete();
  const back = await t.host.import(file);
  expect(back.type).toBe('vm');
  expect(back.config['user.k']).toBe('vm');
  expect(info(disk(name))['full-backing-filename']).toBe(backing);
}, 120_000);

describe('hostile records: an archive is checked as create checks its input, and host access needs consent', () => {
  let good: string;
  let base: string;
  let goodMeta: { record: Record<string, any> };
  beforeAll(async () => {
    const c = await t.host.create(t.name('rec'), { image: 'busybox' });
    await c.snapshots.create('s0');
    good = path.join(work, 'rec-good.tar.zst');
    await c.export(good);
    await c.delete();
    base = mkdtempSync(path.join(work, 'rec-'));
    sh(`tar -xf ${good} -C ${base}`);
    goodMeta = JSON.parse(readFileSync(path.join(base, 'lxq-export.json'), 'utf8'));
  });

  /** The good export with its record (and optionally its snapshot's record) changed. */
  function hostile(what: string, change: (r: Record<string, any>) => void, snapshotChange?: (r: Record<string, any>) => void): string {
    const meta = structuredClone(goodMeta);
    change(meta.record);
    writeFileSync(path.join(base, 'lxq-export.json'), JSON.stringify(meta));
    const snapFile = path.join(base, 'instance/snapshots/s0/snapshot.json');
    const snapOriginal = readFileSync(snapFile, 'utf8');
    if (snapshotChange) {
      const s = JSON.parse(snapOriginal);
      snapshotChange(s.record);
      writeFileSync(snapFile, JSON.stringify(s));
    }
    const out = path.join(work, `rec-${what}.tar`);
    // "./instance": members named with a leading "./" are the same members (and checked as such).
    sh(`tar -cf ${out} --numeric-owner -C ${base} lxq-export.json ${what.startsWith('dot-') ? './instance' : 'instance'}`);
    writeFileSync(snapFile, snapOriginal);
    return out;
  }

  async function refused(file: string, type: typeof InvalidArgument | typeof PermissionDenied, message: RegExp): Promise<void> {
    const before = tree();
    const err = await t.host.import(file).then(() => undefined, (e) => e);
    expect(err).toBeInstanceOf(type);
    expect(err.message).toMatch(message);
    expect(tree()).toBe(before);
    expect(await t.host.get(goodMeta.record.name).catch((e) => e)).toBeInstanceOf(NotFound);
  }

  test('a liblxc line smuggled through the image metadata, a bad name or image: InvalidArgument before anything is written', async () => {
    const marker = path.join(work, 'pwned-by-initcommand');
    await refused(hostile('initcmd', (r) => (r.imageMeta.initCommand = `/sbin/init\nlxc.hook.pre-start = /bin/touch ${marker}`)), InvalidArgument, /imageMeta\.initCommand: ".*" holds a newline/);
    await refused(hostile('halt', (r) => (r.imageMeta.haltSignal = 'SIGPWR\nlxc.hook.pre-start = /bin/true')), InvalidArgument, /imageMeta\.haltSignal: ".*" holds a newline/);
    await refused(hostile('env', (r) => (r.config['environment.A'] = 'x\nlxc.hook.pre-start = /bin/true')), InvalidArgument, /environment\.A/);
    await refused(hostile('name', (r) => (r.name = '../../etc')), InvalidArgument, /invalid instance name/);
    await refused(hostile('image', (r) => (r.image = '../../../etc')), InvalidArgument, /image must be an image name/);
    await refused(hostile('extra', (r) => (r.hooks = ['x'])), InvalidArgument, /unknown record option "hooks"/);
    expect(existsSync(marker)).toBe(false);
  });

  test('options and devices create would refuse: refused the same way (unknown key, a memory limit of 1 B, a bad device)', async () => {
    await refused(hostile('unknown', (r) => (r.config['limits.cpus'] = '1')), InvalidArgument, /unknown option "limits\.cpus"/);
    await refused(hostile('memory', (r) => (r.config['limits.memory'] = '1B')), InvalidArgument, /limits\.memory.*below the floor/);
    await refused(hostile('device', (r) => (r.devices = { d: { type: 'disk', source: 'relative', path: '/d' } })), InvalidArgument, /device "d".*absolute path/);
    await refused(hostile('snapname', (r) => r, (s) => (s.config['limits.memory'] = '1B')), InvalidArgument, /snapshot "s0" record.*below the floor/);
  });

  test('what reaches into the host is refused with PermissionDenied naming each grant, and accepted with trust', async () => {
    const grants = hostile('grants', (r) => {
      r.config['raw.lxc'] = 'lxc.environment = FROM_RAW=1';
      r.config['security.privileged'] = 'true';
      r.devices = { root: { type: 'disk', source: '/', path: '/host' }, tty: { type: 'unix-char', source: '/dev/tty', path: '/dev/tty9' }, p: { type: 'proxy', listen: 'tcp:127.0.0.1:1', connect: 'tcp:127.0.0.1:80' } };
    });
    const before = tree();
    const err = await t.host.import(grants).then(() => undefined, (e) => e);
    expect(err).toBeInstanceOf(PermissionDenied);
    for (const g of ['option raw.lxc', 'option security.privileged=true', 'device root: disk source /', 'device tty: unix-char', 'device p: proxy listening on the host at tcp:127.0.0.1:1', "trust: 'host-access'"]) expect(err.message).toContain(g);
    expect(tree()).toBe(before);
    // A snapshot's record counts too: a restore would bring it back.
    const inSnapshot = hostile('snap-raw', (r) => r, (s) => (s.config['raw.lxc'] = 'lxc.environment = X=1'));
    await refused(inSnapshot, PermissionDenied, /snapshot s0: option raw\.lxc/);
    await refused(hostile('dot-snap-raw', (r) => r, (s) => (s.config['raw.lxc'] = 'lxc.environment = X=1')), PermissionDenied, /snapshot s0: option raw\.lxc/);
    await expect(t.host.import(grants, { trust: 'anything' as 'host-access' })).rejects.toBeInstanceOf(InvalidArgument);
    const trusted = await t.host.import(inSnapshot, { trust: 'host-access', name: t.name('trusted') });
    expect((await trusted.snapshots.get('s0')).record.config['raw.lxc']).toBe('lxc.environment = X=1');
    await trusted.delete();
  });

  test('the checked records are what lands: a snapshot record is written back as checked', async () => {
    const back = await t.host.import(good, { name: t.name('clean') });
    expect(back.config).toEqual(goodMeta.record.config);
    expect((await back.snapshots.get('s0')).record.imageMeta).toEqual(goodMeta.record.imageMeta);
    await back.delete();
  });

  test("a VM disk backed by a host file (not its image's disk): refused", async () => {
    const vm = await t.host.create(t.name('vmb'), { type: 'vm', image: 'vm/default' });
    const file = path.join(work, 'vm-good.tar.zst');
    await vm.export(file);
    await vm.delete();
    const dir = mkdtempSync(path.join(work, 'vmb-'));
    sh(`tar -xf ${file} -C ${dir} && rm ${dir}/instance/disk.qcow2 && qemu-img create -q -f qcow2 -b /etc/hostname -F raw -u ${dir}/instance/disk.qcow2 1M`);
    const out = path.join(work, 'vm-backed.tar');
    sh(`tar -cf ${out} -C ${dir} lxq-export.json instance`);
    await refused(out, InvalidArgument, /backed by "\/etc\/hostname", not by this host's disk of its image/);
  });
});
