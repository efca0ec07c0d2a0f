/**
 * Copies and moves of an instance across storage pools (`lxc copy -s`, `lxc move -s`). A copy on
 * another pool is the instance's tree read through a flattened view and written whole by the
 * target pool (a VM's disk file copied whole, its internal snapshots in it); host.copy stages it
 * as any copy.
 *
 * A move is made whole beside the instance, in a staging directory of the instances directory:
 * the data on the target pool, the instance's other files, its record naming the new pool, and a
 * hard link to its lock file (the same inode: a process waiting on the lock keeps waiting on the
 * instance). It is then swapped in by two renames, under a journal written first: a process
 * killed between them leaves the instance under neither name, and the next Host.open finishes the
 * swap (finishMoves) before staging entries are cleared. Killed before the journal, the staging
 * directory is cleared and the instance is as it was; after, the old directory (a staging name)
 * is, and its pool's data with it (a btrfs subvolume no directory names is swept).
 */
import { promises as fs } from 'node:fs';
import * as path from 'node:path';

import { checkAborted, phase } from '../core/abort';
import { NotSupported } from '../core/errors';
import { readJson, writeJsonAtomic } from '../core/fs';
import { currentOwner, type Owner, ownerGone } from '../core/owner';
import { isStaging, stagingPath } from '../core/staging';
import type { InstanceRecord } from '../instance/instance';
import { LOCK_FILE, LXQ_ENTRY_PREFIX, RECORD_FILE } from '../instance/names';
import { writeInstanceRecord } from '../instance/record';
import { unmountUnder } from './pools/mounts';
import { LEGACY_POOL } from './pools/names';
import type { PoolDriver } from './pools/types';
import { copyTree, diskUsage } from './tree';
import type { StorageDriver } from './types';

/** Where a move's journal is, in the instances directory (a dot name: never listed as an instance). */
const MOVES_DIR = '.lxq-moves';

/** What a pool keeps of an instance in its directory: the target pool writes its own. */
const POOL_TREES = ['rootfs', 'upper', 'work', 'overlay.json', 'btrfs.json'];

interface MoveJournal extends Owner {
  name: string;
  /** The staging directory holding the moved instance, then the one the old directory went to (basenames). */
  staged: string;
  old: string;
}

/** The pool a record's root is on (none: the dir pool, as before pools). */
export function poolOf(record: InstanceRecord): string {
  return record.pool ?? LEGACY_POOL;
}

/**
 * The driver of `pool` when it is not the record's own (a copy or move across pools), else
 * undefined. NotFound for an unknown pool; NotSupported for a container's root `size` the pool
 * cannot enforce. Nothing is written.
 */
export async function targetPool(storage: StorageDriver, record: InstanceRecord, pool: string | undefined): Promise<PoolDriver | undefined> {
  if (pool === undefined || pool === poolOf(record)) return undefined;
  const target = await storage.poolNamed(pool);
  if (record.type === 'container' && record.rootSize) {
    const refusal = await target.rootLimitRefusal();
    if (refusal !== undefined) throw new NotSupported(`device "root": "size" cannot be enforced on pool "${pool}": ${refusal}`);
  }
  return target;
}

export interface PoolMoveSource {
  dir: string;
  record: InstanceRecord;
  storage: StorageDriver;
  /** The driver of the pool the instance is on now. */
  pool: PoolDriver;
}

/**
 * Moves the stopped instance to `pool` (its driver `target`) and returns its new record (already
 * on disk); the caller then lets the driver derive what it needs of the directory (its root
 * mounted again). Leaves the instance as it was on any failure before the swap.
 */
export async function moveAcrossPools(source: PoolMoveSource, pool: string, target: PoolDriver): Promise<InstanceRecord> {
  const { dir } = source;
  const instancesDir = path.dirname(dir);
  const staged = stagingPath(instancesDir, 'move');
  const record: InstanceRecord = { ...source.record, pool };
  await fs.mkdir(staged, { mode: 0o711 });
  try {
    await phase('copying', 0, 95, () => diskUsage(dir, true));
    await source.storage.copyTo(staged, { status: 'stopped', snapshots: true, flatten: false, target, keepIdentity: true });
    for (const entry of await fs.readdir(dir)) {
      if (POOL_TREES.includes(entry) || entry.startsWith(LXQ_ENTRY_PREFIX) || entry === LOCK_FILE || entry === RECORD_FILE) continue;
      if (await exists(path.join(staged, entry))) continue; // the copy's own (its disk, snapshots, TPM state)
      await copyTree(path.join(dir, entry), path.join(staged, entry));
    }
    await fs.link(path.join(dir, LOCK_FILE), path.join(staged, LOCK_FILE));
    await writeInstanceRecord(staged, record);
    checkAborted(); // the last moment an aborted move leaves the instance as it was
  } catch (e) {
    await discard(target, staged);
    throw e;
  }
  await source.pool.detachRoot(dir); // nothing of the old root stays mounted in the directory that moves out
  const old = stagingPath(instancesDir, 'moved-out');
  const journal = path.join(instancesDir, MOVES_DIR, `${record.name}.json`);
  await fs.mkdir(path.dirname(journal), { recursive: true, mode: 0o700 });
  const entry: MoveJournal = { ...(await currentOwner()), name: record.name, staged: path.basename(staged), old: path.basename(old) };
  await writeJsonAtomic(journal, entry);
  await fs.rename(dir, old);
  await fs.rename(staged, dir);
  await fs.rm(journal, { force: true });
  await discard(source.pool, old).catch(() => undefined); // else cleared by the next Host.open
  return record;
}

/** Removes a directory made for an instance on `pool` (its snapshots' data and its own, then its files). */
export async function discard(pool: PoolDriver, dir: string): Promise<void> {
  for (const s of await fs.readdir(path.join(dir, 'snapshots')).catch(() => [] as string[])) await pool.removeRoot(path.join(dir, 'snapshots', s)).catch(() => undefined);
  await pool.removeRoot(dir).catch(() => undefined);
  await unmountUnder(dir);
  await fs.rm(dir, { recursive: true, force: true });
}

const exists = (p: string) => fs.lstat(p).then(() => true, () => false);

/**
 * Host.open, before staging entries are cleared: the swap of a move whose process died between
 * its two renames is finished (the moved instance renamed into place); a journal whose swap did
 * not start is dropped (the staging directory is then cleared: the instance stayed as it was).
 */
export async function finishMoves(instancesDir: string): Promise<void> {
  const journals = path.join(instancesDir, MOVES_DIR);
  for (const file of await fs.readdir(journals).catch(() => [] as string[])) {
    if (file.startsWith('.')) continue; // being written
    const entry = await readJson<MoveJournal>(path.join(journals, file)).catch(() => undefined);
    if (entry && !(await ownerGone(entry))) continue;
    const plain = (n: unknown) => typeof n === 'string' && n !== '' && !n.includes('/') && n !== '.' && n !== '..';
    if (entry && plain(entry.name) && plain(entry.staged) && isStaging(entry.staged) && `${entry.name}.json` === file) {
      const dir = path.join(instancesDir, entry.name);
      const staged = path.join(instancesDir, entry.staged);
      if ((await exists(staged)) && !(await exists(dir))) await fs.rename(staged, dir);
    }
    await fs.rm(path.join(journals, file), { force: true });
  }
}
