/**
 * Export and import of custom volumes (LXD's `lxc storage volume export|import`): a filesystem
 * volume with two snapshots exported from a dir pool and imported onto a btrfs pool (files,
 * owners, hard links, symlinks, user xattrs and each snapshot's data as they were), `volumeOnly`,
 * a block volume's disk byte for byte, the CLI; hostile archives built here (python's tarfile)
 * each refused with InvalidArgument (AlreadyExists for a taken name) naming what is wrong, the
 * pool's volumes directory unchanged; set-id bits and file capabilities of an accepted archive
 * dropped.
 */
import { execFileSync } from 'node:child_process';
import { chmodSync, chownSync, linkSync, mkdirSync, readFileSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';

import { AlreadyExists, InvalidArgument, NotFound } from '../lib';
import { hostWithBtrfsPool, sh } from './helpers/storage';
import { lxqArgv, runNode, thrown } from './helpers/host';

const { t, btrfs } = hostWithBtrfsPool('vb');
const dataOf = async (pool: string, volume: string) => (await t.host.storage.volumeResolver.resolve(pool, volume)).path;
const volumesDir = (pool: string) => path.join(t.dir, 'storage-pools', pool, 'volumes');
/** Every entry below a pool's volumes directory (what a refused import must leave as it was). */
const tree = (pool: string) => sh(`find '${volumesDir(pool)}' 2>/dev/null | sort || true`);

/** What a filesystem volume's tree holds, as text: names, kinds, owners, modes, link targets, contents, xattrs. */
function describe(root: string): string {
  return sh(`cd '${root}' && find . -printf '%p %y %u:%g %m %l\\n' | sort && find . -type f -exec md5sum {} + | sort && getfattr -R -d -m '^user\\.' . 2>/dev/null | grep -v '^#' | sort`);
}

test('a filesystem volume with snapshots: exported from a dir pool, imported onto a btrfs pool as it was; volumeOnly leaves the snapshots out', async () => {
  const volumes = t.host.storage.pool('default').volumes;
  const name = t.name('fs');
  await volumes.create(name, { description: 'data', config: { 'security.shared': 'true' } });
  const data = await dataOf('default', name);
  writeFileSync(path.join(data, 'one'), 'first\n');
  await volumes.snapshot(name, 's1');
  mkdirSync(path.join(data, 'dir'));
  writeFileSync(path.join(data, 'dir', 'two'), 'second\n');
  chownSync(path.join(data, 'dir'), 1000, 1000);
  chmodSync(path.join(data, 'dir', 'two'), 0o640);
  linkSync(path.join(data, 'dir', 'two'), path.join(data, 'hard'));
  symlinkSync('/etc/hostname', path.join(data, 'abs-link'));
  symlinkSync('dir/two', path.join(data, 'rel-link'));
  sh(`setfattr -n user.note -v kept '${path.join(data, 'one')}'`);
  await volumes.snapshot(name, 's2');
  writeFileSync(path.join(data, 'one'), 'changed\n');

  const file = path.join(t.dir, 'fs.tar.zst');
  await volumes.export(name, file);
  const members = sh(`tar --list --file '${file}'`).split('\n').filter(Boolean);
  expect(members[0]).toBe('backup/index.yaml');
  expect(members).toEqual(expect.arrayContaining(['backup/volume/', 'backup/volume/one', 'backup/volume-snapshots/s1/one', 'backup/volume-snapshots/s2/dir/two']));

  const imported = await t.host.storage.pool(btrfs).volumes.import(file);
  expect(imported).toMatchObject({ name, pool: btrfs, contentType: 'filesystem', description: 'data', config: { 'security.shared': 'true' } });
  expect((await t.host.storage.pool(btrfs).volumes.snapshots(name)).map((s) => s.name)).toEqual(['s1', 's2']);
  expect(describe(await dataOf(btrfs, name))).toBe(describe(data));
  expect(statSync(path.join(await dataOf(btrfs, name), 'hard')).ino).toBe(statSync(path.join(await dataOf(btrfs, name), 'dir', 'two')).ino);
  // Each snapshot's data as it was: restored in turn and compared with the source's restored likewise.
  for (const s of ['s1', 's2']) {
    await volumes.restore(name, s);
    await t.host.storage.pool(btrfs).volumes.restore(name, s);
    expect(describe(await dataOf(btrfs, name))).toBe(describe(await dataOf('default', name)));
  }

  // --volume-only: no snapshot in the archive, none imported; another name.
  const only = path.join(t.dir, 'only.tar.zst');
  await volumes.export(name, only, { volumeOnly: true });
  expect(sh(`tar --list --file '${only}'`)).not.toMatch(/volume-snapshots/);
  const again = await volumes.import(only, t.name('copy'));
  expect(await volumes.snapshots(again.name)).toEqual([]);
  expect(describe(await dataOf('default', again.name))).toBe(describe(data));
  for (const [pool, v] of [['default', name], [btrfs, name], ['default', again.name]]) await t.host.storage.pool(pool).volumes.delete(v);
}, 300_000);

test('a block volume: its disk byte for byte, with a snapshot; the CLI exports and imports it', async () => {
  const volumes = t.host.storage.pool(btrfs).volumes;
  const name = t.name('blk');
  await volumes.create(name, { contentType: 'block', size: '4MiB' });
  const disk = await dataOf(btrfs, name);
  sh(`printf 'at-start' | dd of='${disk}' conv=notrunc status=none && printf 'at-3MiB' | dd of='${disk}' bs=1 seek=3145728 conv=notrunc status=none`);
  await volumes.snapshot(name, 'snap0');
  sh(`printf 'later' | dd of='${disk}' conv=notrunc status=none`);
  const file = path.join(t.dir, 'blk.tar.zst');
  const lxq = (...args: string[]) => runNode([...lxqArgv(t.dir), ...args]);
  expect(await lxq('storage', 'volume', 'export', btrfs, name, file)).toMatchObject({ code: 0, stderr: '' });
  const copy = t.name('blk-copy');
  expect(await lxq('storage', 'volume', 'import', 'default', file, copy)).toMatchObject({ code: 0, stdout: `Storage volume ${copy} imported\n`, stderr: '' });
  const imported = await t.host.storage.pool('default').volumes.get(copy);
  expect(imported).toMatchObject({ contentType: 'block', config: { size: '4MiB' } });
  expect(readFileSync(await dataOf('default', copy)).equals(readFileSync(disk))).toBe(true);
  await t.host.storage.pool('default').volumes.restore(copy, 'snap0');
  await volumes.restore(name, 'snap0');
  const restored = await dataOf(btrfs, name); // a restore on btrfs swaps in another subvolume
  expect(readFileSync(await dataOf('default', copy)).equals(readFileSync(restored))).toBe(true);
  expect(readFileSync(restored).subarray(0, 8).toString()).toBe('at-start');
  await t.host.storage.pool('default').volumes.delete(copy);
  await volumes.delete(name);
}, 300_000);

/** Writes a tar archive with python's tarfile: `members` is python code adding to `tf` (helpers: d(name), f(name, text), idx(yaml)). */
function archive(file: string, members: string): string {
  const script = `
import io, tarfile, sys
tf = tarfile.open(sys.argv[1], 'w', format=tarfile.PAX_FORMAT)
def add(info, data=b''):
    info.size = len(data)
    tf.addfile(info, io.BytesIO(data) if data else None)
def d(name, mode=0o755):
    i = tarfile.TarInfo(name); i.type = tarfile.DIRTYPE; i.mode = mode; add(i)
def f(name, text='x', mode=0o644, uid=0, pax=None):
    i = tarfile.TarInfo(name); i.mode = mode; i.uid = uid
    if pax: i.pax_headers = pax
    add(i, text.encode())
def idx(text):
    f('backup/index.yaml', text)
def link(name, target, kind):
    i = tarfile.TarInfo(name); i.type = kind; i.linkname = target; add(i)
def dev(name):
    i = tarfile.TarInfo(name); i.type = tarfile.CHRTYPE; i.devmajor = 1; i.devminor = 3; add(i)
${members}
tf.close()
`;
  execFileSync('python3', ['-c', script, file]);
  return file;
}

const INDEX = (name: string, extra = '') => `idx("""name: ${name}\ntype: custom\n${extra}config:\n  volume:\n    name: ${name}\n    content_type: filesystem\n    config: {}\n""")`;

test('hostile archives are refused before anything is written, naming what is wrong', async () => {
  const volumes = t.host.storage.pool('default').volumes;
  const before = tree('default');
  const base = `${INDEX('hostile')}\nd('backup/volume')`;
  const cases: [string, string, RegExp][] = [
    ['dotdot', `${base}\nf('backup/volume/../../../escape')`, /"\.\."/],
    ['absolute', `${base}\nf('/tmp/lxq-absolute')`, /absolute/],
    ['outside', `${base}\nf('elsewhere/file')`, /outside "backup\/"/],
    ['under-symlink', `${base}\nlink('backup/volume/etc', '/etc', tarfile.SYMTYPE)\nf('backup/volume/etc/passwd')`, /under a symlink/],
    ['symlink-out', `${base}\nlink('backup/volume/up', '../../../..', tarfile.SYMTYPE)`, /out of the archive/],
    ['device', `${base}\ndev('backup/volume/null')`, /device node/],
    ['hard-link-across', `${INDEX('hostile', 'snapshots: [s1]\n')}\nd('backup/volume')\nf('backup/volume/f')\nd('backup/volume-snapshots')\nd('backup/volume-snapshots/s1')\nlink('backup/volume-snapshots/s1/f', 'backup/volume/f', tarfile.LNKTYPE)`, /another tree/],
    ['hard-link-out', `${base}\nlink('backup/volume/shadow', '/etc/shadow', tarfile.LNKTYPE)`, /absolute|outside/],
    ['unlisted-snapshot', `${base}\nd('backup/volume-snapshots')\nd('backup/volume-snapshots/ghost')`, /not part of the volume/],
    ['stray-member', `${base}\nf('backup/extra')`, /not part of the volume/],
    ['no-data', INDEX('hostile'), /no backup\/volume/],
    ['no-index', `d('backup')\nd('backup/volume')`, /no backup\/index\.yaml/],
    ['instance-backup', `idx("name: web\\ntype: container\\n")\nd('backup/container')`, /not "custom"/],
    ['bad-name', `${INDEX('"../x"')}\nd('backup/volume')`, /name/],
    ['bad-key', `idx("name: hostile\\ntype: custom\\nconfig:\\n  volume:\\n    name: hostile\\n    config: {raw.lxc: x}\\n")\nd('backup/volume')`, /unknown storage volume key "raw\.lxc"/],
    ['bad-content-type', `idx("name: hostile\\ntype: custom\\nconfig:\\n  volume:\\n    name: hostile\\n    content_type: iso\\n")\nd('backup/volume')`, /content_type/],
    ['block-as-tree', `idx("name: hostile\\ntype: custom\\nconfig:\\n  volume:\\n    name: hostile\\n    content_type: block\\n")\nd('backup/volume.img')`, /regular file/],
    ['alias-bomb', `idx("a: &a [x,x,x,x,x,x,x,x]\\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a]\\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b]\\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c]\\ne: [*d,*d,*d,*d,*d,*d,*d,*d]\\ntype: custom\\n")\nd('backup/volume')`, /YAML|alias/i],
  ];
  for (const [label, members, why] of cases) {
    const file = archive(path.join(t.dir, `${label}.tar`), members);
    const e = await thrown(volumes.import(file));
    expect({ label, type: e.constructor.name }).toEqual({ label, type: InvalidArgument.name });
    expect({ label, message: e.message }).toEqual({ label, message: expect.stringMatching(why) });
    expect(tree('default')).toBe(before);
  }
  // A truncated archive, a file that is not one, a missing file.
  const whole = archive(path.join(t.dir, 'whole.tar'), `${base}\nf('backup/volume/big', 'y' * 100000)`);
  writeFileSync(path.join(t.dir, 'truncated.tar'), readFileSync(whole).subarray(0, 30_000));
  expect(await thrown(volumes.import(path.join(t.dir, 'truncated.tar')))).toBeInstanceOf(InvalidArgument);
  writeFileSync(path.join(t.dir, 'text.tar'), 'not an archive\n');
  expect(await thrown(volumes.import(path.join(t.dir, 'text.tar')))).toBeInstanceOf(InvalidArgument);
  expect(await thrown(volumes.import(path.join(t.dir, 'missing.tar')))).toBeInstanceOf(NotFound);
  expect(tree('default')).toBe(before);

  // A taken name: AlreadyExists, the existing volume untouched.
  const taken = t.name('taken');
  await volumes.create(taken);
  const afterCreate = tree('default');
  expect(await thrown(volumes.import(archive(path.join(t.dir, 'taken.tar'), `${INDEX(taken)}\nd('backup/volume')\nf('backup/volume/x')`)))).toBeInstanceOf(AlreadyExists);
  expect(tree('default')).toBe(afterCreate);
  await volumes.delete(taken);
}, 300_000);

test('an accepted archive: set-id bits cleared and file capabilities not taken, owners kept', async () => {
  const volumes = t.host.storage.pool('default').volumes;
  const name = t.name('suid');
  // security.capability = cap_chown+ep (a VFS_CAP_REVISION_2 header), as setcap writes it.
  const cap = "'SCHILY.xattr.security.capability': '\\x01\\x00\\x00\\x02\\x01\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00'";
  const file = archive(path.join(t.dir, 'suid.tar'), `${INDEX(name)}\nd('backup/volume')\nf('backup/volume/su', '#!/bin/sh\\n', 0o4755)\nf('backup/volume/sg', 'x', 0o2755, 1000)\nf('backup/volume/capped', 'x', 0o755, 0, {${cap}})\nf('backup/volume/note', 'x', 0o644, 0, {'SCHILY.xattr.user.note': 'kept'})`);
  await volumes.import(file);
  const data = await dataOf('default', name);
  expect(statSync(path.join(data, 'su')).mode & 0o7777).toBe(0o755);
  expect(statSync(path.join(data, 'sg')).mode & 0o7777).toBe(0o755);
  expect(statSync(path.join(data, 'sg')).uid).toBe(1000);
  expect(sh(`getfattr --absolute-names -n security.capability '${path.join(data, 'capped')}' 2>&1 || true`)).toMatch(/No such attribute/);
  expect(sh(`getfattr --absolute-names --only-values -n user.note '${path.join(data, 'note')}'`)).toBe('kept');
  await volumes.delete(name);
}, 120_000);
