/**
 * An LXD server's storage through /1.0/storage-pools: its pools, and each pool's custom volumes
 * with their snapshots, behind the interface of a local host's (lib/storage/api.ts). Names,
 * volume keys and descriptions are checked with lxq's rules before anything is sent; a pool's
 * keys are the server's to judge (its drivers are not lxq's), lxq refuses only what is not text.
 */
import { randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { parse } from 'yaml';

import { checkLongOptions, currentSignal, LONG_OPTION_KEYS, type LongOptions, longOperation } from '../../core/abort';
import { AlreadyExists, InvalidArgument, NotFound, NotSupported } from '../../core/errors';
import { replaceFile } from '../../core/fs';
import { run } from '../../core/run';
import { refuseControlChars } from '../../core/guard';
import { optionKeys, refuseUnknownKeys } from '../../core/keys';
import type { HostStorageApi, HostStoragePools, HostStorageVolumes } from '../../storage/api';
import { type StoragePoolUpdate, validatePoolName } from '../../storage/pools/pools';
import type { StoragePoolCreateOptions, StoragePoolInfo } from '../../storage/pools/types';
import { checkVolumeConfig, checkVolumeCreate, checkVolumeDescription, validateVolumeName } from '../../storage/volumes/names';
import type { StorageVolumeCreateOptions, StorageVolumeInfo, StorageVolumeUpdate, VolumeExportOptions, VolumeSnapshotInfo } from '../../storage/volumes/types';
import type { StorageAction } from '../../events/lifecycle';
import type { LxdClient } from './client';
import type { LxdObject } from './convert';

const POOL_CREATE_KEYS = optionKeys<StoragePoolCreateOptions>({ driver: true, config: true, description: true });
const POOL_UPDATE_KEYS = optionKeys<StoragePoolUpdate>({ config: true, description: true });
const VOLUME_UPDATE_KEYS = optionKeys<StorageVolumeUpdate>({ config: true, description: true });
const EXPORT_KEYS = optionKeys<VolumeExportOptions>({ volumeOnly: true, ...LONG_OPTION_KEYS });
const IMPORT_KEYS = optionKeys<LongOptions>(LONG_OPTION_KEYS);
/** The longest silence of a backup's upload or download (a large one takes long, its bytes flowing all the while). */
const TRANSFER_SILENCE_MS = 10 * 60_000;

/** An export's or import's file and options, checked before anything is sent. */
function checkTransfer(file: unknown, options: unknown, keys: readonly string[]): void {
  if (typeof file !== 'string' || !file) throw new InvalidArgument('a volume export or import needs a file path');
  if (options === null || typeof options !== 'object') throw new InvalidArgument('volume export and import options must be an object');
  refuseUnknownKeys('volume transfer', options as Record<string, unknown>, keys);
  checkLongOptions(options as LongOptions);
}

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

/**
 * LXD 5.0 reads a volume snapshot's `expires_at` in an archive's index.yaml without checking it is
 * there, and its daemon dies without it (lxq's exports before it wrote the key): such an archive
 * is refused here, before it is sent. What else the archive holds is the server's to judge.
 */
async function refuseCrashingArchive(file: string): Promise<void> {
  const text = await run('tar', ['--extract', '--to-stdout', '--file', file, '--', 'backup/index.yaml'], { maxBuffer: 2 ** 20 }).catch(() => undefined);
  if (text === undefined) return; // not readable here: the server says what is wrong with it
  let index: { config?: { volume_snapshots?: { name?: unknown; expires_at?: unknown }[] } } | undefined;
  try {
    index = parse(text, { customTags: [], maxAliasCount: 16, schema: 'core' });
  } catch {
    return;
  }
  const snapshots = index?.config?.volume_snapshots;
  const bare = Array.isArray(snapshots) ? snapshots.find((s) => s !== null && typeof s === 'object' && s.expires_at === undefined) : undefined;
  if (bare) throw new InvalidArgument(`${file}: snapshot ${JSON.stringify(bare.name)} has no expires_at in backup/index.yaml, which an LXD 5.0 server cannot read (its daemon crashes): export the volume again with this lxq`);
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

  /**
   * LXD's own backup of the volume (POST …/backups: its operation waited for; zstd, not
   * optimized: the layout lxq's `import` reads too), its `/export` streamed into `file` (replaced
   * whole or not at all); the backup is deleted from the server after, whatever happened.
   */
  async export(name: string, file: string, options: VolumeExportOptions = {}): Promise<void> {
    validateVolumeName(name);
    checkTransfer(file, options, EXPORT_KEYS);
    if (options.volumeOnly !== undefined && typeof options.volumeOnly !== 'boolean') throw new InvalidArgument('volumeOnly must be a boolean');
    const target = path.resolve(file);
    await this.get(name); // NotFound before anything is made
    await longOperation(`exporting storage volume ${name} of ${this.client.where}`, options, async () => {
      const backup = `lxq-export-${randomBytes(6).toString('hex')}`;
      await this.client.call('POST', this.url(name, '/backups'), { name: backup, volume_only: options.volumeOnly === true, optimized_storage: false, compression_algorithm: 'zstd' });
      try {
        await replaceFile(target, 0o600, async (handle) => void (await this.client.download(this.url(name, `/backups/${backup}/export`), handle, { signal: currentSignal(), timeoutMs: TRANSFER_SILENCE_MS })));
      } finally {
        await this.client.call('DELETE', this.url(name, `/backups/${backup}`)).catch(() => undefined);
      }
    });
  }

  /**
   * A volume from an archive (lxq's `export`, LXD's `lxc storage volume export`) sent whole to the
   * server (POST with the tarball), which reads and judges it; `name`: LXD's X-LXD-name
   * (default: the archive's own). AlreadyExists for a name taken.
   */
  async import(file: string, name?: string, options: LongOptions = {}): Promise<StorageVolumeInfo> {
    if (name !== undefined) validateVolumeName(name);
    checkTransfer(file, options, IMPORT_KEYS);
    await fs.access(file).catch(() => Promise.reject(new NotFound(`${file} does not exist`)));
    await refuseCrashingArchive(file);
    if (name !== undefined && (await this.exists(name))) throw new AlreadyExists(`a storage volume named "${name}" already exists on pool "${this.pool}" of ${this.client.where}`);
    const op = await longOperation(`importing ${file} to ${this.client.where}`, options, () =>
      this.client.call('POST', this.url(), undefined, { stream: file, headers: name === undefined ? {} : { 'X-LXD-name': name }, signal: currentSignal(), timeoutMs: TRANSFER_SILENCE_MS }),
    );
    // The operation names the volume it made (the archive's name when none was given).
    const made = (op?.resources?.storage_volumes as string[] | undefined)?.[0]?.split('?')[0].split('/').pop();
    return this.get(name ?? decodeURIComponent(made ?? ''));
  }

  private exists(name: string): Promise<boolean> {
    return this.client.request('GET', this.url(name)).then(() => true, (e) => (e instanceof NotFound ? false : Promise.reject(e)));
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
