/**
 * Directory trees in and out of a real container as tar streams (files.pullTree / pushTree):
 * a round trip keeps names (long ones too), modes, owners, symlinks (never followed), empty
 * directories, mtimes and a 20 MiB file; GNU tar reads what lxq writes and lxq reads what GNU tar
 * writes; hostile archives are refused with typed errors and change nothing.
 */
import { execFileSync, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { lstatSync, mkdtempSync, readFileSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Readable } from 'node:stream';

import { Aborted, Host, type Instance, InvalidArgument, NotFound, NotSupported } from '../lib';
import { TAR_END, tarHeader, tarPadding, type TarHeader } from '../lib/core/pax';
import { SHARED_IMAGES, tempHost, type TestHost } from './helpers/host';
import { startLxdFixture } from './helpers/lxd';

const MAIN = path.join(__dirname, '..', 'lib', 'cli', 'main.ts');
const REGISTER = path.join(__dirname, 'helpers', 'ts-register.js');

jest.setTimeout(180_000);

let t: TestHost;
let c: Instance;
let scratch: string;

beforeAll(async () => {
  t = await tempHost();
  scratch = mkdtempSync(path.join(os.tmpdir(), 'lxq-trees-'));
  c = await t.host.create(t.name('tree'), { image: 'busybox' });
  await c.start();
  await c.files.mkdir('/srv', { parents: true });
}, 300_000);
afterAll(async () => {
  await t?.dispose();
  if (scratch) rmSync(scratch, { recursive: true, force: true });
});

async function collectStream(s: Readable): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const chunk of s) parts.push(chunk as Buffer);
  return Buffer.concat(parts);
}

/** Everything under `root` as lines: type, mode, owner, mtime (seconds), content hash or link target. */
async function manifest(i: Instance, root: string, rel = ''): Promise<string[]> {
  const out: string[] = [];
  for (const e of await i.files.list(path.posix.join(root, rel))) {
    const name = rel ? `${rel}/${e.name}` : e.name;
    const at = path.posix.join(root, name);
    const st = await i.files.stat(at);
    const what = st.type === 'file' ? createHash('sha256').update(await i.files.read(at)).digest('hex') : st.type === 'symlink' ? `-> ${await i.files.readlink(at)}` : '';
    const mode = st.type === 'symlink' ? '' : st.mode.toString(8);
    out.push(`${name} ${st.type} ${mode} ${st.uid}:${st.gid} ${st.type === 'symlink' ? '' : Math.floor(st.mtime.getTime() / 1000)} ${what}`);
    if (st.type === 'directory') out.push(...(await manifest(i, root, name)));
  }
  return out;
}

const LONG = 'a-name-longer-than-the-hundred-bytes-a-ustar-header-holds-'.repeat(3);
const MTIME = new Date('2024-05-06T07:08:09Z');

/** A tree of every kind lxq keeps, made through the file primitives. */
async function makeTree(i: Instance, root: string): Promise<void> {
  await i.files.mkdir(root, { mode: 0o750, uid: 1000, gid: 1001 });
  await i.files.mkdir(`${root}/nested/deeper/${LONG}`, { parents: true });
  await i.files.mkdir(`${root}/empty`, { mode: 0o700 });
  await i.files.write(`${root}/nested/deeper/${LONG}/${LONG}.txt`, 'deep and long\n', { mode: 0o600, uid: 33, gid: 44 });
  await i.files.write(`${root}/script`, '#!/bin/sh\necho hi\n', { mode: 0o4755 });
  await i.files.write(`${root}/big.bin`, Buffer.alloc(20 * 2 ** 20, 'lxq'));
  await i.files.write(`${root}/ünï cödé`, 'utf-8 name\n');
  await i.files.symlink('nested/deeper', `${root}/inside`);
  await i.files.symlink('/etc/passwd', `${root}/absolute-out`, { uid: 7, gid: 8 });
  await i.files.symlink('../../../../etc', `${root}/nested/relative-out`);
  for (const p of [`${root}/script`, `${root}/empty`, `${root}/nested/deeper`, `${root}/inside`]) await i.files.utimes(p, MTIME, MTIME);
}

describe('round trip', () => {
  test('pullTree then pushTree keeps names, modes, owners, symlinks (unfollowed), empty directories, mtimes and 20 MiB', async () => {
    await makeTree(c, '/srv/src');
    const before = await manifest(c, '/srv/src');
    expect(before).toContainEqual(expect.stringMatching(/^inside symlink +0:0 +-> nested\/deeper$/));
    expect(before).toContainEqual(expect.stringMatching(/^absolute-out symlink +7:8 +-> \/etc\/passwd$/));
    const tar = await collectStream(await c.files.pullTree('/srv/src'));
    // GNU tar reads lxq's pax: long names, owners, link targets.
    const file = path.join(scratch, 'tree.tar');
    writeFileSync(file, tar);
    const listing = execFileSync('tar', ['-tvf', file, '--numeric-owner'], { encoding: 'utf8' });
    expect(listing).toContain(`nested/deeper/${LONG}/${LONG}.txt`);
    expect(listing).toMatch(/^-rwsr-xr-x 0\/0 +\d+ [\d-]+ [\d:]+ script$/m);
    expect(listing).toMatch(/^lrwxrwxrwx 0\/0 +0 [\d-]+ [\d:]+ nested\/relative-out -> \.\.\/\.\.\/\.\.\/\.\.\/etc$/m);
    expect(listing).toMatch(/^-rw------- 33\/44 +14 /m);
    expect(listing).toMatch(/^lrwxrwxrwx 7\/8 +0 [\d-]+ [\d:]+ absolute-out -> \/etc\/passwd$/m); // kept as a link, not read

    await c.files.pushTree('/srv/copy', Readable.from([tar]));
    expect(await manifest(c, '/srv/copy')).toEqual(before);
    // The root entry is not in the archive: a target made by pushTree has the default mode and owner.
    expect(await c.files.stat('/srv/copy')).toMatchObject({ type: 'directory', mode: 0o755, uid: 0 });
  });

  test('an archive GNU tar made (gnu format: long names as L/K members) is read, and pushing merges into an existing directory', async () => {
    const src = path.join(scratch, 'gnu');
    execFileSync('sh', ['-c', `mkdir -p "$1/d/${LONG}" && echo one > "$1/d/${LONG}/f" && ln -s "${LONG}${LONG}" "$1/d/l" && chmod 0710 "$1/d" && chown -R 12:34 "$1/d"`, 'sh', src]);
    const tar = execFileSync('tar', ['-C', src, '-cf', '-', '--format=gnu', '.']);
    await c.files.mkdir('/srv/merge');
    await c.files.write('/srv/merge/kept', 'kept\n');
    await c.files.pushTree('/srv/merge', Readable.from([tar]));
    expect((await c.files.read(`/srv/merge/d/${LONG}/f`)).toString()).toBe('one\n');
    expect(await c.files.readlink('/srv/merge/d/l')).toBe(`${LONG}${LONG}`);
    expect(await c.files.stat('/srv/merge/d')).toMatchObject({ mode: 0o710, uid: 12, gid: 34 });
    expect((await c.files.read('/srv/merge/kept')).toString()).toBe('kept\n');
  });

  test('pullTree leaves out fifos and devices and says so; refuses what is not a directory', async () => {
    await c.files.mkdir('/srv/odd');
    await c.files.write('/srv/odd/plain', 'x');
    expect((await c.exec(['sh', '-c', 'mkfifo /srv/odd/fifo && ln -s / /srv/odd/root'])).exitCode).toBe(0);
    const skipped: string[] = [];
    const tar = await collectStream(await c.files.pullTree('/srv/odd', { onSkip: (p, type) => skipped.push(`${p} ${type}`) }));
    expect(skipped).toEqual(['/srv/odd/fifo other']);
    const file = path.join(scratch, 'odd.tar');
    writeFileSync(file, tar);
    expect(execFileSync('tar', ['-tf', file], { encoding: 'utf8' }).split('\n').filter(Boolean).sort()).toEqual(['plain', 'root']);
    await expect(c.files.pullTree('/srv/odd/plain')).rejects.toThrow(InvalidArgument);
    await expect(c.files.pullTree('/srv/none')).rejects.toThrow(NotFound);
    await expect(c.files.pullTree('/srv/odd', { follow: true } as never)).rejects.toThrow(InvalidArgument);
  });

  test('a pull of / archives the virtual filesystems mounted inside (/proc, /sys, /dev…) as empty directories, reported, and the data whole', async () => {
    await c.files.write('/srv/marker', 'data\n');
    const skipped: string[] = [];
    const tar = await collectStream(await c.files.pullTree('/', { onSkip: (p, type) => type === 'directory' && skipped.push(p) }));
    const file = path.join(scratch, 'root.tar');
    writeFileSync(file, tar);
    const names = execFileSync('tar', ['-tf', file], { encoding: 'utf8', maxBuffer: 64 * 2 ** 20 }).split('\n').filter(Boolean);
    expect(skipped).toEqual(expect.arrayContaining(['/proc', '/sys', '/dev']));
    for (const v of skipped) {
      const rel = v.slice(1);
      expect(names).toContain(`${rel}/`);
      expect(names.filter((n) => n.startsWith(`${rel}/`) && n !== `${rel}/`)).toEqual([]);
    }
    expect(names).toEqual(expect.arrayContaining(['srv/marker', 'etc/passwd', 'bin/']));
    expect(execFileSync('tar', ['-xOf', file, 'srv/marker'], { encoding: 'utf8' })).toBe('data\n');
    // Asked for itself, a virtual filesystem is not walked either.
    const proc: string[] = [];
    expect(execFileSync('tar', ['-t'], { input: await collectStream(await c.files.pullTree('/proc', { onSkip: (p) => proc.push(p) })), encoding: 'utf8' })).toBe('');
    expect(proc).toEqual(['/proc']);
  });

  test('an abort ends the stream with Aborted', async () => {
    const ac = new AbortController();
    ac.abort();
    await expect(c.files.pullTree('/etc', { signal: ac.signal })).rejects.toThrow(Aborted);
    await expect(c.files.pushTree('/srv/aborted', Readable.from([TAR_END]), { signal: ac.signal })).rejects.toThrow(Aborted);
    const later = new AbortController();
    const s = await c.files.pullTree('/etc', { signal: later.signal });
    later.abort();
    await expect(collectStream(s)).rejects.toThrow(Aborted);
    // A stream that stalls half-way: the abort ends the push, and nothing was written.
    const stalled = new Readable({ read() {} });
    stalled.push(archive([{ name: 'first', data: 'x' }]).subarray(0, 1024));
    const stuck = new AbortController();
    const pushing = c.files.pushTree('/srv/aborted', stalled, { signal: stuck.signal });
    setImmediate(() => stuck.abort());
    await expect(pushing).rejects.toThrow(Aborted);
    await expect(c.files.stat('/srv/aborted')).rejects.toThrow(NotFound);
  });
});

/** Member headers and content as a tar stream. */
function archive(members: Array<Partial<TarHeader> & { name: string; data?: string }>): Buffer {
  const parts: Buffer[] = [];
  for (const m of members) {
    const data = Buffer.from(m.data ?? '');
    parts.push(tarHeader({ type: 'file', mode: 0o644, uid: 0, gid: 0, mtime: MTIME, size: data.length, ...m }), data, tarPadding(data.length));
  }
  return Buffer.concat([...parts, TAR_END]);
}

describe('hostile archives change nothing', () => {
  const ok = { name: 'ok.txt', data: 'fine' };
  const cases: Array<[string, Buffer, typeof InvalidArgument | typeof NotSupported, RegExp]> = [
    ['a ".." name', archive([ok, { name: '../escaped', data: 'x' }]), InvalidArgument, /"\.\.\/escaped" contains "\.\."/],
    ['an absolute name', archive([ok, { name: '/etc/evil', data: 'x' }]), InvalidArgument, /"\/etc\/evil" is an absolute path/],
    ['a member under a symlink of the archive', archive([ok, { name: 'out', type: 'symlink', linkname: '/etc' }, { name: 'out/evil', data: 'x' }]), InvalidArgument, /"out\/evil" lies under a symlink/],
    ['a symlink made after a member under it', archive([ok, { name: 'out/evil', data: 'x' }, { name: 'out', type: 'symlink', linkname: '/etc' }]), InvalidArgument, /"out" is a symlink where the archive also has a directory/],
    ['a control character in a name', archive([ok, { name: 'bad\nname', data: 'x' }]), InvalidArgument, /control character/],
    ['a hard link', archive([ok, { name: 'hard', type: 'hardlink', linkname: 'ok.txt' }]), NotSupported, /"hard" is a hardlink/],
    ['a truncated stream', archive([ok, { name: 'big', data: 'y'.repeat(5000) }]).subarray(0, 2048), InvalidArgument, /truncated.*inside member "big"/],
    ['no end-of-archive blocks', archive([ok]).subarray(0, 1024), InvalidArgument, /truncated.*after member "ok\.txt"/],
    ['a size lie (smaller)', lie(-600), InvalidArgument, /wrong checksum/],
    ['a size lie (larger)', lie(+4096), InvalidArgument, /truncated|wrong checksum/],
    ['not a tar stream', Buffer.from('hello, this is not an archive'.repeat(40)), InvalidArgument, /wrong checksum|truncated/],
    ['an owner out of range', archive([ok, { name: 'owned', uid: 70000, data: 'x' }]), InvalidArgument, /uid 70000/],
  ];

  /** ok.txt, then a member whose header's size is off by `delta` bytes (checksum fixed). */
  function lie(delta: number): Buffer {
    const a = archive([ok, { name: 'lie', data: 'z'.repeat(1000) }, { name: 'after', data: 'a' }]);
    const h = a.subarray(1024, 1536);
    h.write((1000 + delta).toString(8).padStart(11, '0') + '\0', 124, 12, 'ascii');
    h.fill(0x20, 148, 156);
    let sum = 0;
    for (const b of h) sum += b;
    h.write(sum.toString(8).padStart(6, '0') + '\0 ', 148, 8, 'ascii');
    return a;
  }

  beforeAll(async () => {
    await c.files.mkdir('/srv/target');
    await c.files.write('/srv/target/existing', 'before\n');
  });

  test.each(cases)('%s', async (_what, tar, type, message) => {
    const before = await manifest(c, '/srv/target');
    const passwd = await c.files.read('/etc/passwd');
    for (const target of ['/srv/target', '/srv/fresh']) {
      const err = await c.files.pushTree(target, Readable.from([tar])).catch((e) => e);
      expect(err).toBeInstanceOf(type);
      expect(err.message).toMatch(message);
    }
    expect(await manifest(c, '/srv/target')).toEqual(before);
    await expect(c.files.stat('/srv/fresh')).rejects.toThrow(NotFound);
    expect(await c.files.read('/etc/passwd')).toEqual(passwd);
    await expect(c.files.stat('/escaped')).rejects.toThrow(NotFound);
  });

  test('a push that fails half-way (a name too long for the filesystem) takes away what it made; what was there stays', async () => {
    await c.files.mkdir('/srv/half');
    await c.files.write('/srv/half/kept', 'old\n');
    const tar = archive([
      { name: 'kept', data: 'new\n' },
      { name: 'made/', type: 'directory', mode: 0o755 },
      { name: 'made/one', data: 'one\n' },
      { name: 'link', type: 'symlink', linkname: 'made/one' },
      { name: `made/${'x'.repeat(300)}`, data: 'too long\n' },
    ]);
    await expect(c.files.pushTree('/srv/half', Readable.from(tar))).rejects.toThrow();
    expect((await c.files.list('/srv/half')).map((e) => e.name)).toEqual(['kept']);
    expect((await c.files.read('/srv/half/kept')).toString()).toBe('new\n'); // the extraction had begun (replaced files keep their new content)
    // A new target is taken away whole.
    await expect(c.files.pushTree('/srv/half-new/deeper', Readable.from(tar))).rejects.toThrow();
    await expect(c.files.stat('/srv/half-new')).rejects.toThrow(NotFound);
  });

  test('nothing is written through a symlink already in the instance, nor over a directory', async () => {
    await c.files.mkdir('/srv/linked');
    await c.files.symlink('/etc', '/srv/linked/out');
    await c.files.mkdir('/srv/linked/dir');
    const before = await manifest(c, '/srv/linked');
    const passwd = await c.files.read('/etc/passwd');
    const through = c.files.pushTree('/srv/linked', Readable.from([archive([ok, { name: 'out/passwd', data: 'owned\n' }])]));
    await expect(through).rejects.toThrow(/"out\/passwd" would be written under \/srv\/linked\/out, a symlink in the instance/);
    await expect(c.files.pushTree('/srv/linked', Readable.from([archive([ok, { name: 'dir', data: 'x' }])]))).rejects.toThrow(/is a directory in the instance/);
    await expect(c.files.pushTree('/srv/target/existing', Readable.from([archive([ok])]))).rejects.toThrow(/not a directory/);
    expect(await manifest(c, '/srv/linked')).toEqual(before);
    expect(await c.files.read('/etc/passwd')).toEqual(passwd);
    // A symlink member replaces an existing symlink (kept as a link, not followed).
    await c.files.pushTree('/srv/linked', Readable.from([archive([{ name: 'out', type: 'symlink', linkname: '/tmp' }])]));
    expect(await c.files.readlink('/srv/linked/out')).toBe('/tmp');
  });
});

/** The lxq command line on this file's host: exit code, stdout (bytes), stderr. */
function lxq(args: string[], input?: Buffer): Promise<{ code: number; stdout: Buffer; stderr: string }> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, ['-r', REGISTER, MAIN, '--host', t.dir, '--images', SHARED_IMAGES, ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    let stderr = '';
    p.stdout.on('data', (d: Buffer) => out.push(d));
    p.stderr.on('data', (d) => (stderr += d));
    p.stdin.end(input ?? '');
    p.on('close', (code) => resolve({ code: code ?? -1, stdout: Buffer.concat(out), stderr }));
  });
}

test('lxq file push -r and pull -r (as lxc file: the directory lands inside the target), and tar on stdin and stdout', async () => {
  const src = path.join(scratch, 'cli-src');
  execFileSync('sh', ['-c', 'mkdir -p "$1/sub/empty" && echo hi > "$1/sub/f" && chmod 0640 "$1/sub/f" && ln -s /etc/hostname "$1/link" && ln "$1/sub/f" "$1/hard"', 'sh', src]);
  const name = c.name;
  expect(await lxq(['file', 'push', '-r', src, `${name}/srv/cli`])).toMatchObject({ code: 0, stderr: '' });
  expect((await c.files.read('/srv/cli/cli-src/sub/f')).toString()).toBe('hi\n');
  expect((await c.files.read('/srv/cli/cli-src/hard')).toString()).toBe('hi\n'); // a hard link arrives as a copy
  expect(await c.files.stat('/srv/cli/cli-src/sub/f')).toMatchObject({ mode: 0o640 });
  expect(await c.files.readlink('/srv/cli/cli-src/link')).toBe('/etc/hostname');
  expect((await c.files.list('/srv/cli/cli-src/sub/empty'))).toEqual([]);

  const dest = path.join(scratch, 'cli-dest');
  expect(await lxq(['file', 'pull', '-r', `${name}/srv/cli/cli-src`, dest])).toMatchObject({ code: 0, stderr: '' });
  expect(readFileSync(path.join(dest, 'cli-src', 'sub', 'f'), 'utf8')).toBe('hi\n');
  expect(lstatSync(path.join(dest, 'cli-src', 'sub', 'f')).mode & 0o7777).toBe(0o640);
  expect(readlinkSync(path.join(dest, 'cli-src', 'link'))).toBe('/etc/hostname');
  expect(lstatSync(path.join(dest, 'cli-src', 'sub', 'empty')).isDirectory()).toBe(true);

  const piped = await lxq(['file', 'pull', '-r', `${name}/srv/cli/cli-src/sub`, '-']);
  expect(piped.code).toBe(0);
  const file = path.join(scratch, 'cli.tar');
  writeFileSync(file, piped.stdout);
  expect(execFileSync('tar', ['-tf', file], { encoding: 'utf8' }).split('\n').filter(Boolean).sort()).toEqual(['empty/', 'f']);
  expect(await lxq(['file', 'push', '-r', '-', `${name}/srv/from-stdin`], piped.stdout)).toMatchObject({ code: 0, stderr: '' });
  expect((await c.files.read('/srv/from-stdin/f')).toString()).toBe('hi\n');

  const bad = await lxq(['file', 'push', '-r', '-', `${name}/srv/hostile`], archive([{ name: '../x', data: 'x' }]));
  expect(bad).toMatchObject({ code: 1 });
  expect(bad.stderr).toMatch(/^lxq: the tar stream is refused: member "\.\.\/x" contains "\.\."\n$/);
  await expect(c.files.stat('/srv/hostile')).rejects.toThrow(NotFound);
});

/** `tar -tv` of an archive, one line a member: mode, owner, size, name, a link's target (no times). */
function listing(tar: Buffer): string[] {
  const file = path.join(scratch, `listing-${Date.now()}.tar`);
  writeFileSync(file, tar);
  const lines = execFileSync('tar', ['-tvf', file, '--numeric-owner'], { encoding: 'utf8' }).split('\n').filter(Boolean);
  rmSync(file);
  return lines.map((l) => l.replace(/^(\S+ \S+ +\d+) \S+ \S+ /, '$1 ')).sort();
}

test('a tree to and from an instance on a real LXD 5.0 server (its file API: no times; links inside the tree come back relative)', async () => {
  await c.files.mkdir('/srv/small/a/b', { parents: true, mode: 0o710, uid: 3, gid: 4 });
  await c.files.mkdir('/srv/small/empty');
  await c.files.write(`/srv/small/a/b/${LONG}`, 'long\n', { mode: 0o640, uid: 1000, gid: 1000 });
  await c.files.write('/srv/small/x', 'x', { mode: 0o755 });
  await c.files.symlink('a/b', '/srv/small/rel');
  await c.files.symlink('/etc/passwd', '/srv/small/abs');
  const tar = await collectStream(await c.files.pullTree('/srv/small'));
  const lxd = await startLxdFixture('lxq-trees-lxd-', { pool: 'lxq-trees', profile: 'lxq-trees', alias: 'lxq-trees-busybox' });
  const remote = await Host.connect({ socket: lxd.daemon.socket });
  try {
    const r = await remote.create(t.name('rt'), { image: 'lxq-trees-busybox', profiles: ['lxq-trees'], config: { 'raw.lxc': 'lxc.signal.halt = SIGUSR1' } });
    await r.start();
    await r.files.pushTree('/srv/t', Readable.from([tar]));
    expect(await r.files.readlink('/srv/t/rel')).toBe('/srv/t/a/b'); // LXD answers targets made absolute
    expect(await r.files.stat('/srv/t/a/b')).toMatchObject({ mode: 0o710, uid: 3, gid: 4 });
    const back = await collectStream(await r.files.pullTree('/srv/t'));
    // Links inside the tree come back relative (made so again from LXD's absolute answer); times are not kept.
    expect(listing(back)).toEqual(listing(tar));
    expect(listing(back)).toContainEqual(expect.stringMatching(/ rel -> a\/b$/));
    await expect(r.files.pushTree('/srv/t', Readable.from([archive([{ name: 'ok', data: 'x' }, { name: '/etc/evil', data: 'x' }])]))).rejects.toThrow(InvalidArgument);
    await expect(r.files.stat('/srv/t/ok')).rejects.toThrow(NotFound);
    await r.delete({ force: true });
  } finally {
    remote.close();
    await lxd.stop();
  }
}, 600_000);
