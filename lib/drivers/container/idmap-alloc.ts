/**
 * Per-container id ranges (security.idmap.isolated, .base, .size): allocated from root's
 * subordinate ids under a lock every lxq process on the host shares, so that no two isolated
 * containers (of any lxq host directory) overlap each other or the range the others share.
 * Each allocation is a file in the registry naming its container's directory; one whose
 * container is gone (its record removed, its allocating process dead) is taken back.
 */
import { promises as fs } from 'node:fs';
import * as path from 'node:path';

import { InvalidArgument, NoSpace } from '../../core/errors';
import { readJson, writeJsonAtomic } from '../../core/fs';
import { FileLock } from '../../core/lock';
import { processAlive } from '../../core/staging';
import type { InstanceConfig } from '../../config/options';
import type { InstanceRecord } from '../../instance/instance';
import { RECORD_FILE } from '../../instance/record';
import { SNAPSHOT_META } from '../../storage/archive';
import { remapTree } from '../../storage/tree';
import { type IdMap, IDMAP_SIZE, rootIdRange } from './host-facts';

/** The registry of allocated ranges, shared by every lxq process on this host. */
export const IDMAP_REGISTRY = process.env.LXQ_IDMAP_REGISTRY ?? '/var/lib/lxq/idmap';

interface Allocation extends IdMap {
  /** The container's directory (its record is there once created). */
  dir: string;
  /** The process that allocated it (a create in progress has no record yet). */
  pid: number;
}

/** Whether the options ask for a range of the container's own. */
export function wantsOwnRange(config: InstanceConfig): boolean {
  return config['security.idmap.isolated'] === 'true';
}

const overlaps = (a: IdMap, b: IdMap): boolean => a.base < b.base + b.size && b.base < a.base + a.size;

async function liveAllocations(): Promise<Array<Allocation & { file: string }>> {
  const out: Array<Allocation & { file: string }> = [];
  for (const n of await fs.readdir(IDMAP_REGISTRY)) {
    if (!n.endsWith('.json')) continue;
    const file = path.join(IDMAP_REGISTRY, n);
    const a = await readJson<Allocation>(file).catch(() => undefined);
    const alive = a && (processAlive(a.pid) || (await readJson<{ idmap?: IdMap }>(path.join(a.dir, RECORD_FILE)).then((r) => r.idmap?.base === a.base, () => false)));
    if (a && alive) out.push({ ...a, file });
    else await fs.rm(file, { force: true }); // its container is gone: the range is free again
  }
  return out;
}

/**
 * A range for the container that will live in `dir`: security.idmap.base if given (checked),
 * else the lowest free one above the shared range, of security.idmap.size ids (default 65536).
 */
export async function allocateIdRange(config: InstanceConfig, dir: string, shared: IdMap): Promise<IdMap> {
  await fs.mkdir(IDMAP_REGISTRY, { recursive: true, mode: 0o700 });
  const lock = new FileLock(path.join(IDMAP_REGISTRY, '.lock'), 'the host\'s id map registry');
  try {
    return await lock.hold(async () => {
      const size = Number(config['security.idmap.size'] ?? IDMAP_SIZE);
      const root = rootIdRange();
      const taken: IdMap[] = [shared, ...(await liveAllocations())];
      let range: IdMap | undefined;
      if (config['security.idmap.base'] !== undefined) {
        range = { base: Number(config['security.idmap.base']), size };
        if (range.base < root.start || range.base + size > root.end) {
          throw new InvalidArgument(`"security.idmap.base": ${range.base}-${range.base + size - 1} is outside root's subordinate ids (${root.start}-${root.end - 1}, /etc/subuid and /etc/subgid)`);
        }
        const clash = taken.find((t) => overlaps(t, range!));
        if (clash) throw new InvalidArgument(`"security.idmap.base": ${range.base}-${range.base + size - 1} overlaps ids in use (${clash.base}-${clash.base + clash.size - 1}${clash === shared ? ', the range non-isolated containers share' : ', an isolated container\'s'})`);
      } else {
        // The lowest free start on a 65536 boundary from the shared range's end.
        for (let base = shared.base + Math.ceil(shared.size / IDMAP_SIZE) * IDMAP_SIZE; base + size <= root.end; base += IDMAP_SIZE) {
          const candidate = { base, size };
          if (!taken.some((t) => overlaps(t, candidate))) {
            range = candidate;
            break;
          }
        }
        if (!range) throw new NoSpace(`no free range of ${size} ids left in root's subordinate ids (${root.start}-${root.end - 1}) for "security.idmap.isolated"`);
      }
      await writeJsonAtomic(path.join(IDMAP_REGISTRY, `${range.base}.json`), { ...range, dir, pid: process.pid } satisfies Allocation);
      return range;
    });
  } finally {
    await lock.close();
  }
}

/** Gives the range back (the container is deleted, or its create failed). */
export async function releaseIdRange(range: IdMap): Promise<void> {
  await fs.rm(path.join(IDMAP_REGISTRY, `${range.base}.json`), { force: true });
}

/**
 * An imported container with a range of its own (security.idmap.isolated), extracted in `top`:
 * a fresh range here (its archive's could be any container's), its root and its snapshots'
 * moved from the archive's range into it, and its record and its snapshots' pointed at it.
 * Undefined for a container that shares the common range. The range is given back if this fails
 * (the caller gives it back if the adoption that follows fails).
 */
export async function placeImported(top: string, record: InstanceRecord, dir: string, shared: IdMap): Promise<IdMap | undefined> {
  const from = record.idmap as unknown;
  if (record.type !== 'container' || (!wantsOwnRange(record.config) && from === undefined)) return undefined;
  const ok = (n: unknown): n is number => Number.isSafeInteger(n) && (n as number) >= 0 && (n as number) < 2 ** 32;
  const old = from as IdMap | undefined;
  if (!wantsOwnRange(record.config) || !old || !ok(old.base) || !ok(old.size) || old.size < IDMAP_SIZE) {
    throw new InvalidArgument(`the archive's container has ${wantsOwnRange(record.config) ? 'no valid id range (idmap { base, size })' : 'an id range without "security.idmap.isolated"'}`);
  }
  const range = await allocateIdRange(record.config, dir, shared);
  try {
    await remapTree(path.join(top, 'rootfs'), old, range);
    for (const name of await fs.readdir(path.join(top, 'snapshots')).catch(() => [] as string[])) {
      const snap = path.join(top, 'snapshots', name);
      if (await fs.lstat(path.join(snap, 'rootfs')).then((s) => s.isDirectory(), () => false)) await remapTree(path.join(snap, 'rootfs'), old, range);
      const meta = await readJson<{ record: InstanceRecord }>(path.join(snap, SNAPSHOT_META)).catch(() => undefined);
      if (meta) await writeJsonAtomic(path.join(snap, SNAPSHOT_META), { ...meta, record: { ...meta.record, idmap: range } });
    }
  } catch (e) {
    await releaseIdRange(range);
    throw e;
  }
  record.idmap = range;
  return range;
}
