/**
 * The VM's storage primitives: internal qcow2 snapshots of the VM's own overlay (disk.qcow2).
 * Stopped: `qemu-img snapshot`. A running VM's snapshot (QMP snapshot-save jobs) is not done yet
 * and is refused before any side effect.
 */
import { NotSupported } from '../errors';
import type { InstanceRecord, InstanceStatus } from '../instance/instance';
import { run } from './run';
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
