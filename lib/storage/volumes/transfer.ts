/**
 * `volumes.export` and `volumes.import` (see archive.ts for the archive and its checks). An
 * import builds the whole volume in a staging directory of the pool's volumes: each snapshot's
 * data put in place and snapshotted by the pool's driver in turn (on btrfs they share extents),
 * then the volume's own data, its record last, and one rename under the volumes' lock. A failure
 * or an abort removes what was made; a killed process leaves staging entries the next Host.open
 * clears (a btrfs subvolume no directory names is swept).
 */
import { promises as fs } from 'node:fs';
import * as path from 'node:path';

import { checkAborted, checkLongOptions, LONG_OPTION_KEYS, type LongOptions, longOperation } from '../../core/abort';
import { AlreadyExists, InvalidArgument, NotFound, NotSupported } from '../../core/errors';
import { writeJsonAtomic } from '../../core/fs';
import { optionKeys, refuseUnknownKeys } from '../../core/keys';
import { renameNew, stagingPath } from '../../core/staging';
import { copyTree, remapTreeWith } from '../tree';
import { archivedData, checkVolumeArchive, extractVolumeArchive, importedRecord, type VolumeIndex, writeVolumeArchive } from './archive';
import { sparseFile } from './dir';
import { type LxdIdRange, unshiftLxd } from './lxd-idmap';
import { DEFAULT_BLOCK_BYTES, SNAPSHOT_FILE, validateVolumeName, VOLUME_FILE, volumeBytes } from './names';
import type { StorageVolumeInfo, StoredVolume, StoredVolumeSnapshot, VolumeBackend, VolumeContentType, VolumeExportOptions, VolumeSnapshotInfo } from './types';
import type { StorageAction } from '../../events/lifecycle';

/** What export and import use of a pool's StorageVolumes (volumes.ts). */
export interface VolumeStore {
  readonly dir: string;
  readonly context: { pool: string; partials: string; backend(): Promise<VolumeBackend>; report(action: StorageAction, name: string): Promise<void> };
  volumeDir(name: string): string;
  stored(name: string): Promise<StoredVolume>;
  locked<T>(op: () => Promise<T>): Promise<T>;
  snapshots(name: string): Promise<VolumeSnapshotInfo[]>;
  get(name: string): Promise<StorageVolumeInfo>;
}

const EXPORT_KEYS = optionKeys<VolumeExportOptions>({ volumeOnly: true, ...LONG_OPTION_KEYS });
const IMPORT_KEYS = optionKeys<LongOptions>(LONG_OPTION_KEYS);

export async function exportVolume(volumes: VolumeStore, name: string, file: string, options: VolumeExportOptions): Promise<void> {
  if (typeof file !== 'string' || !file) throw new InvalidArgument('export needs a file path');
  if (options === null || typeof options !== 'object') throw new InvalidArgument('export options must be an object');
  refuseUnknownKeys('volume export', options, EXPORT_KEYS);
  checkLongOptions(options);
  if (options.volumeOnly !== undefined && typeof options.volumeOnly !== 'boolean') throw new InvalidArgument('volumeOnly must be a boolean');
  const target = path.resolve(file);
  await volumes.stored(name); // NotFound before anything
  await longOperation(`exporting storage volume ${name}`, options, () =>
    // Under the volumes' lock: no restore swaps the data, no snapshot goes, while tar reads.
    volumes.locked(async () => {
      const stored = await volumes.stored(name);
      const backend = await volumes.context.backend();
      const dir = volumes.volumeDir(name);
      const snapshots = options.volumeOnly ? [] : await volumes.snapshots(name);
      const index: VolumeIndex = { name, contentType: stored.contentType, description: stored.description, config: stored.config, createdAt: stored.createdAt, snapshots: snapshots.map((s) => ({ name: s.name, createdAt: s.createdAt.toISOString() })) };
      const snapshotData = await Promise.all(snapshots.map(async (s) => ({ name: s.name, data: await backend.dataPath(path.join(dir, 'snapshots', s.name), stored.contentType) })));
      await writeVolumeArchive(target, index, await backend.dataPath(dir, stored.contentType), snapshotData, stagingPath(dir, 'export'), volumes.context.partials);
    }),
  );
}

/** Puts the tree or disk `src` (extracted, removed from there) as the data of the volume or staging directory `dir`. */
async function fillData(backend: VolumeBackend, dir: string, contentType: VolumeContentType, src: string, bytes: number | undefined, shifted: LxdIdRange[] | undefined): Promise<void> {
  const data = await backend.dataPath(dir, contentType);
  if (contentType === 'filesystem' && shifted?.length) await remapTreeWith(src, unshiftLxd(shifted));
  await fs.rm(data, { recursive: true, force: true });
  // A rename where the data is on the same filesystem (a dir pool), else a copy (a btrfs pool's subvolume).
  await fs.rename(src, data).catch((e) => ((e as NodeJS.ErrnoException).code === 'EXDEV' ? copyTree(src, data).then(() => fs.rm(src, { recursive: true, force: true })) : Promise.reject(e)));
  if (contentType === 'block' && bytes !== undefined) await sparseFile(data, bytes, false); // its size key says more: grown
}

export async function importVolume(volumes: VolumeStore, file: string, name: string | undefined, options: LongOptions): Promise<StorageVolumeInfo> {
  if (typeof file !== 'string' || !file) throw new InvalidArgument('import needs a file path');
  if (name !== undefined) validateVolumeName(name);
  if (options === null || typeof options !== 'object') throw new InvalidArgument('import options must be an object');
  refuseUnknownKeys('volume import', options, IMPORT_KEYS);
  checkLongOptions(options);
  await fs.access(file).catch(() => Promise.reject(new NotFound(`${file} does not exist`)));
  const backend = await volumes.context.backend(); // NotFound for a pool that does not exist
  const made = await longOperation(`importing ${file}`, options, async () => {
    await fs.mkdir(volumes.dir, { recursive: true, mode: 0o711 });
    const scratch = stagingPath(volumes.dir, 'import-archive');
    const staging = stagingPath(volumes.dir, 'import');
    await fs.mkdir(scratch, { mode: 0o700 });
    try {
      const index = await checkVolumeArchive(file, scratch);
      const volume = name ?? index.name;
      const taken = () => new AlreadyExists(`a storage volume named "${volume}" already exists on pool "${volumes.context.pool}"`);
      if (await fs.lstat(volumes.volumeDir(volume)).then(() => true, () => false)) throw taken();
      const size = index.config.size;
      if (index.contentType === 'filesystem' && size !== undefined) {
        const why = await backend.sizeRefusal();
        if (why) throw new NotSupported(`${file}: its "size" of a filesystem volume cannot be enforced on pool "${volumes.context.pool}": ${why}`);
      }
      const bytes = size !== undefined ? volumeBytes(size, index.contentType) : index.contentType === 'block' ? DEFAULT_BLOCK_BYTES : undefined;
      await extractVolumeArchive(file, scratch);
      await fs.mkdir(staging, { mode: 0o711 });
      try {
        await backend.create(staging, index.contentType, bytes);
        for (const s of index.snapshots) {
          await fillData(backend, staging, index.contentType, path.join(scratch, archivedData(index.contentType, s.name)), bytes, s.shifted);
          const into = path.join(staging, 'snapshots', s.name);
          await fs.mkdir(into, { recursive: true, mode: 0o711 });
          await backend.snapshot(staging, into, index.contentType);
          const stored: StoredVolumeSnapshot = { format: 'lxq-storage-volume-snapshot', version: 1, createdAt: s.createdAt };
          await writeJsonAtomic(path.join(into, SNAPSHOT_FILE), stored);
        }
        await fillData(backend, staging, index.contentType, path.join(scratch, archivedData(index.contentType)), bytes, index.shifted);
        await writeJsonAtomic(path.join(staging, VOLUME_FILE), importedRecord(index));
        checkAborted(); // the last moment an aborted import leaves nothing
        await volumes.locked(() => renameNew(staging, volumes.volumeDir(volume)).catch((e) => Promise.reject(e.code === 'EEXIST' || e.code === 'ENOTEMPTY' ? taken() : e)));
      } catch (e) {
        for (const s of await fs.readdir(path.join(staging, 'snapshots')).catch(() => [] as string[])) await backend.remove(path.join(staging, 'snapshots', s)).catch(() => undefined);
        await backend.remove(staging).catch(() => undefined);
        throw e;
      }
      return volume;
    } finally {
      await fs.rm(scratch, { recursive: true, force: true });
      await fs.rm(staging, { recursive: true, force: true });
    }
  });
  await volumes.context.report('storage-volume-created', made);
  return volumes.get(made);
}
