/**
 * The VM's storage primitives: internal qcow2 snapshots of the VM's own overlay (disk.qcow2).
 * Stopped: `qemu-img snapshot`. A running VM's snapshot (QMP snapshot-save jobs) is not done yet
 * and is refused before any side effect.
 */
import { promises as fs } from 'node:fs';
import * as path from 'node:path';

import { NotSupported } from '../errors';
import type { InstanceRecord, InstanceStatus } from '../instance/instance';
import type { QmpClient } from '../qmp';
import { diskNode, runSnapshotJob } from './qmp-jobs';
import { run } from './run';
import { copyTree } from './tree';
import type { SnapshotRef, StorageDriver } from './types';

export interface VmStorageHooks {
  disk(): string;
  name(): string;
  /** The running VM's monitor (undefined when QEMU does not run). */
  qmp(): Promise<QmpClient | undefined>;
}

export class VmStorage implements StorageDriver {
  constructor(private readonly hooks: VmStorageHooks) {}

  private refuseRunning(op: string, status: InstanceStatus): void {
    if (status !== 'stopped') throw new NotSupported(`${op} of a running vm is not supported (only a stateful snapshot is loaded live): stop ${this.hooks.name()} first`);
  }

  /** The running VM's monitor and disk node, or undefined when it is stopped. */
  private async live(status: InstanceStatus): Promise<{ qmp: QmpClient; node: string } | undefined> {
    if (status === 'stopped') return undefined;
    const qmp = await this.hooks.qmp();
    if (!qmp) throw new NotSupported(`${this.hooks.name()} is ${status} but its QEMU has no monitor`);
    return { qmp, node: await diskNode(qmp, this.hooks.disk()) };
  }

  async capture(_into: string, options: { stateful: boolean; status: InstanceStatus; tag: string }): Promise<void> {
    const live = await this.live(options.status);
    if (live && options.stateful) {
      // RAM and device state go into the disk's own qcow2 (vmstate) with the disk snapshot.
      await runSnapshotJob(live.qmp, 'snapshot-save', { tag: options.tag, vmstate: live.node, devices: [live.node] }, this.hooks.name());
      return;
    }
    if (live) {
      await live.qmp.execute('blockdev-snapshot-internal-sync', { device: live.node, name: options.tag });
      return;
    }
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

  async checkRestore(snapshot: SnapshotRef, status: InstanceStatus): Promise<void> {
    if (!snapshot.meta.stateful) this.refuseRunning('a disk-only restore', status);
  }

  /** A stateful snapshot restored into the running VM: the guest resumes where it was. */
  async restoreLive(snapshot: SnapshotRef, status: InstanceStatus): Promise<boolean> {
    const live = snapshot.meta.stateful ? await this.live(status) : undefined;
    if (!live) return false;
    await runSnapshotJob(live.qmp, 'snapshot-load', { tag: snapshot.meta.tag, vmstate: live.node, devices: [live.node] }, this.hooks.name());
    return true;
  }

  async stageRestore(): Promise<void> {}

  async applyRestore(snapshot: SnapshotRef, _staging: string, _record: InstanceRecord): Promise<void> {
    await run('qemu-img', ['snapshot', '-q', '-a', snapshot.meta.tag, this.hooks.disk()]);
  }

  async discard(snapshot: SnapshotRef, status: InstanceStatus): Promise<void> {
    const live = await this.live(status);
    if (live) {
      await runSnapshotJob(live.qmp, 'snapshot-delete', { tag: snapshot.meta.tag, devices: [live.node] }, this.hooks.name()).catch(() => undefined);
      return;
    }
    await run('qemu-img', ['snapshot', '-q', '-d', snapshot.meta.tag, this.hooks.disk()]).catch(() => undefined);
  }
}
