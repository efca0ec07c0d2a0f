/**
 * An LXD server's storage through /1.0/storage-pools: its pools, and each pool's custom volumes
 * with their snapshots, behind the interface of a local host's (lib/storage/api.ts). Names,
 * volume keys and descriptions are checked with lxq's rules before anything is sent; a pool's
 * keys are the server's to judge (its drivers are not lxq's), lxq refuses only what is not text.
 */
import { InvalidArgument, NotSupported } from '../../core/errors';
import { refuseControlChars } from '../../core/guard';
import { optionKeys, refuseUnknownKeys } from '../../core/keys';
import type { HostStorageApi, HostStoragePools, HostStorageVolumes } from '../../storage/api';
import { type StoragePoolUpdate, validatePoolName } from '../../storage/pools/pools';
import type { StoragePoolCreateOptions, StoragePoolInfo } from '../../storage/pools/types';
import { checkVolumeConfig, checkVolumeCreate, checkVolumeDescription, validateVolumeName } from '../../storage/volumes/names';
import type { StorageVolumeCreateOptions, StorageVolumeInfo, StorageVolumeUpdate, VolumeSnapshotInfo } from '../../storage/volumes/types';
import type { StorageAction } from '../../events/lifecycle';
import type { LxdClient } from './client';
import type { LxdObject } from './convert';

const POOL_CREATE_KEYS = optionKeys<StoragePoolCreateOptions>({ driver: true, config: true, description: true });
const POOL_UPDATE_KEYS = optionKeys<StoragePoolUpdate>({ config: true, description: true });
const VOLUME_UPDATE_KEYS = optionKeys<StorageVolumeUpdate>({ config: true, description: true });

/** Marks the server's events of `actions` on `name` as this process's own until `done()` (RemoteEvents.expect). */
export type OwnChanges = (name: string, actions: StorageAction[]) => () => void;

/** `op` with its storage events counted as this process's own. */
async function owned<T>(own: OwnChanges | undefined, name: string, actions: StorageAction[], op: () => Promise<T>): Promise<T> {
  const done = own?.(name, actions);
  try {
    return await op();
  } finally {
    done?.();
  }
}

/** The instance names among LXD's `used_by` URLs (profiles and volumes there too are left out). */
function instancesIn(usedBy: unknown): string[] {
  const urls = Array.isArray(usedBy) ? (usedBy as string[]) : [];
  return urls
    .map((u) => u.split('?')[0])
    .filter((u) => /^\/1\.0\/(instances|containers|virtual-machines)\/[^/]+$/.test(u))
    .map((u) => decodeURIComponent(u.slice(u.lastIndexOf('/') + 1)))
    .sort();
}

const createdAt = (m: LxdObject) => new Date((m.created_at as string | undefined) ?? 0);

/** A pool's keys as text: LXD judges their meaning, lxq that none carries a control character. */
function poolConfig(config: unknown, nullable: boolean): Record<string, string | null> {
  if (config === undefined) return {};
  if (config === null || typeof config !== 'object' || Array.isArray(config)) throw new InvalidArgument("a storage pool's config must be an object of string values");
  for (const [k, v] of Object.entries(config)) {
    refuseControlChars('storage pool key', k);
    if (v === null && nullable) continue;
    if (typeof v !== 'string') throw new InvalidArgument(`config: "${k}" must be a string${nullable ? ' or null' : ''}, got ${typeof v}`);
    refuseControlChars(`storage pool key "${k}"`, v);
  }
  return config as Record<string, string | null>;
}

function description(d: unknown, what: string): string | undefined {
  if (d === undefined) return undefined;
  if (typeof d !== 'string') throw new InvalidArgument(`a ${what}'s description must be a string`);
  return refuseControlChars(`${what} description`, d, { allowTab: true });
}

/** `config` with `patch` over it (a null removes a key; InvalidArgument if it is not set). */
function patched(config: Record<string, string>, patch: Record<string, string | null>, what: string): Record<string, string> {
  const next = { ...config };
  for (const [k, v] of Object.entries(patch)) {
    if (v === null && !(k in next)) throw new InvalidArgument(`${what} has no key "${k}" set`);
    if (v === null) delete next[k];
    else next[k] = v;
  }
  return next;
}

/**
 * The pools of an LXD server (`remote.storage.pools`).
 *
 * @example
 * ```ts
 * const lxd = await Host.connect();
 * for (const p of await lxd.storage.pools.list()) console.log(p.name, p.driver, p.usedBy);
 * ```
 */
export class RemoteStoragePools implements HostStoragePools {
  constructor(
    private readonly client: LxdClient,
    private readonly own?: OwnChanges,
  ) {}

  private url(name?: string, query: Record<string, string> = {}): string {
    return this.client.url(name === undefined ? '/1.0/storage-pools' : `/1.0/storage-pools/${encodeURIComponent(name)}`, query);
  }

  async list(): Promise<StoragePoolInfo[]> {
    const all = (await this.client.request('GET', this.url(undefined, { recursion: '1' }))).metadata as LxdObject[];
    return all.map(poolInfo).sort((a, b) => (a.name < b.name ? -1 : 1));
  }

  async get(name: string): Promise<StoragePoolInfo> {
    validatePoolName(name);
    return poolInfo((await this.client.request('GET', this.url(name))).metadata as LxdObject);
  }

  async create(name: string, options: StoragePoolCreateOptions): Promise<StoragePoolInfo> {
    validatePoolName(name);
    if (options === null || typeof options !== 'object') throw new InvalidArgument('storage pool options must be an object, e.g. { driver: "dir" }');
    refuseUnknownKeys('storage pool', options, POOL_CREATE_KEYS);
    if (typeof options.driver !== 'string' || !/^[a-z][a-z0-9_-]*$/.test(options.driver)) throw new InvalidArgument(`a storage pool's "driver" must be a driver's name, got ${JSON.stringify(options.driver)}`);
    if (options.driver === 'overlay') throw new NotSupported(`"overlay" is lxq's own pool driver; ${this.client.where} has LXD's (dir, btrfs, zfs, lvm…)`);
    const config = poolConfig(options.config, false);
    await owned(this.own, name, ['storage-pool-created'], () => this.client.call('POST', this.url(), { name, driver: options.driver, config, description: description(options.description, 'storage pool') ?? '' }));
    return this.get(name);
  }

  async update(name: string, update: StoragePoolUpdate): Promise<StoragePoolInfo> {
    validatePoolName(name);
    if (update === null || typeof update !== 'object') throw new InvalidArgument('a storage pool update must be an object: { config, description }');
    refuseUnknownKeys('storage pool update', update, POOL_UPDATE_KEYS);
    const patch = poolConfig(update.config, true);
    const text = description(update.description, 'storage pool');
    const current = (await this.client.request('GET', this.url(name))).metadata as LxdObject;
    const config = patched((current.config ?? {}) as Record<string, string>, patch, `storage pool "${name}"`);
    // PUT: LXD's PATCH merges config and cannot remove a key.
    await owned(this.own, name, ['storage-pool-updated'], () => this.client.call('PUT', this.url(name), { config, description: text ?? current.description ?? '' }));
    return this.get(name);
  }

  async delete(name: string): Promise<void> {
    validatePoolName(name);
    await owned(this.own, name, ['storage-pool-deleted'], () => this.client.call('DELETE', this.url(name)));
  }
}

function poolInfo(m: LxdObject): StoragePoolInfo {
  return { name: m.name as string, driver: m.driver as string, description: (m.description as string | undefined) ?? '', config: { ...((m.config ?? {}) as Record<string, string>) }, usedBy: instancesIn(m.used_by), createdAt: createdAt(m) };
}

/**
 * The custom volumes of one pool of an LXD server (`remote.storage.pool(name).volumes`).
 *
 * @example
 * ```ts
 * const lxd = await Host.connect();
 * await lxd.storage.pool('default').volumes.create('data', { contentType: 'filesystem' });
 * ```
 */
export class RemoteStorageVolumes implements HostStorageVolumes {
  constructor(
    private readonly client: LxdClient,
    private readonly pool: string,
    private readonly own?: OwnChanges,
  ) {}

  /** `op` with the events of `actions` on the volume (or snapshot) `name` of this pool counted as this process's own. */
  private owned<T>(name: string, actions: StorageAction[], op: () => Promise<T>): Promise<T> {
    return owned(this.own, `${this.pool}/${name}`, actions, op);
  }

  private url(name?: string, rest = '', query: Record<string, string> = {}): string {
    const base = `/1.0/storage-pools/${encodeURIComponent(this.pool)}/volumes/custom`;
    return this.client.url(name === undefined ? base : `${base}/${encodeURIComponent(name)}${rest}`, query);
  }

  async create(name: string, options: StorageVolumeCreateOptions = {}): Promise<StorageVolumeInfo> {
    const { contentType, config, description } = checkVolumeCreate(name, options);
    await this.owned(name, ['storage-volume-created'], () => this.client.call('POST', this.url(), { name, type: 'custom', content_type: contentType, config, description }));
    return this.get(name);
  }

  async get(name: string): Promise<StorageVolumeInfo> {
    validateVolumeName(name);
    return this.info((await this.client.request('GET', this.url(name))).metadata as LxdObject);
  }

  async list(): Promise<StorageVolumeInfo[]> {
    const all = (await this.client.request('GET', this.url(undefined, '', { recursion: '1' }))).metadata as LxdObject[];
    // LXD 5.0 lists a volume's snapshots beside it ("volume/snapshot"): they are snapshots(name)'s.
    return all
      .filter((m) => !(m.name as string).includes('/'))
      .map((m) => this.info(m)).sort((a, b) => (a.name < b.name ? -1 : 1));
  }

  async update(name: string, update: StorageVolumeUpdate): Promise<StorageVolumeInfo> {
    validateVolumeName(name);
    if (update === null || typeof update !== 'object') throw new InvalidArgument('a storage volume update must be an object: { config, description }');
    refuseUnknownKeys('storage volume update', update, VOLUME_UPDATE_KEYS);
    const patch = checkVolumeConfig(update.config, true);
    const text = update.description === undefined ? undefined : checkVolumeDescription(update.description);
    const current = (await this.client.request('GET', this.url(name))).metadata as LxdObject;
    const config = patched((current.config ?? {}) as Record<string, string>, patch, `storage volume "${name}"`);
    await this.owned(name, ['storage-volume-updated'], () => this.client.call('PUT', this.url(name), { config, description: text ?? current.description ?? '' }));
    return this.get(name);
  }

  async rename(name: string, newName: string): Promise<StorageVolumeInfo> {
    validateVolumeName(name);
    validateVolumeName(newName);
    await this.owned(newName, ['storage-volume-renamed'], () => this.client.call('POST', this.url(name), { name: newName }));
    return this.get(newName);
  }

  async delete(name: string): Promise<void> {
    validateVolumeName(name);
    await this.owned(name, ['storage-volume-deleted'], () => this.client.call('DELETE', this.url(name)));
  }

  async snapshot(name: string, snapshotName?: string): Promise<VolumeSnapshotInfo> {
    validateVolumeName(name);
    if (snapshotName !== undefined) validateVolumeName(snapshotName, 'volume snapshot');
    const before = new Set((await this.snapshots(name)).map((s) => s.name));
    await this.owned(`${name}/${snapshotName ?? ''}`, ['storage-volume-snapshot-created'], () => this.client.call('POST', this.url(name, '/snapshots'), snapshotName === undefined ? {} : { name: snapshotName }));
    const after = await this.snapshots(name);
    // LXD names an unnamed one itself (snap0, snap1…): the one that was not there before.
    const made = snapshotName === undefined ? after.find((s) => !before.has(s.name)) : after.find((s) => s.name === snapshotName);
    if (!made) throw new InvalidArgument(`LXD made no snapshot of storage volume "${name}"`);
    return made;
  }

  async snapshots(name: string): Promise<VolumeSnapshotInfo[]> {
    validateVolumeName(name);
    const all = (await this.client.request('GET', this.url(name, '/snapshots', { recursion: '1' }))).metadata as LxdObject[];
    // LXD gives "volume/snapshot" as a snapshot's name in some versions, the snapshot's alone in others.
    return all.map((m) => ({ name: (m.name as string).split('/').pop() as string, volume: name, createdAt: createdAt(m) })).sort((a, b) => a.createdAt.getTime() - b.createdAt.getTime());
  }

  async restore(name: string, snapshotName: string): Promise<void> {
    validateVolumeName(name);
    validateVolumeName(snapshotName, 'volume snapshot');
    await this.owned(`${name}/${snapshotName}`, ['storage-volume-snapshot-restored'], () => this.client.call('PUT', this.url(name), { restore: snapshotName }));
  }

  async deleteSnapshot(name: string, snapshotName: string): Promise<void> {
    validateVolumeName(name);
    validateVolumeName(snapshotName, 'volume snapshot');
    await this.owned(`${name}/${snapshotName}`, ['storage-volume-snapshot-deleted'], () => this.client.call('DELETE', this.url(name, `/snapshots/${encodeURIComponent(snapshotName)}`)));
  }

  private info(m: LxdObject): StorageVolumeInfo {
    return {
      name: m.name as string,
      pool: this.pool,
      contentType: m.content_type === 'block' ? 'block' : 'filesystem',
      description: (m.description as string | undefined) ?? '',
      config: { ...((m.config ?? {}) as Record<string, string>) },
      usedBy: instancesIn(m.used_by),
      createdAt: createdAt(m),
    };
  }
}

/**
 * An LXD server's storage (`remote.storage`), as a local host's `host.storage`.
 *
 * @example
 * ```ts
 * const lxd = await Host.connect();
 * const v = await lxd.storage.pool('default').volumes.create('data');
 * await lxd.create('web1', { image: 'debian/12', devices: { data: { type: 'disk', pool: 'default', source: v.name, path: '/srv' } } });
 * ```
 */
export class RemoteStorage implements HostStorageApi {
  readonly pools: RemoteStoragePools;

  constructor(
    private readonly client: LxdClient,
    private readonly own?: OwnChanges,
  ) {
    this.pools = new RemoteStoragePools(client, own);
  }

  pool(name: string): { readonly name: string; readonly volumes: RemoteStorageVolumes } {
    validatePoolName(name);
    return { name, volumes: new RemoteStorageVolumes(this.client, name, this.own) };
  }
}
