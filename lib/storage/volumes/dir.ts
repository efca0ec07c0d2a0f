/**
 * Volumes on `dir` and `overlay` pools: in the volume's own directory, `data/` (a filesystem
 * volume's tree, its root owned by the host's root: containers see it through an idmapped mount)
 * or `root.img` (a block volume's sparse raw disk). A snapshot holds a copy (reflinks where the
 * filesystem has them); a restore swaps the copy in by two renames.
 */
import { promises as fs } from 'node:fs';
import * as path from 'node:path';

import { copyTree } from '../tree';
import type { VolumeBackend, VolumeContentType } from './types';

const exists = (p: string) => fs.lstat(p).then(() => true, () => false);

/** The data's name in a volume's (or snapshot's) directory. */
export function dataName(contentType: VolumeContentType): string {
  return contentType === 'block' ? 'root.img' : 'data';
}

/** A sparse file of `bytes` (grown, never shrunk, when it exists). */
export async function sparseFile(file: string, bytes: number, create: boolean): Promise<void> {
  const h = await fs.open(file, create ? 'wx' : 'r+', 0o600);
  try {
    if (create || (await h.stat()).size < bytes) await h.truncate(bytes);
  } finally {
    await h.close();
  }
}

export class DirVolumes implements VolumeBackend {
  async sizeRefusal(): Promise<string | undefined> {
    return 'a dir or overlay pool keeps no quota on a directory tree in this version (a btrfs pool does, with qgroups; a block volume has its size)';
  }

  async create(dir: string, contentType: VolumeContentType, bytes: number | undefined): Promise<void> {
    if (contentType === 'block') return sparseFile(path.join(dir, dataName('block')), bytes!, true);
    await fs.mkdir(path.join(dir, 'data'), { mode: 0o755 });
  }

  async dataPath(dir: string, contentType: VolumeContentType): Promise<string> {
    return path.join(dir, dataName(contentType));
  }

  async resize(dir: string, contentType: VolumeContentType, bytes: number): Promise<void> {
    if (contentType === 'block') await sparseFile(path.join(dir, dataName('block')), bytes, false);
  }

  async snapshot(dir: string, into: string, contentType: VolumeContentType): Promise<void> {
    await copyTree(path.join(dir, dataName(contentType)), path.join(into, dataName(contentType)));
  }

  async stageRestore(snapshotDir: string, staging: string, contentType: VolumeContentType): Promise<void> {
    await copyTree(path.join(snapshotDir, dataName(contentType)), path.join(staging, dataName(contentType)));
  }

  /** Two renames, each re-done only if not done yet. */
  async applyRestore(dir: string, staging: string, contentType: VolumeContentType): Promise<void> {
    const name = dataName(contentType);
    const staged = path.join(staging, name);
    if (!(await exists(staged))) return;
    if (await exists(path.join(dir, name))) await fs.rename(path.join(dir, name), path.join(staging, 'replaced'));
    await fs.rename(staged, path.join(dir, name));
  }

  /** Everything is in the directory. */
  async remove(): Promise<void> {}

  async sweep(): Promise<void> {}
}
