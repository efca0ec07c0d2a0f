/**
 * An ephemeral instance (LXD's `ephemeral`) is deleted when it stops, but not before it has run:
 * `lxq create --ephemeral` then `lxq start` in another process must find it. The mark says it
 * has run; a process that finds it stopped with the mark (its runner died, its init exited while
 * nobody watched) deletes it (Host.open, a host's exit watcher).
 */
import { promises as fs } from 'node:fs';
import * as path from 'node:path';

/** In the instance's directory; `.lxq-` files are never copied nor imported (see Host.adoptStaged). */
export const RAN_MARK = '.lxq-ephemeral-ran';

export async function markRan(dir: string): Promise<void> {
  await fs.writeFile(path.join(dir, RAN_MARK), '', { mode: 0o600 });
}

export async function unmarkRan(dir: string): Promise<void> {
  await fs.rm(path.join(dir, RAN_MARK), { force: true });
}

export function hasRun(dir: string): Promise<boolean> {
  return fs.access(path.join(dir, RAN_MARK)).then(
    () => true,
    () => false,
  );
}
