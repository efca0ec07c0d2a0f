/**
 * What Host.open clears: staging entries of dead processes; a committed restore is finished by
 * its instance, and a freeze whose process died is thawed by it (Host.get does both).
 */
import { promises as fs } from 'node:fs';
import * as path from 'node:path';

import type { Instance } from '../instance/instance';
import { hasFreezeMark } from './freeze-mark';
import { clearPartials, PARTIALS_DIR } from './partials';
import { unmountDeadStaging, unmountUnder } from './pools/mounts';
import { discard, finishMoves } from './pool-move';
import type { PoolDriver } from './pools/types';
import { RESTORE_JOURNAL } from './snapshots';
import { abandonedMark, clearStaging, isStaging } from '../core/staging';

export async function clearLeftovers(instancesDir: string, recordFile: string, open: (name: string) => Promise<Instance>, pools: (name: string | undefined) => Promise<PoolDriver>): Promise<void> {
  // A read-only view (export, publish) left mounted would stop the removal of its staging entry.
  await unmountDeadStaging(instancesDir);
  await finishMoves(instancesDir); // before the staging directory of a swap half done is cleared
  await clearStaging(instancesDir);
  await clearPartials(path.join(instancesDir, PARTIALS_DIR));
  for (const name of await fs.readdir(instancesDir).catch(() => [] as string[])) {
    if (isStaging(name) || name.startsWith('.')) continue;
    const dir = path.join(instancesDir, name);
    if (await hasFreezeMark(dir)) await open(name).catch(() => undefined);
    if (await fs.lstat(path.join(dir, RESTORE_JOURNAL)).then(() => true, () => false)) {
      // The instance's own recovery rolls the restore forward (it needs its driver).
      await open(name).then((i) => i.snapshots.list()).catch(() => undefined);
      continue;
    }
    // A copy or import whose process died between the rename into place and the record, or a
    // delete after the record went: a delete's pool data (a btrfs subvolume, whose maker may live
    // on and keep the pool's own sweep from it) goes with the directory.
    const abandoned = (await fs.lstat(path.join(dir, recordFile)).then(() => false, () => true)) ? await abandonedMark(dir) : undefined;
    if (abandoned) {
      if (abandoned.deleting) await pools(abandoned.pool).then((pool) => discard(pool, dir), () => undefined); // a pool deleted since: nothing of it to remove
      await unmountUnder(dir); // its root, if its pool had mounted it
      await fs.rm(dir, { recursive: true, force: true });
      continue;
    }
    await unmountDeadStaging(dir);
    await clearStaging(dir);
    await clearStaging(path.join(dir, 'snapshots'));
  }
}
