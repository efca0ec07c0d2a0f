/**
 * `host.storage.pools`: the host's storage pools, each a directory `<host>/storage-pools/<name>/`
 * holding `pool.json` (driver, keys, description) and what its driver keeps of its own (an
 * overlay pool's shifted images). A pool appears by one rename of a staged directory and
 * disappears by one rename before its removal, so a killed process leaves a whole pool or none.
 *
 * Instances name their pool in their record; an instance made before pools existed names none
 * and is on the `dir` pool (its directory untouched), which is made when such instances exist.
 */
import { promises as fs } from 'node:fs';
import * as path from 'node:path';

import { AlreadyExists, Busy, InvalidArgument, NotFound } from '../../core/errors';
import { readJson, writeJsonAtomic } from '../../core/fs';
import { optionKeys, refuseUnknownKeys } from '../../core/keys';
import { clearStaging, renameNew, stagingPath } from '../../core/staging';
import type { StorageAction } from '../../events/lifecycle';
import { BtrfsPool } from './btrfs';
import { DirPool } from './dir';
import { unmountDeadStaging, unmountUnder } from './mounts';
import { LEGACY_POOL, POOL_FILE } from './names';
import { OverlayPool } from './overlay';
import type { PoolDriver, PoolDriverName, StoragePoolCreateOptions, StoragePoolInfo, StoredPool } from './types';

export { DEFAULT_POOL, LEGACY_POOL, POOL_FILE } from './names';
export const DEFAULT_DRIVER: PoolDriverName = 'overlay';
const DRIVERS: readonly PoolDriverName[] = ['dir', 'overlay', 'btrfs'];
const MAX_NAME_BYTES = 63;

const CREATE_KEYS = optionKeys<StoragePoolCreateOptions>({ driver: true, config: true, description: true });
const UPDATE_KEYS = optionKeys<StoragePoolUpdate>({ config: true, description: true });

/**
 * What `pools.update` changes: keys (a `null` value removes one) and the description.
 *
 * @example
 * ```ts
 * await host.storage.pools.update('fast', { description: 'instances of the CI runners' });
 * ```
 */
export interface StoragePoolUpdate {
  config?: Record<string, string | null>;
  description?: string;
}

/**
 * A pool's name, as LXD takes it (no "/", no white space) and as lxq keeps it on disk: not empty,
 * at most 63 bytes, no control character, not starting with "." (lxq's own entries).
 */
export function validatePoolName(name: unknown): string {
  if (typeof name !== 'string' || name.length === 0) throw new InvalidArgument('a storage pool name must be a non-empty string');
  if (Buffer.byteLength(name) > MAX_NAME_BYTES) throw new InvalidArgument(`storage pool name "${name.slice(0, 20)}…" is ${Buffer.byteLength(name)} bytes; the limit is ${MAX_NAME_BYTES}`);
  if (name.includes('/')) throw new InvalidArgument(`storage pool name ${JSON.stringify(name)} contains "/"`);
  if (/\s/u.test(name) || /\p{Cc}/u.test(name)) throw new InvalidArgument(`storage pool name ${JSON.stringify(name)} contains white space or a control character`);
  if (name.startsWith('.')) throw new InvalidArgument(`storage pool name ${JSON.stringify(name)} starts with "."`);
  return name;
}

function checkDriver(driver: unknown): PoolDriverName {
  if (!DRIVERS.includes(driver as PoolDriverName)) {
    throw new InvalidArgument(`unknown storage driver ${JSON.stringify(driver)}; this version has ${DRIVERS.map((d) => `"${d}"`).join(', ')}`);
  }
  return driver as PoolDriverName;
}

function checkStrings(what: string, config: unknown, nullable: boolean): Record<string, string | null> {
  if (config === undefined) return {};
  if (config === null || typeof config !== 'object' || Array.isArray(config)) throw new InvalidArgument(`${what} must be an object of string values`);
  for (const [k, v] of Object.entries(config)) {
    if (typeof v !== 'string' && !(nullable && v === null)) throw new InvalidArgument(`${what}: "${k}" must be a string${nullable ? ' or null' : ''}, got ${typeof v}`);
  }
  return config as Record<string, string | null>;
}

function checkDescription(description: unknown): string {
  if (description === undefined) return '';
  if (typeof description !== 'string' || /\p{Cc}/u.test(description.replace(/\n/g, ''))) throw new InvalidArgument('a storage pool description must be a string without control characters');
  return description;
}

/**
 * The host's storage pools (`host.storage.pools`): create, list, get, change and delete them.
 *
 * @example
 * ```ts
 * await host.storage.pools.create('ci', { driver: 'overlay' });
 * for (const p of await host.storage.pools.list()) console.log(p.name, p.driver, p.usedBy);
 * ```
 */
export class StoragePools {
  constructor(
    /** `<host>/storage-pools`. */
    private readonly dir: string,
    /** `<host>/instances`: where the directories that name a pool's data are (a btrfs pool's subvolumes). */
    private readonly instancesDir: string,
    /** The instances (by name) whose record names `pool` (LEGACY_POOL: also those naming none). */
    private readonly users: (pool: string) => Promise<string[]>,
    /** Tells the host's event stream what this process changed (LXD's storage-pool-* actions). */
    private readonly report: (action: StorageAction, name: string) => Promise<void> = async () => undefined,
    /** The custom volumes on `pool`, by name. */
    private readonly volumes: (pool: string) => Promise<string[]> = async () => [],
  ) {}

  private poolDir(name: string): string {
    return path.join(this.dir, name);
  }

  /**
   * Makes a pool (AlreadyExists if the name is taken). Nothing is written before the name,
   * driver and keys are checked.
   *
   * @example
   * ```ts
   * await host.storage.pools.create('ci', { driver: 'overlay' });
   * await host.create('runner1', { image: 'debian/12', pool: 'ci' });
   * ```
   */
  async create(name: string, options: StoragePoolCreateOptions): Promise<StoragePoolInfo> {
    validatePoolName(name);
    if (options === null || typeof options !== 'object') throw new InvalidArgument('storage pool options must be an object with a driver, e.g. { driver: "overlay" }');
    refuseUnknownKeys('storage pool', options, CREATE_KEYS);
    const driver = checkDriver(options.driver);
    if (name === LEGACY_POOL && driver !== 'dir') throw new InvalidArgument(`the pool name "${LEGACY_POOL}" is kept for a dir pool (instances made before pools are on it)`);
    const config = checkStrings('config', options.config, false) as Record<string, string>;
    this.driverFor(driver, name, config).checkConfig(config);
    const description = checkDescription(options.description);
    return this.make({ format: 'lxq-storage-pool', version: 1, name, driver, description, config, createdAt: new Date().toISOString() });
  }

  /**
   * Made whole in a staging directory (its driver's part included: a formatted loop file) and
   * renamed into place; then opened (mounted). A pool that cannot be opened is removed again.
   */
  private async make(stored: StoredPool): Promise<StoragePoolInfo> {
    await fs.mkdir(this.dir, { recursive: true, mode: 0o711 });
    await this.clearDead();
    const staging = stagingPath(this.dir, 'pool');
    await fs.mkdir(staging, { mode: 0o711 });
    try {
      await this.driverFor(stored.driver, stored.name, stored.config).setupPool(staging);
      await writeJsonAtomic(path.join(staging, POOL_FILE), stored);
      await renameNew(staging, this.poolDir(stored.name)).catch((e) => {
        if (e.code === 'EEXIST' || e.code === 'ENOTEMPTY') throw new AlreadyExists(`a storage pool named "${stored.name}" already exists`);
        throw e;
      });
    } finally {
      await fs.rm(staging, { recursive: true, force: true });
    }
    await this.driverFor(stored.driver, stored.name, stored.config)
      .openPool(this.instancesDir)
      .catch(async (e) => {
        await this.remove(stored);
        throw e;
      });
    await this.report('storage-pool-created', stored.name);
    return this.info(stored);
  }

  private async stored(name: string): Promise<StoredPool> {
    validatePoolName(name);
    return readJson<StoredPool>(path.join(this.poolDir(name), POOL_FILE)).catch(() => Promise.reject(new NotFound(`no storage pool named "${name}" on this host`)));
  }

  private async info(stored: StoredPool): Promise<StoragePoolInfo> {
    return {
      name: stored.name,
      driver: stored.driver,
      description: stored.description,
      config: { ...stored.config },
      usedBy: await this.users(stored.name),
      createdAt: new Date(stored.createdAt),
    };
  }

  async get(name: string): Promise<StoragePoolInfo> {
    return this.info(await this.stored(name));
  }

  /** Every pool, sorted by name. */
  async list(): Promise<StoragePoolInfo[]> {
    const names = (await fs.readdir(this.dir).catch(() => [] as string[])).filter((n) => !n.startsWith('.')).sort();
    const stored = await Promise.all(names.map((n) => readJson<StoredPool>(path.join(this.poolDir(n), POOL_FILE)).catch(() => undefined)));
    return Promise.all(stored.filter((s): s is StoredPool => s !== undefined).map((s) => this.info(s)));
  }

  /** Changes keys (null removes one) and the description; checked by the pool's driver first. */
  async update(name: string, update: StoragePoolUpdate): Promise<StoragePoolInfo> {
    const stored = await this.stored(name);
    if (update === null || typeof update !== 'object') throw new InvalidArgument('a storage pool update must be an object: { config, description }');
    refuseUnknownKeys('storage pool update', update, UPDATE_KEYS);
    const patch = checkStrings('config', update.config, true);
    const config = { ...stored.config };
    for (const [k, v] of Object.entries(patch)) {
      // As LXD's `unset`: removing a key that is not set is a mistake (a typo), not a no-op.
      if (v === null && !(k in config)) throw new InvalidArgument(`storage pool "${name}" has no key "${k}" set`);
      if (v === null) delete config[k];
      else config[k] = v;
    }
    this.driverFor(stored.driver, name, stored.config).checkConfig(config);
    const next: StoredPool = { ...stored, config, description: update.description === undefined ? stored.description : checkDescription(update.description) };
    await writeJsonAtomic(path.join(this.poolDir(name), POOL_FILE), next);
    await this.report('storage-pool-updated', name);
    return this.info(next);
  }

  /** Removes a pool nothing uses (Busy naming the instances otherwise). */
  async delete(name: string): Promise<void> {
    const stored = await this.stored(name);
    const users = await this.users(name);
    if (users.length) throw new Busy(`storage pool "${name}" is used by ${users.map((u) => `"${u}"`).join(', ')}; delete or move those instances first`, users);
    const volumes = await this.volumes(name);
    if (volumes.length) throw new Busy(`storage pool "${name}" holds the custom volumes ${volumes.map((v) => `"${v}"`).join(', ')}; delete them first`, volumes);
    await this.remove(stored);
    await this.report('storage-pool-deleted', name);
  }

  /** Out of the list by one rename, its driver's hold released (mount, loop device), then its files. */
  private async remove(stored: StoredPool): Promise<void> {
    const gone = stagingPath(this.dir, 'deleted-pool');
    await fs.rename(this.poolDir(stored.name), gone);
    await this.driverFor(stored.driver, stored.name, stored.config).destroyPool(gone);
    await unmountUnder(gone);
    await fs.rm(gone, { recursive: true, force: true });
  }

  /** What a dead process left in the pools' directory: a pool half made or half deleted (a loop mount in it detached first). */
  private async clearDead(): Promise<void> {
    await unmountDeadStaging(this.dir);
    await clearStaging(this.dir);
  }

  /** @internal Host.open: every pool made usable again (a loop pool mounted after a reboot), and what dead processes left cleared. */
  async open(): Promise<void> {
    await this.clearDead();
    for (const name of (await fs.readdir(this.dir).catch(() => [] as string[])).filter((n) => !n.startsWith('.'))) {
      const stored = await readJson<StoredPool>(path.join(this.poolDir(name), POOL_FILE)).catch(() => undefined);
      if (stored) await this.driverFor(stored.driver, name, stored.config).openPool(this.instancesDir);
    }
  }

  /** @internal Makes the pool `name` with `driver` if there is none of that name (Host.open: the default pool; the dir pool of older instances). */
  async ensure(name: string, driver: PoolDriverName): Promise<void> {
    if (await fs.lstat(path.join(this.poolDir(name), POOL_FILE)).then(() => true, () => false)) return;
    await this.make({ format: 'lxq-storage-pool', version: 1, name, driver, description: '', config: {}, createdAt: new Date().toISOString() }).catch((e) => {
      if (!(e instanceof AlreadyExists)) throw e; // another process made it first
    });
  }

  /** @internal The driver of the pool an instance's record names (none: the dir pool, as before pools). */
  async driver(pool: string | undefined): Promise<PoolDriver> {
    if (pool === undefined) return this.driverFor('dir', LEGACY_POOL, {});
    const stored = await this.stored(pool);
    return this.driverFor(stored.driver, pool, stored.config);
  }

  /** @internal Checks that `pool` exists and can hold a root filesystem of a container (NotFound otherwise). */
  async checkUsable(pool: string): Promise<void> {
    await this.stored(pool);
  }

  private driverFor(driver: PoolDriverName, name: string, config: Record<string, string>): PoolDriver {
    if (driver === 'btrfs') return new BtrfsPool(this.poolDir(name), config);
    return driver === 'overlay' ? new OverlayPool(this.poolDir(name)) : new DirPool();
  }
}
