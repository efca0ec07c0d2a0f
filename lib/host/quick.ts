/**
 * This machine's host as the CLI's quick path (lib/cli/quick.ts) finds it: only a host that
 * Host.open and Host.get would leave exactly as it is (no work of a dead process to clear or
 * finish, its pools made and with nothing to mount, nothing frozen by an operation) and whose instances are all plain
 * containers (no VM to reconnect to, no ephemeral one to watch, no proxy to serve). Anything else
 * is `undefined`, and the command goes through Host. `lxq list` and `lxq exec` then load a handful
 * of modules instead of ~80 (BENCHMARKS.md, "CLI start-up").
 */
import { readdirSync, readFileSync, statSync, type Stats } from 'node:fs';
import * as path from 'node:path';

import { quickHandOver, quickSpawn, quickStatus } from '../drivers/container/quick';
import type { Instance, InstanceRecord } from '../instance/instance';
import { LXQ_ENTRY_PREFIX, POWER_MARK, RECORD_FILE, validateName } from '../instance/names';
import type { SpawnOptions } from '../instance/process';
import { InstanceProfiles, profilesOf } from '../instance/profiles';
import { DEFAULT_POOL, LEGACY_POOL, POOL_FILE, POOLS_DIR } from '../storage/pools/names';
import { DEFAULT_HOST_PATH } from './paths';

/** What `list` and `exec` use of an instance; `handOver`: spawn's command in place of this process (the driver's quickHandOver). */
export type QuickInstance = Pick<Instance, 'name' | 'type' | 'image' | 'createdAt' | 'ephemeral' | 'status' | 'spawn'> & {
  handOver(argv: string[], options: SpawnOptions, fallback: string[]): false;
};

export interface QuickHost {
  /** Every instance, sorted by name (Host.list's order). */
  instances: QuickInstance[];
  get(name: string): QuickInstance | undefined;
}

// Read without waiting: a few small files, and nothing else to do meanwhile (each trip to
// libuv's threads, and node:fs/promises itself, cost more than the reads).
const isDir = (p: string): Stats | undefined => ((s) => (s?.isDirectory() ? s : undefined))(statSync(p, { throwIfNoEntry: false }));
const entries = (dir: string): string[] => {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
};
const readJson = <T>(file: string): T => JSON.parse(readFileSync(file, 'utf8')) as T;
/** Whether `dir` holds what lxq keeps of an operation under way (its last power state is no such thing). */
const lxqEntries = (dir: string) => entries(dir).some((n) => n.startsWith(LXQ_ENTRY_PREFIX) && n !== POWER_MARK);
/** The pool drivers that Host.open has nothing to do for (a btrfs pool's loop device is mounted again). */
const NOTHING_TO_OPEN = ['dir', 'overlay'];

/** Host.open({ path, images }) as a no-op, or undefined (see above). */
export function quickHost(hostPath?: string, images?: string): QuickHost | undefined {
  const root = path.resolve(hostPath ?? DEFAULT_HOST_PATH);
  const instancesDir = path.join(root, 'instances');
  // Host.open makes the directories and lets an unprivileged root traverse them.
  const top = isDir(root);
  const instancesTop = isDir(instancesDir);
  if (!top || !instancesTop || !isDir(path.resolve(images ?? path.join(root, 'images'))) || top.mode % 2 === 0 || instancesTop.mode % 2 === 0) return undefined;
  const pools = openedPools(path.join(root, POOLS_DIR));
  if (!pools) return undefined;
  const records = readdirSync(instancesDir)
    .sort()
    .map((n) => plainContainer(instancesDir, n));
  if (!records.every((r): r is Plain => r !== undefined)) return undefined;
  if (![DEFAULT_POOL, ...(records.some((r) => r.record.pool === undefined) ? [LEGACY_POOL] : [])].every((p) => pools.includes(p))) return undefined;
  const instances = records.map((r) => quickInstance(instancesDir, r));
  return { instances, get: (name) => instances.find((i) => i.name === name) };
}

/** The pools of the host, if Host.open has nothing to do for them (nothing left by a dead process, nothing to mount), else undefined. */
function openedPools(dir: string): string[] | undefined {
  const names = entries(dir);
  if (names.some((n) => n.startsWith('.'))) return undefined;
  const drivers = names.map((n) => {
    try {
      return readJson<{ driver?: unknown }>(path.join(dir, n, POOL_FILE)).driver;
    } catch {
      return 'none';
    }
  });
  return drivers.every((d) => d === 'none' || NOTHING_TO_OPEN.includes(d as string)) ? names.filter((_, i) => drivers[i] !== 'none') : undefined;
}

/** A plain container: its record and its config as its profiles expand it. */
interface Plain {
  record: InstanceRecord;
  expandedConfig: Readonly<Record<string, string>>;
}

/** The instance directory `name` if it holds a plain container with nothing under way (as Host.get reads it, profiles and all), else undefined. */
function plainContainer(instancesDir: string, name: string): Plain | undefined {
  const dir = path.join(instancesDir, name);
  if (name.startsWith('.') || lxqEntries(dir) || lxqEntries(path.join(dir, 'snapshots'))) return undefined;
  try {
    validateName(name);
    const r = readJson<InstanceRecord>(path.join(dir, RECORD_FILE));
    if (r.name !== name || r.type !== 'container' || r.ephemeral === true || typeof r.image !== 'string' || typeof r.createdAt !== 'string' || r.config === null || typeof r.config !== 'object') return undefined;
    const profiles = new InstanceProfiles();
    profiles.loadSync(dir, profilesOf(r));
    const { config, devices } = profiles.expand(r);
    return Object.values(devices).some((d) => d?.type === 'proxy') ? undefined : { record: r, expandedConfig: config };
  } catch {
    return undefined;
  }
}

/** What BaseInstance's getters give of the record, its status and commands through the driver's calls. */
function quickInstance(lxcpath: string, { record: r, expandedConfig }: Plain): QuickInstance {
  return {
    name: r.name,
    type: r.type,
    image: r.image,
    get createdAt() {
      return new Date(r.createdAt);
    },
    ephemeral: false,
    status: () => quickStatus(lxcpath, r.name),
    spawn: (argv, options = {}) => quickSpawn(lxcpath, r.name, expandedConfig, argv, options),
    handOver: (argv, options, fallback) => quickHandOver(lxcpath, r.name, expandedConfig, argv, options, fallback),
  };
}
