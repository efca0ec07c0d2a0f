/**
 * Rename and copy of whole instances, for both types. Each becomes visible by one rename of a
 * directory: a rename moves the instance's directory onto a name nobody holds; a copy is built
 * in a staging directory of the host's instances directory (never listed) and renamed into place
 * with its record written last, so a crash leaves either nothing or what an interrupted create
 * leaves (a directory without a record, cleared by the next create of that name).
 */
import { randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import * as path from 'node:path';

import { checkAborted } from '../core/abort';
import { AlreadyExists } from '../core/errors';
import { renameNew } from '../core/staging';

/** Moves an instance's directory to `target`, refusing (AlreadyExists) a name that is taken. */
export async function moveInstanceDir(from: string, target: string, newName: string): Promise<void> {
  checkAborted(); // the last moment an aborted copy or import can leave nothing
  try {
    await renameNew(from, target);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'EEXIST' || (e as NodeJS.ErrnoException).code === 'ENOTEMPTY') {
      throw new AlreadyExists(`an instance named "${newName}" already exists`);
    }
    throw e;
  }
}

/** Empties /etc/machine-id of a copied root filesystem (systemd makes a new one at first boot), where the image has one. */
export async function resetMachineId(rootfs: string): Promise<void> {
  const file = path.join(rootfs, 'etc', 'machine-id');
  const st = await fs.lstat(file).catch(() => undefined);
  if (st?.isFile()) await fs.truncate(file, 0);
}

/**
 * A machine id for a VM whose image runs systemd, given to it as `systemd.machine_id=` on the
 * kernel command line at every boot (systemd then writes it to /etc/machine-id). A VM's disk
 * cannot be edited safely from the host (a copy of a running VM's disk is crash-consistent: its
 * ext4 journal is replayed by the guest's kernel, never by a host tool), so rather than empty the
 * file in the copied disk, the copy's first boot is handed a new id.
 */
export function newMachineId(): string {
  return randomBytes(16).toString('hex');
}
