/**
 * A local instance's record on disk (`lxq.json`) and the lock every process holds while it
 * changes the instance (`lxq.lock`, beside it): each operation starts from the record as it is on
 * disk, since another process may have changed config or devices since this one last looked.
 */
import { promises as fs } from 'node:fs';
import * as path from 'node:path';

import { NotFound } from '../core/errors';
import { readJson, writeJsonAtomic } from '../core/fs';
import { FileLock } from '../core/lock';
import type { InstanceRecord } from './instance';
import { LOCK_FILE, RECORD_FILE } from './names';

export { LOCK_FILE, RECORD_FILE } from './names';

/** Writes an instance's record (atomically), its lock file beside it from the start. */
export async function writeInstanceRecord(dir: string, record: InstanceRecord): Promise<void> {
  await fs.writeFile(path.join(dir, LOCK_FILE), '', { flag: 'a', mode: 0o600 });
  await writeJsonAtomic(path.join(dir, RECORD_FILE), record);
}

/** An instance's record file and lock, in the instance's directory (which a rename moves). */
export class RecordFile {
  private readonly lock: FileLock;
  /** The record file as last read or written here (inode, size, mtime): another process's write changes it. */
  private stamp: string | undefined;

  constructor(
    private dir: string,
    private readonly name: () => string,
  ) {
    this.lock = new FileLock(path.join(dir, LOCK_FILE), `instance ${name()}`);
  }

  /** Runs `op` holding the lock; NotFound if the instance's directory is gone. */
  hold<T>(op: () => Promise<T>): Promise<T> {
    return this.lock.hold(op).catch((e) => Promise.reject((e as NodeJS.ErrnoException).code === 'ENOENT' ? this.gone() : e));
  }

  /**
   * The record as it is on disk: `current` if the file is unchanged since it was last read or
   * written here. NotFound if the instance is gone: deleted, renamed, or made anew under its name
   * (another `createdAt`).
   */
  async refreshed(current: InstanceRecord): Promise<InstanceRecord> {
    const file = path.join(this.dir, RECORD_FILE);
    const st = await fs.stat(file).catch(() => undefined);
    if (!st) throw this.gone();
    const stamp = stampOf(st);
    if (stamp === this.stamp) return current;
    const record = await readJson<InstanceRecord>(file);
    if (record.createdAt !== current.createdAt) throw this.gone();
    this.stamp = stamp;
    return record;
  }

  async save(record: InstanceRecord): Promise<void> {
    await writeInstanceRecord(this.dir, record);
    this.stamp = stampOf(await fs.stat(path.join(this.dir, RECORD_FILE)));
  }

  /** The instance's directory moved (a rename): the open lock file stays the same. */
  moved(dir: string): void {
    this.dir = dir;
    this.lock.moved(path.join(dir, LOCK_FILE));
  }

  /** The instance is deleted. */
  close(): Promise<void> {
    return this.lock.close();
  }

  private gone(): NotFound {
    return new NotFound(`instance ${this.name()} no longer exists (deleted or renamed by another process)`);
  }
}

function stampOf(st: { ino: number; size: number; mtimeMs: number }): string {
  return `${st.ino}:${st.size}:${st.mtimeMs}`;
}
