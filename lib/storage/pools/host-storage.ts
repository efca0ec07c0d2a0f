/**
 * What a local host keeps of storage (`host.storage`): its pools, the root disk an instance is
 * created with (`pool`, or LXD's `root` disk device), and the pools every host has.
 */
import * as path from 'node:path';

import { InvalidArgument, NotSupported } from '../../core/errors';
import { parseSize } from '../../core/units';
import type { StorageAction } from '../../events/lifecycle';
import { DEFAULT_DRIVER, DEFAULT_POOL, LEGACY_POOL, StoragePools, validatePoolName } from './pools';
import { POOLS_DIR } from './names';
import type { PoolDriver } from './types';

/** What storage needs of an instance's record. */
export interface PoolUserRecord {
  name: string;
  type: string;
  pool?: string;
}

/** The keys of LXD's root disk device lxq takes in this version. */
const ROOT_DISK_KEYS = ['type', 'path', 'pool', 'size'];

/** A root disk's `size` in bytes (InvalidArgument naming it). */
function rootSize(size: unknown): number {
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

  constructor(
    hostPath: string,
    private readonly records: () => Promise<PoolUserRecord[]>,
    report?: (action: StorageAction, name: string) => Promise<void>,
  ) {
    this.pools = new StoragePools(
      path.join(hostPath, POOLS_DIR),
      path.join(hostPath, 'instances'),
      // A VM made before pools names none: its disk is a file of its directory, on no pool.
      async (pool) => (await this.records()).filter((r) => (r.type === 'container' ? r.pool ?? LEGACY_POOL : r.pool) === pool).map((r) => r.name),
      report,
    );
  }

  /** @internal Host.open: the default pool, and the dir pool where containers made before pools exist. */
  async open(): Promise<void> {
    await this.pools.ensure(DEFAULT_POOL, DEFAULT_DRIVER);
    if ((await this.records()).some((r) => r.type === 'container' && r.pool === undefined)) await this.pools.ensure(LEGACY_POOL, 'dir');
    await this.pools.open();
  }

  /**
   * @internal
   * The pool a new instance's root goes on, from `pool` or a `root` disk device (`{ type: 'disk',
   * path: '/', pool }`, LXD's form), and the devices without that root disk. An instance without
   * either goes on the default pool. Checked before anything is written: an unknown pool is
   * NotFound, two different pools or a key this version cannot honour are refused.
   */
  async rootOf(type: string, options: { pool?: unknown; devices?: unknown }): Promise<{ pool: string | undefined; devices: unknown; rootSize?: number }> {
    let devices = options.devices;
    let fromDevice: string | undefined;
    let size: number | undefined;
    const root = (devices as Record<string, unknown> | undefined)?.root as Record<string, unknown> | undefined;
    if (root !== null && typeof root === 'object' && root.type === 'disk' && root.path === '/') {
      for (const key of Object.keys(root)) {
        if (!ROOT_DISK_KEYS.includes(key)) throw new InvalidArgument(`device "root": unknown key "${key}" for a root disk; known: ${ROOT_DISK_KEYS.map((k) => `"${k}"`).join(', ')}`);
      }
      if (root.pool === undefined) throw new InvalidArgument('device "root": "pool" is required (the storage pool of the root disk)');
      fromDevice = validatePoolName(root.pool);
      if (root.size !== undefined) size = rootSize(root.size);
      const { root: _root, ...rest } = devices as Record<string, unknown>;
      devices = rest;
    }
    if (options.pool !== undefined) validatePoolName(options.pool);
    if (options.pool !== undefined && fromDevice !== undefined && options.pool !== fromDevice) {
      throw new InvalidArgument(`"pool" (${JSON.stringify(options.pool)}) and the root disk's pool (${JSON.stringify(fromDevice)}) differ; give one`);
    }
    const pool = (options.pool as string | undefined) ?? fromDevice ?? DEFAULT_POOL;
    await this.pools.checkUsable(pool);
    if (size === undefined) return { pool, devices };
    // A VM's size is its disk's (checked against its image's when the disk is made), on every pool.
    if (type === 'vm') return { pool, devices, rootSize: size };
    const refusal = await (await this.pools.driver(pool)).rootLimitRefusal();
    if (refusal !== undefined) throw new NotSupported(`device "root": "size" cannot be enforced on pool "${pool}": ${refusal}`);
    return { pool, devices, rootSize: size };
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

  /** @internal The driver of the pool an instance's record names (none: the dir pool, as before pools). */
  driver(pool: string | undefined): Promise<PoolDriver> {
    return this.pools.driver(pool);
  }
}
