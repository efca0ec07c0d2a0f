/** What storage tests look at on the host: its mount points and loop devices below a test's directory, released after a failure. */
import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import * as path from 'node:path';

import { hostPerFile, SHARED_IMAGES, type TestHost } from './host';

export const sh = (cmd: string): string => execFileSync('sh', ['-c', cmd], { encoding: 'utf8' });

/** The host's mount points at or below `dir`. */
export function mountsUnder(dir: string): string[] {
  return readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .map((l) => l.split(' ')[4])
    .filter((p) => p !== undefined && (p === dir || p.startsWith(dir + '/')));
}

/** Loop devices whose file is below `dir`. */
export function loopsUnder(dir: string): string[] {
  return sh('losetup --list --noheadings --output NAME,BACK-FILE').split('\n').filter((l) => l.includes(dir));
}

/** Whatever a failed test left mounted or attached below `dir`, released (innermost mounts first). */
export function releaseUnder(dir: string): void {
  for (const p of mountsUnder(dir).sort((a, b) => b.length - a.length)) sh(`umount -l '${p}' || true`);
  for (const l of loopsUnder(dir)) sh(`losetup -d ${l.split(' ')[0]} 2>/dev/null || true`);
}

/**
 * A test file's host (hostPerFile, no image) with a btrfs pool of its own (1 GiB on a loop file)
 * named `prefix-…`; after the file's tests every volume of it and of `default` is deleted, the
 * pool too, and whatever stayed mounted or attached below the host released.
 */
export function hostWithBtrfsPool(prefix: string): { t: TestHost; btrfs: string } {
  const btrfs = `${prefix}-${randomBytes(3).toString('hex')}`;
  const t = hostPerFile({
    images: [],
    setUp: (t) => t.host.storage.pools.create(btrfs, { driver: 'btrfs', config: { size: '1GiB' } }),
    tearDown: async (t) => {
      for (const pool of ['default', btrfs]) for (const v of await t.host.storage.pool(pool).volumes.list().catch(() => [])) await t.host.storage.pool(pool).volumes.delete(v.name).catch(() => undefined);
      await t.host.storage.pools.delete(btrfs).catch(() => undefined);
      releaseUnder(t.dir);
    },
  });
  return { t, btrfs };
}

/**
 * Runs `body` (code awaited inside an async function, with `host`: a Host on `hostDir`) in a child
 * Node process whose fs.promises.`call` is wrapped to kill it with SIGKILL at an exact step:
 * before the call for which `killBefore` (a JS expression of its arguments: `from` and `to` for
 * rename, `path` for rm) holds, or after one for which `killAfter` does. The moment is the code's
 * own, whatever the machine's load. Expects the child to die so, before `body` ended.
 */
export async function killedAt(call: 'rename' | 'rm', hostDir: string, body: string, kill: { killBefore?: string; killAfter?: string }): Promise<void> {
  const params = call === 'rename' ? 'from, to, ...rest' : 'path, ...rest';
  const script = `
    const fsp = require('node:fs').promises;
    const original = fsp.${call};
    fsp.${call} = async (${params}) => {
      if (${kill.killBefore ?? 'false'}) process.kill(process.pid, 'SIGKILL');
      const result = await original(${params.replace(', ...rest', '')}, ...rest);
      if (${kill.killAfter ?? 'false'}) process.kill(process.pid, 'SIGKILL');
      return result;
    };
    const { Host } = require(${JSON.stringify(path.resolve('lib'))});
    (async () => {
      const host = await Host.open({ path: ${JSON.stringify(hostDir)}, images: ${JSON.stringify(SHARED_IMAGES)} });
      ${body};
      console.log('done');
    })().catch((e) => { console.error(e); process.exit(3); });`;
  const child = spawn(process.execPath, ['-r', path.resolve('test/helpers/ts-register.js'), '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
  let stdout = '';
  child.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
  const signal = await new Promise<NodeJS.Signals | null>((r) => child.once('exit', (_code, s) => r(s)));
  expect({ signal, stdout }).toEqual({ signal: 'SIGKILL', stdout: '' });
}

/** killedAt for fs.promises.rename. */
export const killedAtRename = (hostDir: string, body: string, kill: { killBefore?: string; killAfter?: string }) => killedAt('rename', hostDir, body, kill);
