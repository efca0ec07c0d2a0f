/**
 * The VM's storage primitives: internal qcow2 snapshots of the VM's own overlay (disk.qcow2).
 * Stopped: `qemu-img snapshot`; running: QMP snapshot-save/load/delete jobs. Copies of a stopped
 * disk are made by `qemu-img convert`, of a running one by a `blockdev-backup` job.
 *
 * A snapshot's disk state is read with `qemu-img -U` (no lock) while QEMU runs: an internal
 * snapshot's L1 table and clusters never change while it exists (the guest's writes go to new
 * clusters), and no snapshot is made or removed meanwhile (both happen in the instance's queue).
 */
import { promises as fs } from 'node:fs';
import * as path from 'node:path';

import { InvalidArgument, NotFound, NotSupported } from '../../core/errors';
import type { VmImage } from '../../images/meta';
import type { InstanceRecord, InstanceStatus } from '../../instance/instance';
import type { QmpClient } from '../../qmp';
import { readVmImage } from '../../images/vm-image';
import { createVmOverlay } from './qemu-args';
import { backupDisk, diskNode, runJob } from './qmp-jobs';
import { run } from '../../core/run';
import { copyTree } from '../../storage/tree';
import type { PoolDriver } from '../../storage/pools/types';
import type { CopyToOptions, SnapshotRef, StorageDriver } from '../../storage/types';
import { exists } from '../../core/fs';
import { stagingPath } from '../../core/staging';
import { tpmStateDir } from './tpm';
import { rootSize } from '../../storage/pools/host-storage';

/** A TPM's state (if `from` has one) copied into `into`: a VM's, a snapshot's or a copy's directory. */
async function copyTpmState(from: string, into: string): Promise<void> {
  if (await exists(tpmStateDir(from))) await copyTree(tpmStateDir(from), tpmStateDir(into));
}

export interface VmStorageHooks {
  disk(): string;
  /** The driver of the pool named `name`, by default the one the VM's record names (where a copy's disk is made). */
  pool(name?: string): Promise<PoolDriver>;
  name(): string;
  /** The running VM's monitor (undefined when QEMU does not run). */
  qmp(): Promise<QmpClient | undefined>;
  record(): InstanceRecord;
}

/**
 * Makes the disk of a new VM in `staging` on `pool`: a qcow2 overlay over the image's disk, of
 * the image's size or of the root disk's `size` (`bytes`, never smaller than the image's: the
 * guest sees a larger disk from its first boot). Refused before anything is written.
 */
export async function makeVmDisk(pool: PoolDriver, staging: string, file: string, img: VmImage, bytes: number | undefined): Promise<void> {
  if (bytes !== undefined) {
    const { 'virtual-size': base } = JSON.parse(await run('qemu-img', ['info', '--output=json', img.disk])) as { 'virtual-size': number };
    if (bytes < base) throw new InvalidArgument(`device "root": "size" (${bytes} bytes) is smaller than the disk of the VM's image (${base} bytes)`);
  }
  await pool.prepareDisk(staging, file);
  await createVmOverlay(img, path.join(staging, file), bytes === undefined ? undefined : String(bytes));
}

/**
 * The root disk's `size` of a stopped VM changed (`updateDevice('root', { size })`): its disk
 * grown by `qemu-img resize` (the guest's agent grows the root filesystem at the next boot).
 * Only `size`, only larger (LXD refuses to shrink a VM's disk too); refused before anything is
 * written. Returns the new size in bytes.
 */
export async function growVmDisk(disk: string, patch: Record<string, unknown>, status: InstanceStatus, vm: string): Promise<number> {
  const other = Object.keys(patch).find((k) => k !== 'size');
  if (other !== undefined) throw new InvalidArgument(`device "root": only "size" can be changed on a VM's root disk here, not "${other}"${other === 'pool' ? ' (move the VM to another pool instead)' : ''}`);
  if (patch.size === null || patch.size === undefined) throw new InvalidArgument('device "root": "size" cannot be unset (a VM\'s disk has a size)');
  const bytes = rootSize(patch.size);
  if (status !== 'stopped') throw new NotSupported(`growing the root disk of a running vm is not supported: stop ${vm} first`);
  const { 'virtual-size': now } = JSON.parse(await run('qemu-img', ['info', '--output=json', '-f', 'qcow2', disk])) as { 'virtual-size': number };
  if (bytes < now) throw new InvalidArgument(`device "root": "size" (${bytes} bytes) is smaller than ${vm}'s disk (${now} bytes): a disk cannot shrink`);
  if (bytes > now) await run('qemu-img', ['resize', '-q', '-f', 'qcow2', disk, String(bytes)]);
  return bytes;
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

  async capture(into: string, options: { stateful: boolean; status: InstanceStatus; tag: string }): Promise<void> {
    await copyTpmState(this.dir(), into);
    const live = await this.live(options.status);
    if (live && options.stateful) {
      // RAM and device state go into the disk's own qcow2 (vmstate) with the disk snapshot.
      await runJob(live.qmp, 'snapshot-save', { tag: options.tag, vmstate: live.node, devices: [live.node] }, this.hooks.name());
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
   * The copy's disk is its own qcow2 overlay on the same backing image (or, flattened, a qcow2 of
   * its own): the source's overlay as is (its internal snapshots with it), or its current state
   * or one snapshot's, converted; a running VM's current state through a backup job.
   */
  poolNamed(pool: string | undefined): Promise<PoolDriver> {
    return this.hooks.pool(pool);
  }

  async copyTo(into: string, options: CopyToOptions): Promise<void> {
    const file = path.basename(this.hooks.disk());
    const disk = path.join(into, file);
    const running = options.status !== 'stopped';
    // A scratch copy (an export's, read once) is a plain file; an instance's is on the pool.
    const pool = options.scratch ? undefined : options.target ?? (await this.hooks.pool());
    if (options.snapshots && !options.snapshot && !options.flatten && !running && pool) {
      if (options.target) {
        // Another pool: the file copied whole (its internal snapshots in it), where that pool keeps disks.
        await pool.prepareDisk(into, file);
        // cp (a helper an abort kills) writes where the link of a btrfs pool points: it never writes through a dangling link.
        await copyTree(await fs.realpath(this.hooks.disk()), await fs.readlink(disk).catch(() => disk));
      } else {
        await pool.copyDisk(path.dirname(this.hooks.disk()), into, file);
      }
      await copyTpmState(this.dir(), into);
      const snapshots = path.join(path.dirname(this.hooks.disk()), 'snapshots');
      if (await fs.lstat(snapshots).then(() => true, () => false)) await copyTree(snapshots, path.join(into, 'snapshots'));
      return;
    }
    await pool?.prepareDisk(into, file);
    await copyTpmState(options.snapshot?.dir ?? this.dir(), into);
    const info = await this.diskInfo();
    const backing = options.flatten ? undefined : info['full-backing-filename'] ?? info['backing-filename'];
    const live = running && !options.snapshot ? await this.live(options.status) : undefined;
    if (live) await backupDisk(live.qmp, live.node, disk, { backing, virtualSize: info['virtual-size'] }, this.hooks.name());
    else await this.convert(disk, { snapshot: options.snapshot, backing, running });
    if (options.scratch) await this.restOnImage(disk);
  }

  /**
   * The tree an export of the stopped VM reads: its own directory, unless its disk rests on more
   * than its image's disk (a VM started from a saved boot rests on the image's boot layer, which
   * the importing host has not): then a scratch tree whose disk rests on the image's disk only.
   */
  async withExportTree<T>(snapshots: boolean, write: (dir: string) => Promise<T>): Promise<T> {
    if (!(await this.restsBeyondImage(this.hooks.disk()))) return write(this.dir());
    // Internal snapshots would read the image's disk where the boot layer was: they cannot be moved onto it.
    if (snapshots) throw new NotSupported(`${this.hooks.name()} rests on its image's saved boot, which an export cannot carry with its snapshots: export it with { instanceOnly: true }`);
    const scratch = stagingPath(this.dir(), 'export-disk');
    await fs.mkdir(scratch, { mode: 0o700 });
    try {
      await fs.copyFile(this.hooks.disk(), path.join(scratch, path.basename(this.hooks.disk())));
      await this.restOnImage(path.join(scratch, path.basename(this.hooks.disk())));
      await copyTpmState(this.dir(), scratch);
      return await write(scratch);
    } finally {
      await fs.rm(scratch, { recursive: true, force: true });
    }
  }

  /** The image's disk, if `file` rests on another backing file (the only one an import takes is the image's). */
  private async restsBeyondImage(file: string): Promise<string | undefined> {
    const info = JSON.parse(await run('qemu-img', ['info', '-U', '--output=json', file])) as { 'full-backing-filename'?: string; 'backing-filename'?: string };
    const backing = info['full-backing-filename'] ?? info['backing-filename'];
    const img = backing === undefined ? undefined : await readVmImage(String((this.hooks.record().imageMeta as { dir?: unknown }).dir));
    if (!img || backing === undefined) return undefined;
    const real = (f: string) => fs.realpath(f).catch(() => f);
    return (await real(backing)) === (await real(img.disk)) ? undefined : img.disk;
  }

  /** `file` (a copy for an export) rebased onto the image's disk: `qemu-img rebase` writes into it what the layers between held. */
  private async restOnImage(file: string): Promise<void> {
    const imageDisk = await this.restsBeyondImage(file);
    if (imageDisk) await run('qemu-img', ['rebase', '-q', '-f', 'qcow2', '-b', imageDisk, '-F', 'qcow2', file]);
  }

  /** An image of the VM: the image's kernel and initramfs, and its disk (or a snapshot's) flattened. */
  async publishTo(into: string, options: { status: InstanceStatus; snapshot?: SnapshotRef }): Promise<Record<string, unknown>> {
    const record = options.snapshot?.meta.record ?? this.hooks.record();
    const { dir: imageDir, ...meta } = record.imageMeta as Record<string, unknown> & { dir?: string };
    const img = await readVmImage(String(imageDir));
    if (!img) throw new NotFound(`the image ${this.hooks.name()} was made from (${String(imageDir)}) is gone: its kernel and initramfs are needed`);
    const files = { kernel: path.basename(img.kernel), initrd: path.basename(img.initrd), disk: path.basename(img.disk) };
    await copyTree(img.kernel, path.join(into, files.kernel));
    await copyTree(img.initrd, path.join(into, files.initrd));
    await this.convert(path.join(into, files.disk), { snapshot: options.snapshot, running: options.status !== 'stopped' });
    const size = async (f: string) => (await fs.stat(path.join(into, f))).blocks * 512;
    const sizes = { kernel: await size(files.kernel), initrd: await size(files.initrd), disk: await size(files.disk) };
    return { ...meta, files, sizes, diskVirtualSize: (await this.diskInfo())['virtual-size'] };
  }

  private async diskInfo(): Promise<{ 'virtual-size': number; 'full-backing-filename'?: string; 'backing-filename'?: string }> {
    return JSON.parse(await run('qemu-img', ['info', '-U', '--output=json', this.hooks.disk()]));
  }

  /** The disk (or one snapshot's state of it) to a new qcow2, on `backing` or standalone. */
  private async convert(to: string, options: { snapshot?: SnapshotRef; backing?: string; running: boolean }): Promise<void> {
    if (options.running && !options.snapshot) throw new NotSupported(`the disk of ${this.hooks.name()} is in use: stop it first`);
    const from = options.snapshot ? ['-l', `snapshot.name=${options.snapshot.meta.tag}`] : [];
    const onto = options.backing ? ['-B', options.backing, '-F', 'qcow2'] : [];
    await run('qemu-img', ['convert', '-q', ...(options.running ? ['-U'] : []), ...from, '-O', 'qcow2', ...onto, this.hooks.disk(), to]);
  }

  async checkRestore(snapshot: SnapshotRef, status: InstanceStatus): Promise<void> {
    if (!snapshot.meta.stateful) this.refuseRunning('a disk-only restore', status);
  }

  /** A stateful snapshot restored into the running VM: the guest resumes where it was. */
  async restoreLive(snapshot: SnapshotRef, status: InstanceStatus): Promise<boolean> {
    const live = snapshot.meta.stateful ? await this.live(status) : undefined;
    if (!live) return false;
    await runJob(live.qmp, 'snapshot-load', { tag: snapshot.meta.tag, vmstate: live.node, devices: [live.node] }, this.hooks.name());
    return true;
  }

  /** The snapshot's TPM state, copied beside (the disk's is an internal snapshot, applied in place). */
  async stageRestore(snapshot: SnapshotRef, staging: string): Promise<void> {
    await copyTpmState(snapshot.dir, staging);
  }

  async applyRestore(snapshot: SnapshotRef, staging: string, _record: InstanceRecord): Promise<void> {
    await run('qemu-img', ['snapshot', '-q', '-a', snapshot.meta.tag, this.hooks.disk()]);
    // Idempotent: the staged state moved in by one rename; a snapshot without a TPM leaves none.
    const staged = tpmStateDir(staging);
    const had = await exists(tpmStateDir(snapshot.dir));
    if (!had || (await exists(staged))) await fs.rm(tpmStateDir(this.dir()), { recursive: true, force: true });
    if (had && (await exists(staged))) await fs.rename(staged, tpmStateDir(this.dir()));
  }

  private dir(): string {
    return path.dirname(this.hooks.disk());
  }

  async discard(snapshot: SnapshotRef, status: InstanceStatus): Promise<void> {
    const live = await this.live(status);
    if (live) {
      await runJob(live.qmp, 'snapshot-delete', { tag: snapshot.meta.tag, devices: [live.node] }, this.hooks.name()).catch(() => undefined);
      return;
    }
    await run('qemu-img', ['snapshot', '-q', '-d', snapshot.meta.tag, this.hooks.disk()]).catch(() => undefined);
  }
}
