/**
 * copyTreeShifted: an image's root filesystem copied into an unprivileged container keeps what
 * chown would lose (file capabilities, set-id bits) and what a per-file copy would (hard links).
 */
import { execFileSync } from 'node:child_process';
import { promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import { copyTreeShifted } from '../lib/storage/tree';

let dir: string;
beforeAll(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), 'lxq-tree-'));
});
afterAll(() => fs.rm(dir, { recursive: true, force: true }));

test('ids shifted once per inode; capabilities, set-id bits, links, symlinks and times kept; device nodes dropped', async () => {
  const src = path.join(dir, 'src');
  await fs.mkdir(path.join(src, 'usr/bin'), { recursive: true });
  await fs.writeFile(path.join(src, 'usr/bin/ping'), 'ping');
  execFileSync('setcap', ['cap_net_raw+ep', path.join(src, 'usr/bin/ping')]);
  await fs.writeFile(path.join(src, 'usr/bin/su'), 'su');
  await fs.chmod(path.join(src, 'usr/bin/su'), 0o4755);
  await fs.writeFile(path.join(src, 'usr/bin/a'), 'linked');
  await fs.link(path.join(src, 'usr/bin/a'), path.join(src, 'usr/bin/b'));
  await fs.chown(path.join(src, 'usr/bin/a'), 1000, 1000);
  await fs.symlink('/etc/passwd', path.join(src, 'usr/bin/link'));
  await fs.symlink('/nowhere', path.join(src, 'usr/bin/dangling'));
  await fs.utimes(path.join(src, 'usr/bin/su'), 1_000_000, 1_000_000);
  execFileSync('mknod', [path.join(src, 'null'), 'c', '1', '3']);

  const dst = path.join(dir, 'dst');
  await copyTreeShifted(src, dst, 100_000);

  const st = (p: string) => fs.lstat(path.join(dst, p));
  expect(execFileSync('getcap', [path.join(dst, 'usr/bin/ping')]).toString()).toMatch(/cap_net_raw[=+]ep/);
  expect((await st('usr/bin/ping')).uid).toBe(100_000);
  expect((await st('usr/bin/su')).mode & 0o7777).toBe(0o4755);
  expect((await st('usr/bin/su')).mtimeMs).toBe(1_000_000_000);
  const [a, b] = [await st('usr/bin/a'), await st('usr/bin/b')];
  expect(a.ino).toBe(b.ino);
  expect([a.uid, a.gid]).toEqual([101_000, 101_000]); // shifted once, not once per name
  expect((await st('usr/bin/link')).uid).toBe(100_000);
  expect(await fs.readlink(path.join(dst, 'usr/bin/link'))).toBe('/etc/passwd');
  await expect(st('null')).rejects.toThrow(/ENOENT/);
  expect((await st('.')).uid).toBe(100_000);
  // The source is as it was.
  expect((await fs.lstat(path.join(src, 'usr/bin/ping'))).uid).toBe(0);
  expect(execFileSync('getcap', [path.join(src, 'usr/bin/ping')]).toString()).toMatch(/cap_net_raw/);
});

test('a target that exists is refused and left as it was', async () => {
  const src = path.join(dir, 'src2');
  await fs.mkdir(src);
  const dst = path.join(dir, 'taken');
  await fs.mkdir(dst);
  await fs.writeFile(path.join(dst, 'mine'), 'x');
  await expect(copyTreeShifted(src, dst, 100_000)).rejects.toThrow();
  expect(await fs.readdir(dst)).toEqual(['mine']);
});
