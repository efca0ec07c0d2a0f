/**
 * Rename and copy of whole instances, for both types. Each becomes visible by one rename of a
 * directory: a rename moves the instance's directory onto a name nobody holds; a copy is built
 * in a staging directory of the host's instances directory (never listed) and renamed into place
 * with its record written last, so a crash leaves either nothing or what an interrupted create
 * leaves (a directory without a record, cleared by the next create of that name).
 */
import { promises as fs } from 'node:fs';
import * as path from 'node:path';

import { AlreadyExists } from '../errors';
import { renameNew } from './staging';

/** Moves an instance's directory to `target`, refusing (AlreadyExists) a name that is taken. */
export async function moveInstanceDir(from: string, target: string, newName: string): Promise<void> {
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
