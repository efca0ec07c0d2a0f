/**
 * Snapshots of custom volumes: `<volume>/snapshots/<name>/` holding `snapshot.json` and what the
 * pool's driver keeps (a copy of the data, or a read-only btrfs snapshot it names). A restore is
 * staged beside the volume's data (`<volume>/.lxq-tmp-…`) and swapped in; a restore a killed
 * process left half-applied is finished by the next Host.open.
 */
import { promises as fs } from 'node:fs';
import * as path from 'node:path';

import { AlreadyExists, Busy, NotFound } from '../../core/errors';
import { readJson, writeJsonAtomic } from '../../core/fs';
import { clearStaging, isStaging, processAlive, renameNew, stagingPath } from '../../core/staging';
import { SNAPSHOT_FILE, validateVolumeName } from './names';
import type { StoredVolume, StoredVolumeSnapshot, VolumeBackend, VolumeSnapshotInfo } from './types';
import type { StorageVolumes } from './volumes';

const exists = (p: string) => fs.lstat(p).then(() => true, () => false);

export class VolumeSnapshots {
  constructor(private readonly volumes: StorageVolumes) {}

  private dir(volume: string): string {
    return path.join(this.volumes.volumeDir(volume), 'snapshots');
  }

  private snapshotDir(volume: string, name: string): string {
    return path.join(this.dir(volume), validateVolumeName(name, 'volume snapshot'));
  }

  private async stored(volume: string, name: string): Promise<StoredVolumeSnapshot> {
    return readJson<StoredVolumeSnapshot>(path.join(this.snapshotDir(volume, name), SNAPSHOT_FILE)).catch(() =>
      Promise.reject(new NotFound(`storage volume "${volume}" has no snapshot named "${name}"`)),
    );
  }

  async list(volume: string): Promise<VolumeSnapshotInfo[]> {
    await this.volumes.stored(volume);
    const out: VolumeSnapshotInfo[] = [];
    for (const n of (await fs.readdir(this.dir(volume)).catch(() => [] as string[])).filter((x) => !isStaging(x))) {
      const s = await readJson<StoredVolumeSnapshot>(path.join(this.dir(volume), n, SNAPSHOT_FILE)).catch(() => undefined);
      if (s) out.push({ name: n, volume, createdAt: new Date(s.createdAt) });
    }
    return out.sort((a, b) => a.createdAt.getTime() - b.createdAt.getTime() || (a.name < b.name ? -1 : 1));
  }

  /** LXD's next free `snapN`. */
  private async nextName(volume: string): Promise<string> {
    const taken = new Set(await fs.readdir(this.dir(volume)).catch(() => [] as string[]));
    let i = 0;
    while (taken.has(`snap${i}`)) i++;
    return `snap${i}`;
  }

  async create(volume: string, name?: string): Promise<VolumeSnapshotInfo> {
    if (name !== undefined) validateVolumeName(name, 'volume snapshot');
    const info = await this.volumes.locked(async () => {
      const vol = await this.volumes.stored(volume);
      const snapName = name ?? (await this.nextName(volume));
      if (await exists(this.snapshotDir(volume, snapName))) throw new AlreadyExists(`storage volume "${volume}" already has a snapshot named "${snapName}"`);
      await fs.mkdir(this.dir(volume), { recursive: true, mode: 0o711 });
      const backend = await this.volumes.context.backend();
      const staging = stagingPath(this.dir(volume), 'snapshot');
      await fs.mkdir(staging, { mode: 0o711 });
      const stored: StoredVolumeSnapshot = { format: 'lxq-storage-volume-snapshot', version: 1, createdAt: new Date().toISOString() };
      try {
        await backend.snapshot(this.volumes.volumeDir(volume), staging, vol.contentType);
        await writeJsonAtomic(path.join(staging, SNAPSHOT_FILE), stored);
        await renameNew(staging, this.snapshotDir(volume, snapName));
      } catch (e) {
        await backend.remove(staging).catch(() => undefined);
        throw e;
      } finally {
        await fs.rm(staging, { recursive: true, force: true });
      }
      return { name: snapName, volume, createdAt: new Date(stored.createdAt) };
    });
    await this.volumes.context.report('storage-volume-snapshot-created', `${volume}/${info.name}`);
    return info;
  }

  async delete(volume: string, name: string): Promise<void> {
    await this.volumes.locked(async () => {
      await this.volumes.stored(volume);
      await this.stored(volume, name);
      const gone = stagingPath(this.dir(volume), 'deleted-snapshot');
      await fs.rename(this.snapshotDir(volume, name), gone);
      await (await this.volumes.context.backend()).remove(gone);
      await fs.rm(gone, { recursive: true, force: true });
    });
    await this.volumes.context.report('storage-volume-snapshot-deleted', `${volume}/${name}`);
  }

  /** Busy while an instance that names the volume runs (its data is mounted there). */
  async restore(volume: string, name: string): Promise<void> {
    await this.volumes.locked(async () => {
      const vol = await this.volumes.stored(volume);
      await this.stored(volume, name);
      const running = await this.volumes.context.running(await this.volumes.context.users(volume));
      if (running.length) {
        throw new Busy(`storage volume "${volume}" is attached to running ${running.map((u) => `"${u}"`).join(', ')}; stop ${running.length > 1 ? 'them' : 'it'} before a restore`, running);
      }
      const backend = await this.volumes.context.backend();
      const dir = this.volumes.volumeDir(volume);
      const staging = stagingPath(dir, 'restore');
      await fs.mkdir(staging, { mode: 0o711 });
      try {
        await backend.stageRestore(this.snapshotDir(volume, name), staging, vol.contentType);
        await backend.applyRestore(dir, staging, vol.contentType);
      } finally {
        await backend.remove(staging).catch(() => undefined);
        await fs.rm(staging, { recursive: true, force: true });
      }
    });
    await this.volumes.context.report('storage-volume-snapshot-restored', `${volume}/${name}`);
  }

  /**
   * Host.open, for one volume: a restore a dead process staged is finished when it had taken the
   * volume's data out (or else dropped), and its staged snapshots cleared.
   */
  async recover(volume: string, backend: VolumeBackend): Promise<void> {
    const dir = path.join(this.volumes.dir, volume);
    const vol = await readJson<StoredVolume>(path.join(dir, 'volume.json')).catch(() => undefined);
    if (!vol) return;
    for (const n of await fs.readdir(dir)) {
      if (!isStaging(n) || processAlive(Number(n.split('-')[2]))) continue;
      const staging = path.join(dir, n);
      if (!(await exists(await backend.dataPath(dir, vol.contentType)))) await backend.applyRestore(dir, staging, vol.contentType);
      await backend.remove(staging).catch(() => undefined);
      await fs.rm(staging, { recursive: true, force: true });
    }
    const snaps = path.join(dir, 'snapshots');
    for (const n of await fs.readdir(snaps).catch(() => [] as string[])) {
      if (isStaging(n) && !processAlive(Number(n.split('-')[2]))) await backend.remove(path.join(snaps, n)).catch(() => undefined);
    }
    await clearStaging(snaps);
  }
}
