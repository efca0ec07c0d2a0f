/** The container's storage primitives: its rootfs, copied (frozen while running) with everything a root filesystem holds. */
import { promises as fs } from 'node:fs';
import * as path from 'node:path';

import type { InstanceRecord, InstanceStatus } from '../instance/instance';
import { resetMachineId } from './move';
import { copyTree } from './tree';
import type { SnapshotRef, StorageDriver } from './types';

export interface ContainerStorageHooks {
  dir(): string;
  freeze(): Promise<void>;
  unfreeze(): Promise<void>;
  /** Writes the liblxc config derived from `record` for this container. */
  writeConfig(record: InstanceRecord): Promise<void>;
}

export class ContainerStorage implements StorageDriver {
  constructor(private readonly hooks: ContainerStorageHooks) {}

  private get rootfs(): string {
    return path.join(this.hooks.dir(), 'rootfs');
  }

  async capture(into: string, options: { status: InstanceStatus }): Promise<void> {
    // A running container is frozen for the copy, so the copy is of one moment, never torn.
    const freeze = options.status === 'running';
    if (freeze) await this.hooks.freeze();
    try {
      await copyTree(this.rootfs, path.join(into, 'rootfs'));
    } finally {
      if (freeze) await this.hooks.unfreeze();
    }
  }

  async copyTo(into: string, options: { status: InstanceStatus; snapshot?: SnapshotRef; snapshots: boolean }): Promise<void> {
    if (options.snapshot) await copyTree(path.join(options.snapshot.dir, 'rootfs'), path.join(into, 'rootfs'));
    else await this.capture(into, options);
    await resetMachineId(path.join(into, 'rootfs'));
    const snapshots = path.join(this.hooks.dir(), 'snapshots');
    if (options.snapshots && (await fs.lstat(snapshots).then(() => true, () => false))) await copyTree(snapshots, path.join(into, 'snapshots'));
  }

  async stageRestore(snapshot: SnapshotRef, staging: string): Promise<void> {
    await copyTree(path.join(snapshot.dir, 'rootfs'), path.join(staging, 'rootfs'));
  }

  /** Two renames, each re-done only if not done yet: the old rootfs into the staging directory, the staged one in its place. */
  async applyRestore(_snapshot: SnapshotRef, staging: string, record: InstanceRecord): Promise<void> {
    const staged = path.join(staging, 'rootfs');
    if (await fs.lstat(staged).then(() => true, () => false)) {
      if (await fs.lstat(this.rootfs).then(() => true, () => false)) await fs.rename(this.rootfs, path.join(staging, 'replaced'));
      await fs.rename(staged, this.rootfs);
    }
    await this.hooks.writeConfig(record);
  }
}
