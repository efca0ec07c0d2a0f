/**
 * What a host reads from its instances' records on disk (made by any process), and the clearing
 * of a name an interrupted create left behind.
 */
import { promises as fs } from 'node:fs';
import * as path from 'node:path';

import { AlreadyExists } from '../core/errors';
import { readJson } from '../core/fs';
import { abandonedMark } from '../core/staging';
import { RECORD_FILE } from '../instance/base';
import type { InstanceRecord } from '../instance/instance';
import type { NetworkUser } from '../network/networks';
import { unmountUnder } from '../storage/pools/mounts';

/** A directory without a record older than this is an interrupted create, safe to clear. */
const STALE_PARTIAL_MS = 60_000;

/** Every instance record on disk (made by any process), sorted by name. */
export async function instanceRecords(instancesDir: string): Promise<InstanceRecord[]> {
  const names = (await fs.readdir(instancesDir).catch(() => [] as string[])).filter((n) => !n.startsWith('.'));
  const records = await Promise.all(names.map((n) => readJson<InstanceRecord>(path.join(instancesDir, n, RECORD_FILE)).catch(() => undefined)));
  return records.filter((r): r is InstanceRecord => r !== undefined).sort((a, b) => (a.name < b.name ? -1 : 1));
}

/** The NICs on `network`, from every instance's record. */
export function networkUsersIn(records: InstanceRecord[], network: string): NetworkUser[] {
  const out: NetworkUser[] = [];
  for (const r of records) {
    for (const [device, d] of Object.entries(r.devices ?? {})) {
      if (d.type === 'nic' && d.network === network) out.push({ instance: r.name, device, hwaddr: d.hwaddr, ...(d['ipv4.address'] ? { address: d['ipv4.address'] } : {}) });
    }
  }
  return out;
}

/** Frees the name of an instance directory an interrupted create left; AlreadyExists if an instance (or a live create) holds it. */
export async function clearInterruptedCreate(dir: string, name: string): Promise<void> {
  const st = await fs.stat(dir).catch(() => undefined);
  if (!st) return;
  const hasRecord = await fs.access(path.join(dir, RECORD_FILE)).then(() => true, () => false);
  // Without a record: a copy or import whose process died (its mark says so), or an old leftover.
  if (hasRecord || ((await abandonedMark(dir)) === undefined && Date.now() - st.mtimeMs < STALE_PARTIAL_MS)) throw new AlreadyExists(`an instance named "${name}" already exists`);
  await unmountUnder(dir);
  await fs.rm(dir, { recursive: true, force: true });
}
