/** What Host.open clears: staging entries of dead processes; a committed restore is finished by its instance. */
import { promises as fs } from 'node:fs';
import * as path from 'node:path';

import type { Instance } from '../instance/instance';
import { RESTORE_JOURNAL } from './snapshots';
import { clearStaging, isStaging } from './staging';

export async function clearLeftovers(instancesDir: string, open: (name: string) => Promise<Instance>): Promise<void> {
  await clearStaging(instancesDir);
  for (const name of await fs.readdir(instancesDir).catch(() => [] as string[])) {
    if (isStaging(name) || name.startsWith('.')) continue;
    const dir = path.join(instancesDir, name);
    if (await fs.lstat(path.join(dir, RESTORE_JOURNAL)).then(() => true, () => false)) {
      // The instance's own recovery rolls the restore forward (it needs its driver).
      await open(name).then((i) => i.snapshots.list()).catch(() => undefined);
      continue;
    }
    await clearStaging(dir);
    await clearStaging(path.join(dir, 'snapshots'));
  }
}
