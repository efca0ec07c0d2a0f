/** The container's storage primitives: its rootfs, copied (frozen while running) with everything a root filesystem holds. */
import { promises as fs } from 'node:fs';
import * as path from 'node:path';

import type { InstanceRecord, InstanceStatus } from '../../instance/instance';
import { resetMachineId } from '../../storage/move';
import { copyTree, copyTreeUnshifted } from '../../storage/tree';
import type { CopyToOptions, SnapshotRef, StorageDriver } from '../../storage/types';

export interface ContainerStorageHooks {
  dir(): string;
  /** Freezes the running container for `operation`, recorded so that a thaw follows even if this process dies (BaseInstance.freezeFor). */
  freeze(operation: string): Promise<void>;
  unfreeze(): Promise<void>;
  /** Writes the liblxc config derived from `record` for this container. */
  writeConfig(record: InstanceRecord): Promise<void>;
  record(): InstanceRecord;
  /** The id map a rootfs made under `record` is shifted by (null: privileged, not shifted). */
  idmap(record: InstanceRecord): { base: number; size: number } | null;
}

export class ContainerStorage implements StorageDriver {
  constructor(private readonly hooks: ContainerStorageHooks) {}

  private get rootfs(): string {
    return path.join(this.hooks.dir(), 'rootfs');
  }

  async capture(into: string, options: { status: InstanceStatus }, operation = 'snapshot'): Promise<void> {
    // A running container is frozen for the copy, so the copy is of one moment, never torn.
    const freeze = options.status === 'running';
    if (freeze) await this.hooks.freeze(operation);
    try {
      await copyTree(this.rootfs, path.join(into, 'rootfs'));
    } finally {
      if (freeze) await this.hooks.unfreeze();
    }
  }

  async copyTo(into: string, options: CopyToOptions): Promise<void> {
    if (options.snapshot) await copyTree(path.join(options.snapshot.dir, 'rootfs'), path.join(into, 'rootfs'));
    else await this.capture(into, options, 'copy');
    await resetMachineId(path.join(into, 'rootfs'));
    const snapshots = path.join(this.hooks.dir(), 'snapshots');
    if (options.snapshots && (await fs.lstat(snapshots).then(() => true, () => false))) await copyTree(snapshots, path.join(into, 'snapshots'));
  }

  /** An image's `rootfs/`, its ids back to the image's own (0-based), its machine id emptied for the instances made of it. */
  async publishTo(into: string, options: { snapshot?: SnapshotRef }): Promise<Record<string, unknown>> {
    const record = options.snapshot?.meta.record ?? this.hooks.record();
    const from = options.snapshot ? path.join(options.snapshot.dir, 'rootfs') : this.rootfs;
    await copyTreeUnshifted(from, path.join(into, 'rootfs'), this.hooks.idmap(record));
    await resetMachineId(path.join(into, 'rootfs'));
    return structuredClone(record.imageMeta);
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
