/**
 * The `dir` pool driver: today's layout. A container's `rootfs/` is a full copy of its image with
 * the ids shifted for its map (reflinks where the filesystem has them); a snapshot holds another
 * full copy; restore swaps the directory. Instances made before pools existed are on it as they
 * are: nothing of their directory changes.
 */
import { createHash } from 'node:crypto';
import { promises as fs } from 'node:fs';
import * as path from 'node:path';

import { InvalidArgument, NotSupported } from '../../core/errors';
import { resetMachineId } from '../move';
import { copyTree, copyTreeShifted, remapTreeWith } from '../tree';
import type { AdoptOptions, IdRange, PoolDriver, RootImage } from './types';

const exists = (p: string) => fs.lstat(p).then(() => true, () => false);

/** Keys LXD's dir and lxq's overlay pools know, refused until this version can honour them. */
export function refuseDirectoryPoolKeys(driver: string, config: Record<string, string>): void {
  for (const key of Object.keys(config)) {
    if (key === 'source') {
      throw new NotSupported(`${driver === 'overlay' ? 'an' : 'a'} ${driver} pool keeps its instances in the host's directory in this version; "source" (another directory) is not supported yet`);
    }
    throw new InvalidArgument(`unknown key "${key}" for a ${driver} pool; a ${driver} pool takes no keys in this version`);
  }
}

/** The name a pool's copies of the image tree `imageRootfs` start with (followed by their id map). */
export function imageKey(imageRootfs: string): string {
  return createHash('sha256').update(imageRootfs).digest('hex').slice(0, 16);
}

/** A VM's disk on a pool of plain directories: a file of its directory, copied as one (reflinked where the filesystem can). */
export async function copyDiskFile(dir: string, into: string, file: string): Promise<void> {
  await copyTree(path.join(dir, file), path.join(into, file));
}

export class DirPool implements PoolDriver {
  readonly name = 'dir' as const;

  checkConfig(config: Record<string, string>): void {
    refuseDirectoryPoolKeys('dir', config);
  }

  async createRoot(dir: string, image: RootImage, ids: IdRange | null): Promise<void> {
    await copyTreeShifted(image.rootfs, path.join(dir, 'rootfs'), ids?.base ?? 0);
  }

  /** A pool of plain directories: its directory is all of it. */
  async setupPool(): Promise<void> {}

  async openPool(): Promise<void> {}

  async destroyPool(): Promise<void> {}

  /** The tree is in `dir`, removed with it. */
  async removeRoot(): Promise<void> {}

  /** No quota of a plain directory tree is kept in this version. */
  async rootLimitRefusal(): Promise<string | undefined> {
    return 'the dir pool keeps no per-instance quota in this version (a btrfs pool does, with qgroups)';
  }

  async limitRoot(): Promise<void> {}

  async attachRoot(): Promise<void> {}

  async detachRoot(): Promise<void> {}

  async captureRoot(dir: string, into: string): Promise<void> {
    await copyTree(path.join(dir, 'rootfs'), path.join(into, 'rootfs'));
  }

  async copyRoot(dir: string, into: string, snapshotDir?: string): Promise<void> {
    await copyTree(path.join(snapshotDir ?? dir, 'rootfs'), path.join(into, 'rootfs'));
    await resetMachineId(path.join(into, 'rootfs'));
  }

  async adoptTree(into: string, rootfs: string, options: AdoptOptions): Promise<void> {
    await copyTree(rootfs, path.join(into, 'rootfs'));
    if (options.ids) await remapTreeWith(path.join(into, 'rootfs'), options.ids);
    if (options.fresh) await resetMachineId(path.join(into, 'rootfs'));
  }

  async stageRestore(snapshotDir: string, staging: string): Promise<void> {
    await copyTree(path.join(snapshotDir, 'rootfs'), path.join(staging, 'rootfs'));
  }

  /** Two renames, each re-done only if not done yet: the old rootfs into the staging directory, the staged one in its place. */
  async applyRestore(dir: string, staging: string): Promise<void> {
    const staged = path.join(staging, 'rootfs');
    const rootfs = path.join(dir, 'rootfs');
    if (await exists(staged)) {
      if (await exists(rootfs)) await fs.rename(rootfs, path.join(staging, 'replaced'));
      await fs.rename(staged, rootfs);
    }
  }

  async withView<T>(dir: string, _scratch: string, snapshotDir: string | undefined, read: (rootfs: string) => Promise<T>): Promise<T> {
    return read(path.join(snapshotDir ?? dir, 'rootfs'));
  }

  /** Each container has its own copy: the pool keeps nothing of an image. */
  async releaseImage(): Promise<void> {}

  /** The disk is a file of the VM's directory. */
  async prepareDisk(): Promise<void> {}

  copyDisk(dir: string, into: string, file: string): Promise<void> {
    return copyDiskFile(dir, into, file);
  }
}
