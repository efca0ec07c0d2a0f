/**
 * `host.storage.pool(name).volumes`: a pool's custom volumes, each a directory
 * `<pool>/volumes/<name>/` holding `volume.json` and what the pool's driver keeps of its data
 * (lib/storage/volumes/dir.ts, btrfs.ts), and its snapshots in `snapshots/<name>/`. A volume or
 * snapshot appears by one rename of a staged directory and disappears by one rename before its
 * removal, so a killed process leaves a whole one or none; the next Host.open clears the rest.
 */
import { promises as fs } from 'node:fs';
import * as path from 'node:path';

import { AlreadyExists, Busy, InvalidArgument, NotFound, NotSupported } from '../../core/errors';
import { readJson, writeJsonAtomic } from '../../core/fs';
import { FileLock } from '../../core/lock';
import { optionKeys, refuseUnknownKeys } from '../../core/keys';
import { clearStaging, isStaging, renameNew, stagingPath } from '../../core/staging';
import type { StorageAction } from '../../events/lifecycle';
import { checkVolumeConfig, checkVolumeCreate, checkVolumeDescription, DEFAULT_BLOCK_BYTES, validateVolumeName, VOLUME_FILE, volumeBytes } from './names';
import { VolumeSnapshots } from './snapshots';
import type { StorageVolumeCreateOptions, StorageVolumeInfo, StorageVolumeUpdate, StoredVolume, VolumeBackend, VolumeExportOptions, VolumeSnapshotInfo } from './types';
import type { LongOptions } from '../../core/abort';

/* eslint-disable-next-line @typescript-eslint/no-require-imports -- export and import are loaded when used */
const volumeTransfer = (): typeof import('./transfer') => require('./transfer');

export const VOLUMES_DIR = 'volumes';
const UPDATE_KEYS = optionKeys<StorageVolumeUpdate>({ config: true, description: true });

/** What the volumes of one pool need of the host. */
export interface VolumesContext {
  pool: string;
  /** The pool's directory (NotFound from `backend` if the pool does not exist). */
  poolDir: string;
  /** The pool's driver's way of keeping volumes. */
  backend(): Promise<VolumeBackend>;
  /** The instances whose devices name the volume. */
  users(volume: string): Promise<string[]>;
  /** Those of `names` that are running. */
  running(names: string[]): Promise<string[]>;
  /** Tells the host's event stream (LXD's storage-volume-* actions). */
  report(action: StorageAction, name: string, previous?: string): Promise<void>;
  /** Where an export notes its partial file (lib/storage/partials.ts: removed by Host.open if this process dies). */
  partials: string;
}

/**
 * A pool's custom volumes (LXD's `lxc storage volume`).
 *
 * @example
 * ```ts
 * const volumes = host.storage.pool('default').volumes;
 * await volumes.create('data', { contentType: 'filesystem' });
 * await host.create('web1', { image: 'debian/12', devices: { data: { type: 'disk', pool: 'default', source: 'data', path: '/srv' } } });
 * ```
 */
export class StorageVolumes {
  private readonly snaps: VolumeSnapshots;

  constructor(private readonly ctx: VolumesContext) {
    this.snaps = new VolumeSnapshots(this);
  }

  /** @internal */
  get context(): VolumesContext {
    return this.ctx;
  }

  /** @internal `<pool>/volumes`. */
  get dir(): string {
    return path.join(this.ctx.poolDir, VOLUMES_DIR);
  }

  /** @internal */
  volumeDir(name: string): string {
    return path.join(this.dir, validateVolumeName(name));
  }

  /** @internal Runs `op` holding the pool's volume lock (one change of a pool's volumes at a time, across processes). */
  async locked<T>(op: () => Promise<T>): Promise<T> {
    await this.ctx.backend(); // NotFound for a pool that does not exist, before anything is made
    await fs.mkdir(this.dir, { recursive: true, mode: 0o711 });
    const lock = new FileLock(path.join(this.ctx.poolDir, 'volumes.lock'), `the volumes of pool ${this.ctx.pool}`);
    try {
      return await lock.hold(op);
    } finally {
      await lock.close();
    }
  }

  /** @internal The stored record (NotFound naming the volume). */
  async stored(name: string): Promise<StoredVolume> {
    const dir = this.volumeDir(name);
    return readJson<StoredVolume>(path.join(dir, VOLUME_FILE)).catch(() =>
      Promise.reject(new NotFound(`no storage volume named "${name}" on pool "${this.ctx.pool}"`)),
    );
  }

  private async info(name: string, s: StoredVolume): Promise<StorageVolumeInfo> {
    return {
      name,
      pool: this.ctx.pool,
      contentType: s.contentType,
      description: s.description,
      config: { ...s.config },
      usedBy: await this.ctx.users(name),
      createdAt: new Date(s.createdAt),
    };
  }

  /**
   * Makes a volume (AlreadyExists if the name is taken): an empty filesystem, or a sparse block
   * disk of `size` (default 10GiB). Nothing is written before the name and keys are checked.
   *
   * @example
   * ```ts
   * await host.storage.pool('default').volumes.create('data', {});
   * ```
   */
  async create(name: string, options: StorageVolumeCreateOptions = {}): Promise<StorageVolumeInfo> {
    const { contentType, config, description, bytes: given } = checkVolumeCreate(name, options);
    const bytes = given ?? (contentType === 'block' ? DEFAULT_BLOCK_BYTES : undefined);
    const stored: StoredVolume = { format: 'lxq-storage-volume', version: 1, contentType, description, config, createdAt: new Date().toISOString() };
    const backend = await this.ctx.backend();
    if (contentType === 'filesystem' && bytes !== undefined) {
      const why = await backend.sizeRefusal();
      if (why) throw new NotSupported(`"size" of a filesystem volume cannot be enforced on pool "${this.ctx.pool}": ${why}`);
    }
    await this.locked(async () => {
      if (await fs.lstat(this.volumeDir(name)).then(() => true, () => false)) throw new AlreadyExists(`a storage volume named "${name}" already exists on pool "${this.ctx.pool}"`);
      const staging = stagingPath(this.dir, 'volume');
      await fs.mkdir(staging, { mode: 0o711 });
      try {
        await backend.create(staging, contentType, bytes);
        await writeJsonAtomic(path.join(staging, VOLUME_FILE), stored);
        await renameNew(staging, this.volumeDir(name));
      } catch (e) {
        await backend.remove(staging).catch(() => undefined);
        throw e;
      } finally {
        await fs.rm(staging, { recursive: true, force: true });
      }
    });
    await this.ctx.report('storage-volume-created', name);
    return this.info(name, stored);
  }

  /** @example `const v = await host.storage.pool('default').volumes.get('data');` */
  async get(name: string): Promise<StorageVolumeInfo> {
    return this.info(name, await this.stored(name));
  }

  /** Every volume of the pool, sorted by name. @example `for (const v of await host.storage.pool('default').volumes.list()) console.log(v.name);` */
  async list(): Promise<StorageVolumeInfo[]> {
    const names = (await fs.readdir(this.dir).catch(() => [] as string[])).filter((n) => !n.startsWith('.')).sort();
    const out: StorageVolumeInfo[] = [];
    for (const n of names) {
      const s = await readJson<StoredVolume>(path.join(this.dir, n, VOLUME_FILE)).catch(() => undefined);
      if (s) out.push(await this.info(n, s));
    }
    return out;
  }

  /**
   * Changes keys (null removes one) and the description: `size` grows a block volume's disk
   * (never shrinks it) or sets a btrfs filesystem volume's limit; `security.shared`.
   *
   * @example
   * ```ts
   * await host.storage.pool('default').volumes.update('disk1', { config: { size: '20GiB' } });
   * ```
   */
  async update(name: string, update: StorageVolumeUpdate): Promise<StorageVolumeInfo> {
    if (update === null || typeof update !== 'object') throw new InvalidArgument('a storage volume update must be an object: { config, description }');
    refuseUnknownKeys('storage volume update', update, UPDATE_KEYS);
    const patch = checkVolumeConfig(update.config, true);
    const description = update.description === undefined ? undefined : checkVolumeDescription(update.description);
    const next = await this.locked(async () => {
      const s = await this.stored(name);
      const config = { ...s.config };
      for (const [k, v] of Object.entries(patch)) {
        if (v === null && !(k in config)) throw new InvalidArgument(`storage volume "${name}" has no key "${k}" set`);
        if (v === null) delete config[k];
        else config[k] = v;
      }
      if (patch.size === null && s.contentType === 'block') throw new InvalidArgument('a block volume\'s "size" cannot be removed (it is its disk\'s size)');
      const backend = await this.ctx.backend();
      if (typeof patch.size === 'string' && patch.size !== s.config.size) await this.resize(backend, name, s, patch.size);
      const changed: StoredVolume = { ...s, config, description: description ?? s.description };
      await writeJsonAtomic(path.join(this.volumeDir(name), VOLUME_FILE), changed);
      return changed;
    });
    await this.ctx.report('storage-volume-updated', name);
    return this.info(name, next);
  }

  private async resize(backend: VolumeBackend, name: string, s: StoredVolume, size: string): Promise<void> {
    const bytes = volumeBytes(size, s.contentType);
    if (s.contentType === 'block' && bytes < volumeBytes(s.config.size ?? `${DEFAULT_BLOCK_BYTES}B`, 'block')) {
      throw new InvalidArgument(`"size" ${JSON.stringify(size)} would shrink block volume "${name}"; a block volume only grows`);
    }
    if (s.contentType === 'filesystem') {
      const why = await backend.sizeRefusal();
      if (why) throw new NotSupported(`"size" of a filesystem volume cannot be enforced on pool "${this.ctx.pool}": ${why}`);
    }
    await backend.resize(this.volumeDir(name), s.contentType, bytes);
  }

  /** Busy naming the instances whose devices name the volume. */
  private async refuseUsed(name: string, doing: string): Promise<void> {
    const users = await this.ctx.users(name);
    if (users.length) throw new Busy(`storage volume "${name}" is attached to ${users.map((u) => `"${u}"`).join(', ')}; detach it before you ${doing}`, users);
  }

  /**
   * Renames a volume no instance names (Busy otherwise: their devices name it).
   *
   * @example
   * ```ts
   * await host.storage.pool('default').volumes.rename('data', 'data-old');
   * ```
   */
  async rename(name: string, newName: string): Promise<StorageVolumeInfo> {
    validateVolumeName(newName);
    await this.locked(async () => {
      await this.stored(name);
      await this.refuseUsed(name, 'rename it');
      await renameNew(this.volumeDir(name), this.volumeDir(newName)).catch((e) => {
        if (e.code === 'EEXIST' || e.code === 'ENOTEMPTY') throw new AlreadyExists(`a storage volume named "${newName}" already exists on pool "${this.ctx.pool}"`);
        throw e;
      });
    });
    await this.ctx.report('storage-volume-renamed', newName, name);
    return this.get(newName);
  }

  /**
   * Deletes a volume and its snapshots; Busy while an instance's device names it.
   *
   * @example
   * ```ts
   * await host.storage.pool('default').volumes.delete('data');
   * ```
   */
  async delete(name: string): Promise<void> {
    await this.locked(async () => {
      await this.stored(name);
      await this.refuseUsed(name, 'delete it');
      const gone = stagingPath(this.dir, 'deleted-volume');
      await fs.rename(this.volumeDir(name), gone);
      await this.removeDir(gone);
    });
    await this.ctx.report('storage-volume-deleted', name);
  }

  /** @internal Removes a volume's directory (moved out of the list) with what its driver keeps elsewhere. */
  async removeDir(dir: string): Promise<void> {
    const backend = await this.ctx.backend();
    const snaps = path.join(dir, 'snapshots');
    for (const s of await fs.readdir(snaps).catch(() => [] as string[])) await backend.remove(path.join(snaps, s));
    await backend.remove(dir);
    await fs.rm(dir, { recursive: true, force: true });
  }

  /**
   * Takes a snapshot of a volume (named `snap0`, `snap1` … when no name is given, as LXD does).
   *
   * @example
   * ```ts
   * const s = await host.storage.pool('default').volumes.snapshot('data', 'before-upgrade');
   * ```
   */
  snapshot(name: string, snapshotName?: string): Promise<VolumeSnapshotInfo> {
    return this.snaps.create(name, snapshotName);
  }

  /** A volume's snapshots, oldest first. @example `await host.storage.pool('default').volumes.snapshots('data');` */
  snapshots(name: string): Promise<VolumeSnapshotInfo[]> {
    return this.snaps.list(name);
  }

  /**
   * Puts a snapshot's data in place of the volume's; Busy while the volume is attached to a running instance.
   *
   * @example
   * ```ts
   * await host.storage.pool('default').volumes.restore('data', 'before-upgrade');
   * ```
   */
  restore(name: string, snapshotName: string): Promise<void> {
    return this.snaps.restore(name, snapshotName);
  }

  /** Deletes a snapshot. @example `await host.storage.pool('default').volumes.deleteSnapshot('data', 'snap0');` */
  deleteSnapshot(name: string, snapshotName: string): Promise<void> {
    return this.snaps.delete(name, snapshotName);
  }

  /**
   * Writes the volume, with its snapshots unless `volumeOnly`, to `file` as LXD's `lxc storage
   * volume export` does (see archive.ts), through a partial file renamed into place.
   *
   * @example
   * ```ts
   * await host.storage.pool('default').volumes.export('data', '/srv/data.tar.zst');
   * ```
   */
  export(name: string, file: string, options: VolumeExportOptions = {}): Promise<void> {
    return volumeTransfer().exportVolume(this, name, file, options);
  }

  /**
   * A volume from an archive of `export` (or LXD's), named `name` (default: as exported). The
   * archive is hostile input (see archive.ts): checked before anything is written, the volume
   * made whole in a staging directory and renamed into place; AlreadyExists for a name taken.
   *
   * @example
   * ```ts
   * const v = await host.storage.pool('default').volumes.import('/srv/data.tar.zst', 'data-restored');
   * ```
   */
  import(file: string, name?: string, options: LongOptions = {}): Promise<StorageVolumeInfo> {
    return volumeTransfer().importVolume(this, file, name, options);
  }

  /** @internal Host.open: what dead processes left (staged volumes, snapshots and restores) cleared or finished. */
  async open(): Promise<void> {
    if (!(await fs.lstat(this.dir).then(() => true, () => false))) return;
    const backend = await this.ctx.backend();
    for (const n of await fs.readdir(this.dir)) {
      if (isStaging(n)) continue;
      await this.snaps.recover(n, backend);
    }
    // A half-made or half-deleted volume: what its driver keeps elsewhere goes too (the sweep).
    await clearStaging(this.dir);
    await backend.sweep(this.dir);
  }
}
