/**
 * What a local host keeps of storage (`host.storage`): its pools, the root disk an instance is
 * created with (`pool`, or LXD's `root` disk device), and the pools every host has.
 */
import * as path from 'node:path';

import { Busy, InvalidArgument, NotSupported } from '../../core/errors';
import { parseSize } from '../../core/units';
import type { StorageAction } from '../../events/lifecycle';
import { DEFAULT_DRIVER, DEFAULT_POOL, LEGACY_POOL, StoragePools, validatePoolName } from './pools';
import { POOLS_DIR } from './names';
import { PARTIALS_DIR } from '../partials';
import type { PoolDriver } from './types';
import { DISK_LIMITS, type RootLimits } from '../../devices/declarations';
import { checkRootLimits } from '../../devices/validate';
import { BtrfsPool } from './btrfs';
import { BtrfsVolumes } from '../volumes/btrfs';
import { DirVolumes } from '../volumes/dir';
import type { VolumeBackend, VolumeResolver } from '../volumes/types';
import { StorageVolumes } from '../volumes/volumes';

/** What storage needs of an instance's record. */
export interface PoolUserRecord {
  name: string;
  type: string;
  pool?: string;
  devices?: Record<string, { type: string; pool?: string; source?: string }>;
}

/**
 * A pool as `host.storage.pool(name)` gives it: its custom volumes.
 *
 * @example
 * ```ts
 * const pool: StoragePool = host.storage.pool('default');
 * await pool.volumes.create('data', { contentType: 'filesystem' });
 * ```
 */
export interface StoragePool {
  readonly name: string;
  readonly volumes: StorageVolumes;
}

/** The keys of LXD's root disk device lxq takes in this version. */
const ROOT_DISK_KEYS = ['type', 'path', 'pool', 'size', ...DISK_LIMITS];

/** A root disk's `size` in bytes (InvalidArgument naming it). */
export function rootSize(size: unknown): number {
  try {
    if (typeof size !== 'string') throw new Error(`expected a string such as "2GiB", got ${typeof size}`);
    return parseSize(size);
  } catch (e) {
    throw new InvalidArgument(`device "root": "size": ${(e as Error).message}`);
  }
}

/**
 * The host's storage.
 *
 * @example
 * ```ts
 * await host.storage.pools.create('ci', { driver: 'overlay' });
 * console.log((await host.storage.pools.list()).map((p) => `${p.name} (${p.driver}): ${p.usedBy.length} instances`));
 * ```
 */
export class HostStorage {
  readonly pools: StoragePools;

  private readonly poolsDir: string;
  /** Where exports note their partial files (cleared by Host.open). */
  private readonly partials: string;

  constructor(
    hostPath: string,
    private readonly records: () => Promise<PoolUserRecord[]>,
    private readonly report: (action: StorageAction, name: string, previous?: string) => Promise<void> = async () => undefined,
    /** Those of the named instances that are running (a volume's restore and sharing are checked against them). */
    private readonly running: (names: string[]) => Promise<string[]> = async () => [],
  ) {
    this.poolsDir = path.join(hostPath, POOLS_DIR);
    this.partials = path.join(hostPath, 'instances', PARTIALS_DIR);
    this.pools = new StoragePools(
      this.poolsDir,
      path.join(hostPath, 'instances'),
      // A VM made before pools names none: its disk is a file of its directory, on no pool.
      async (pool) => (await this.records()).filter((r) => (r.type === 'container' ? r.pool ?? LEGACY_POOL : r.pool) === pool).map((r) => r.name),
      report,
      async (pool) => (await this.pool(pool).volumes.list()).map((v) => v.name),
    );
  }

  /** @internal Host.open: the default pool, and the dir pool where containers made before pools exist; then what dead processes left of volumes. */
  async open(): Promise<void> {
    await this.pools.ensure(DEFAULT_POOL, DEFAULT_DRIVER);
    if ((await this.records()).some((r) => r.type === 'container' && r.pool === undefined)) await this.pools.ensure(LEGACY_POOL, 'dir');
    await this.pools.open();
    for (const p of await this.pools.list()) await this.pool(p.name).volumes.open();
  }

  /**
   * A pool's handle: its custom volumes (the pool is looked up by each call: NotFound then).
   *
   * @example
   * ```ts
   * await host.storage.pool('default').volumes.create('data', {});
   * ```
   */
  pool(name: string): StoragePool {
    validatePoolName(name);
    const volumes = new StorageVolumes({
      pool: name,
      poolDir: path.join(this.poolsDir, name),
      backend: () => this.backend(name),
      users: (volume) => this.volumeUsers(name, volume),
      running: this.running,
      report: (action, volume, previous) => this.report(action, `${name}/${volume}`, previous === undefined ? undefined : `${name}/${previous}`),
      partials: this.partials,
    });
    return { name, volumes };
  }

  private async backend(pool: string): Promise<VolumeBackend> {
    const driver = await this.pools.driver(pool);
    return driver instanceof BtrfsPool ? new BtrfsVolumes(await driver.customRoot()) : new DirVolumes();
  }

  /** The instances whose own devices name the volume (a disk with `pool` and `source`). */
  private async volumeUsers(pool: string, volume: string): Promise<string[]> {
    const uses = (r: PoolUserRecord) => Object.values(r.devices ?? {}).some((d) => d.type === 'disk' && d.pool === pool && d.source === volume);
    return (await this.records()).filter(uses).map((r) => r.name);
  }

  /** @internal What instances' volume devices need (given to the drivers). */
  get volumeResolver(): VolumeResolver {
    return {
      resolve: async (pool, volume) => {
        const v = this.pool(pool).volumes;
        const stored = await v.stored(volume);
        return { path: await (await this.backend(pool)).dataPath(v.volumeDir(volume), stored.contentType), contentType: stored.contentType };
      },
      checkFree: async (pool, volume, instance) => {
        const stored = await this.pool(pool).volumes.stored(volume);
        if (stored.config['security.shared'] === 'true') return;
        const others = await this.running((await this.volumeUsers(pool, volume)).filter((n) => n !== instance));
        if (others.length) {
          throw new Busy(`storage volume "${volume}" of pool "${pool}" is in use by running ${others.map((o) => `"${o}"`).join(', ')}; set security.shared=true on the volume to attach it to several running instances`, others);
        }
      },
    };
  }

  /**
   * @internal
   * The pool a new instance's root goes on, from `pool` or a `root` disk device (`{ type: 'disk',
   * path: '/', pool }`, LXD's form), and the devices without that root disk. An instance without
   * either goes on the default pool. Checked before anything is written: an unknown pool is
   * NotFound, two different pools or a key this version cannot honour are refused.
   */
  async rootOf(type: string, options: { pool?: unknown; devices?: unknown }): Promise<{ pool: string | undefined; devices: unknown; rootSize?: number; rootLimits?: RootLimits }> {
    let devices = options.devices;
    let fromDevice: string | undefined;
    let size: number | undefined;
    let limits: RootLimits | undefined;
    const root = (devices as Record<string, unknown> | undefined)?.root as Record<string, unknown> | undefined;
    if (root !== null && typeof root === 'object' && root.type === 'disk' && root.path === '/') {
      for (const key of Object.keys(root)) {
        if (!ROOT_DISK_KEYS.includes(key)) throw new InvalidArgument(`device "root": unknown key "${key}" for a root disk; known: ${ROOT_DISK_KEYS.map((k) => `"${k}"`).join(', ')}`);
      }
      if (root.pool === undefined) throw new InvalidArgument('device "root": "pool" is required (the storage pool of the root disk)');
      fromDevice = validatePoolName(root.pool);
      if (root.size !== undefined) size = rootSize(root.size);
      limits = checkRootLimits(type === 'vm' ? 'vm' : 'container', root);
      const { root: _root, ...rest } = devices as Record<string, unknown>;
      devices = rest;
    }
    if (options.pool !== undefined) validatePoolName(options.pool);
    if (options.pool !== undefined && fromDevice !== undefined && options.pool !== fromDevice) {
      throw new InvalidArgument(`"pool" (${JSON.stringify(options.pool)}) and the root disk's pool (${JSON.stringify(fromDevice)}) differ; give one`);
    }
    const pool = (options.pool as string | undefined) ?? fromDevice ?? DEFAULT_POOL;
    await this.pools.checkUsable(pool);
    if (size === undefined) return { pool, devices, ...(limits ? { rootLimits: limits } : {}) };
    // A VM's size is its disk's (checked against its image's when the disk is made), on every pool.
    if (type === 'vm') return { pool, devices, rootSize: size };
    const refusal = await (await this.pools.driver(pool)).rootLimitRefusal();
    if (refusal !== undefined) throw new NotSupported(`device "root": "size" cannot be enforced on pool "${pool}": ${refusal}`);
    return { pool, devices, rootSize: size, ...(limits ? { rootLimits: limits } : {}) };
  }

  /**
   * @internal
   * An imported container's root is a whole tree (an export flattens it): it goes on the dir pool
   * (made if missing), its record naming none, whatever pool it was exported from.
   */
  async adoptImported(record: { pool?: string; type: string }): Promise<void> {
    delete record.pool;
    if (record.type === 'container') await this.pools.ensure(LEGACY_POOL, 'dir');
  }

  /** @internal The image store deletes these builds (no instance uses them): every pool drops what it keeps of their trees. */
  async releaseImages(builds: string[]): Promise<void> {
    for (const pool of await this.pools.list()) {
      const driver = await this.pools.driver(pool.name);
      for (const b of builds) await driver.releaseImage(path.join(b, 'rootfs'));
    }
  }

  /** @internal The driver of the pool an instance's record names (none: the dir pool, as before pools). */
  driver(pool: string | undefined): Promise<PoolDriver> {
    return this.pools.driver(pool);
  }
}
