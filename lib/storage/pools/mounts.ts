/**
 * The host's mount table as lxq's storage needs it: what is mounted at or below a directory
 * (read from /proc/self/mountinfo, this process's mount namespace: the host's), and detaching
 * all of it, deepest first, before a directory is removed or a layer swapped.
 */
import { promises as fs } from 'node:fs';
import * as path from 'node:path';

import { isStaging, processAlive } from '../../core/staging';
import { sys } from '../../native/sys';

/** mountinfo escapes space, tab, newline and backslash in paths as octal (\040…). */
function unescapeMountPath(p: string): string {
  return p.replace(/\\([0-7]{3})/g, (_m, oct: string) => String.fromCharCode(parseInt(oct, 8)));
}

/** Every mount point at or below `dir` (once per stacked mount), deepest first. */
export async function mountsUnder(dir: string): Promise<string[]> {
  const top = path.resolve(dir);
  const text = await fs.readFile('/proc/self/mountinfo', 'utf8');
  const found: string[] = [];
  for (const line of text.split('\n')) {
    const target = line.split(' ')[4];
    if (!target) continue;
    const p = unescapeMountPath(target);
    if (p === top || p.startsWith(top + '/')) found.push(p);
  }
  // Later lines are mounted later: a stacked mount or one below another comes off first.
  return found.reverse().sort((a, b) => b.split('/').length - a.split('/').length);
}

export async function isMountPoint(p: string): Promise<boolean> {
  const top = path.resolve(p);
  return (await mountsUnder(top)).includes(top);
}

/** Detaches every mount at or below `dir` (MNT_DETACH: a file still open there keeps its own reference, nothing waits). */
export async function unmountUnder(dir: string): Promise<void> {
  for (const p of await mountsUnder(dir)) {
    await sys()
      .unmount(p, true)
      .catch((e: NodeJS.ErrnoException) => {
        // Gone meanwhile (another process unmounted it), or its path moved (a rename).
        if (e.code !== 'EINVAL' && e.code !== 'ENOENT') throw e;
      });
  }
}

/**
 * Detaches what a process that died left mounted in staging entries of `dir` (the read-only
 * views of an export or a publish), so that they can be removed: a removal would otherwise stop
 * at a read-only mount.
 */
export async function unmountDeadStaging(dir: string): Promise<void> {
  const top = path.resolve(dir);
  for (const p of await mountsUnder(top)) {
    const first = path.relative(top, p).split('/')[0];
    // A staging name carries its process's pid: .lxq-tmp-<pid>-…
    if (isStaging(first) && !processAlive(Number(first.split('-')[2]))) await unmountUnder(path.join(top, first));
  }
}

/**
 * Removes `dir` and all below it, detaching its mounts first: a recursive delete must never cross
 * into a mounted filesystem (a killed mmdebstrap leaves the host's /dev/shm, /sys and /proc bound
 * into its tree; `fs.rm` would delete through them).
 */
export async function removeTree(dir: string): Promise<void> {
  await unmountUnder(dir);
  await fs.rm(dir, { recursive: true, force: true });
}
