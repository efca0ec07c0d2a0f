/**
 * Crash safety: work happens in a staging entry beside its destination and becomes visible by
 * one rename. A staging name carries the pid of the process that made it, so leftovers of a
 * process that died are told apart from the work of a live one (another Node process may be
 * using the same host) and cleared by the next process that looks.
 */
import { randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import * as path from 'node:path';

const PREFIX = '.lxq-tmp-';

/** A fresh staging path in `parent` (nothing is created). */
export function stagingPath(parent: string, what: string): string {
  return path.join(parent, `${PREFIX}${process.pid}-${what}-${randomBytes(4).toString('hex')}`);
}

export function isStaging(name: string): boolean {
  return name.startsWith(PREFIX);
}

export function processAlive(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  if (pid === process.pid) return true;
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** The pid that owns a staging name, or NaN. */
function ownerOf(name: string): number {
  return Number(name.slice(PREFIX.length).split('-')[0]);
}

/** Removes the staging entries in `dir` whose process is gone; returns how many. */
export async function clearStaging(dir: string): Promise<number> {
  const names = await fs.readdir(dir).catch(() => [] as string[]);
  let n = 0;
  for (const name of names) {
    if (!isStaging(name) || processAlive(ownerOf(name))) continue;
    await fs.rm(path.join(dir, name), { recursive: true, force: true });
    n++;
  }
  return n;
}

/**
 * Renames `from` to `to`, failing with EEXIST (not merging, not replacing) if `to` exists:
 * rename(2) replaces an empty directory or a file silently.
 */
export async function renameNew(from: string, to: string): Promise<void> {
  if (await fs.lstat(to).then(() => true, () => false)) {
    throw Object.assign(new Error(`EEXIST: ${to} exists`), { code: 'EEXIST', path: to });
  }
  await fs.rename(from, to);
}
