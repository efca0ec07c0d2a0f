/**
 * A freeze made for an operation (a snapshot, copy or export of a running container) must not
 * outlive the process that made it. Before freezing, the process writes `.lxq-freeze.json` in the
 * instance's directory, naming itself by pid and start time (a pid alone can be reused); the thaw
 * removes it. A process that finds the file while its owner is gone thaws the instance (Host.open,
 * Host.get): a user's own freeze() writes no file and stays frozen across processes.
 */
import { promises as fs } from 'node:fs';
import * as path from 'node:path';

import { writeJsonAtomic } from '../core/fs';
import { currentOwner, type Owner, ownerGone } from '../core/owner';

export const FREEZE_MARK = '.lxq-freeze.json';

interface FreezeMark extends Owner {
  operation: string;
}

/** Records that this process is about to freeze the instance in `dir` for `operation`. */
export async function markFreeze(dir: string, operation: string): Promise<void> {
  const mark: FreezeMark = { ...(await currentOwner()), operation };
  await writeJsonAtomic(path.join(dir, FREEZE_MARK), mark);
}

export async function unmarkFreeze(dir: string): Promise<void> {
  await fs.rm(path.join(dir, FREEZE_MARK), { force: true });
}

export async function hasFreezeMark(dir: string): Promise<boolean> {
  return fs.lstat(path.join(dir, FREEZE_MARK)).then(() => true, () => false);
}

/** The operation of a freeze mark in `dir` whose process is gone, or undefined (no mark, or its process lives). */
export async function orphanedFreeze(dir: string): Promise<string | undefined> {
  const mark = await fs
    .readFile(path.join(dir, FREEZE_MARK), 'utf8')
    .then((t) => JSON.parse(t) as FreezeMark)
    .catch((e) => ((e as NodeJS.ErrnoException).code === 'ENOENT' ? undefined : ({ pid: 0, startedAt: null, operation: 'unknown' } as FreezeMark)));
  if (!mark) return undefined;
  return (await ownerGone(mark)) ? String(mark.operation) : undefined;
}
