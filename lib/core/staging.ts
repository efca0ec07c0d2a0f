/**
 * Crash safety: work happens in a staging entry beside its destination and becomes visible by
 * one rename. A staging name carries the pid of the process that made it, so leftovers of a
 * process that died are told apart from the work of a live one (another Node process may be
 * using the same host) and cleared by the next process that looks.
 */
import { randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import * as path from 'node:path';

import { checkAborted } from './abort';
import { writeJsonAtomic } from './fs';
import { currentOwner, type Owner, ownerGone } from './owner';
import { noSpaceOr } from './run';

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

/**
 * An instance directory without a record is unfinished: a staged copy or import is renamed into
 * place before its driver writes what it derives from the final path (liblxc's config) and the
 * record, and a delete removes the record first (the instance is gone for `list` at once) and
 * the pool's data and the directory after. Meanwhile this mark names the process at work (pid
 * and start time): a directory without a record whose mark's process is gone is an interrupted
 * copy, import or delete, cleared at once by the next create of its name or Host.open (a btrfs
 * pool then deletes the subvolumes nothing names any more).
 */
export const UNFINISHED_MARK = '.lxq-creating.json';

/** What a delete adds to the mark: the pool whose data the directory names (undefined: the default pool). */
export interface Deleting {
  deleting: true;
  pool?: string;
}

export async function markUnfinished(dir: string, deleting?: Deleting): Promise<void> {
  await writeJsonAtomic(path.join(dir, UNFINISHED_MARK), { ...(await currentOwner()), ...deleting });
}

export async function unmarkUnfinished(dir: string): Promise<void> {
  await fs.rm(path.join(dir, UNFINISHED_MARK), { force: true });
}

/**
 * The mark of `dir` (an instance directory without a record) if it is the leftover of a process
 * that died while making or deleting it: with `deleting` for a delete's.
 */
export async function abandonedMark(dir: string): Promise<(Owner & Partial<Deleting>) | undefined> {
  const mark = await fs
    .readFile(path.join(dir, UNFINISHED_MARK), 'utf8')
    .then((t) => JSON.parse(t) as Owner & Partial<Deleting>)
    .catch(() => undefined);
  return mark !== undefined && (await ownerGone(mark)) ? mark : undefined;
}

/**
 * Makes a new instance directory `dir` whole in a staging directory beside it (`fill` writes
 * there; what it writes may name `dir`, its final path) and renames it into place: a process
 * killed midway leaves nothing under the name, only a staging directory the next Host.open
 * clears. A name taken meanwhile fails with EEXIST (path: `dir`), nothing left behind.
 */
export async function createStaged(dir: string, fill: (staging: string) => Promise<void>): Promise<void> {
  const staging = stagingPath(path.dirname(dir), 'create');
  await fs.mkdir(staging, { mode: 0o711 });
  try {
    await fill(staging);
    checkAborted(); // an aborted create leaves nothing: the last moment before it appears
    await renameNew(staging, dir).catch((e) => {
      // rename(2) onto a directory that is not empty (another create won meanwhile).
      if ((e as NodeJS.ErrnoException).code === 'ENOTEMPTY') throw Object.assign(new Error(`EEXIST: ${dir} exists`), { code: 'EEXIST', path: dir });
      throw e;
    });
  } catch (e) {
    await fs.rm(staging, { recursive: true, force: true });
    throw noSpaceOr(e);
  }
}
