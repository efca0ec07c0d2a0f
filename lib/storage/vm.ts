/**
 * The VM's storage primitives: internal qcow2 snapshots of the VM's own overlay (disk.qcow2).
 * Stopped: `qemu-img snapshot`. A running VM's snapshot (QMP snapshot-save jobs) is not done yet
 * and is refused before any side effect.
 */
import { promises as fs } from 'node:fs';
import * as path from 'node:path';

import { NotSupported } from '../errors';
import type { InstanceRecord, InstanceStatus } from '../instance/instance';
import { run } from './run';
import { copyTree } from './tree';
import type { SnapshotRef, StorageDriver } from './types';

export interface VmStorageHooks {
  disk(): string;
  name(): string;
}

export class VmStorage implements StorageDriver {
  constructor(private readonly hooks: VmStorageHooks) {}

  private refuseRunning(op: string, status: InstanceStatus): void {
    if (status !== 'stopped') throw new NotSupported(`${op} of a running vm (QMP snapshot jobs) is not implemented yet: stop ${this.hooks.name()} first`);
  }

  async capture(_into: string, options: { stateful: boolean; status: InstanceStatus; tag: string }): Promise<void> {
    this.refuseRunning('a snapshot', options.status);
    if (options.stateful) throw new NotSupported('a stateful snapshot needs a running vm');
    await run('qemu-img', ['snapshot', '-q', '-c', options.tag, this.hooks.disk()]);
  }

  /**
   * The copy's disk is its own qcow2 overlay on the same backing image: the source's overlay as
   * is (its internal snapshots with it), or its current state or one snapshot's, converted.
   */
  async copyTo(into: string, options: { status: InstanceStatus; snapshot?: SnapshotRef; snapshots: boolean }): Promise<void> {
    if (options.status !== 'stopped') throw new NotSupported(`a copy of a running vm is not implemented yet: stop ${this.hooks.name()} first`);
    const disk = path.join(into, path.basename(this.hooks.disk()));
    if (options.snapshots && !options.snapshot) {
      await copyTree(this.hooks.disk(), disk);
      const snapshots = path.join(path.dirname(this.hooks.disk()), 'snapshots');
      if (await fs.lstat(snapshots).then(() => true, () => false)) await copyTree(snapshots, path.join(into, 'snapshots'));
      return;
    }
    const info = JSON.parse((await run('qemu-img', ['info', '-U', '--output=json', this.hooks.disk()])).stdout) as { 'full-backing-filename'?: string; 'backing-filename'?: string };
    const backing = info['full-backing-filename'] ?? info['backing-filename'];
    const from = options.snapshot ? ['-l', `snapshot.name=${options.snapshot.meta.tag}`] : [];
    const onto = backing ? ['-B', backing, '-F', 'qcow2'] : [];
    await run('qemu-img', ['convert', '-q', ...from, '-O', 'qcow2', ...onto, this.hooks.disk(), disk]);
  }

  async checkRestore(_snapshot: SnapshotRef, status: InstanceStatus): Promise<void> {
    this.refuseRunning('a restore', status);
  }

  async stageRestore(): Promise<void> {}

  async applyRestore(snapshot: SnapshotRef, _staging: string, _record: InstanceRecord): Promise<void> {
    await run('qemu-img', ['snapshot', '-q', '-a', snapshot.meta.tag, this.hooks.disk()]);
  }

  async discard(snapshot: SnapshotRef, status: InstanceStatus): Promise<void> {
    this.refuseRunning('deleting a snapshot', status);
    await run('qemu-img', ['snapshot', '-q', '-d', snapshot.meta.tag, this.hooks.disk()]).catch(() => undefined);
  }
}
