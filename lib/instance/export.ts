/**
 * A local instance written to an export archive (lib/storage/archive.ts): its record, its root
 * filesystem or disk, and its snapshots unless `instanceOnly`, as LXD's export.
 */
import { promises as fs } from 'node:fs';
import * as path from 'node:path';

import type { InstanceType } from '../config/options';
import { InvalidArgument, InvalidState, NotFound, NotSupported } from '../core/errors';
import { refuseUnknownKeys } from '../core/keys';
import { phase } from '../core/abort';
import { stagingPath } from '../core/staging';
import { diskUsage } from '../storage/tree';
import { type ExportMeta, writeArchive } from '../storage/archive';
import { PARTIALS_DIR } from '../storage/partials';
import type { PoolDriver } from '../storage/pools/types';
import type { CopyToOptions, SnapshotRef, StorageDriver } from '../storage/types';
import { EXPORT_OPTION_KEYS, type ExportOptions, type InstanceRecord, type InstanceStatus } from './instance';

/** export()'s arguments checked before anything is done; the archive's absolute path. */
export function checkExport(file: string, options: ExportOptions): string {
  if (typeof file !== 'string' || !file) throw new InvalidArgument('export needs a file path');
  if (options === null || typeof options !== 'object') throw new InvalidArgument('export options must be an object');
  refuseUnknownKeys('export', options, EXPORT_OPTION_KEYS);
  if (options.instanceOnly !== undefined && typeof options.instanceOnly !== 'boolean') throw new InvalidArgument('instanceOnly must be a boolean');
  return path.resolve(file);
}

/** An instance's data, or one snapshot's, to copy or publish (inside its serialized operation). */
export interface DataSource {
  name: string;
  type: InstanceType;
  dir: string;
  record: InstanceRecord;
  status: InstanceStatus;
  storage: StorageDriver;
  snapshot?: SnapshotRef;
}

/** Fills `into` with a copy of the data (a running container frozen for it); the record it was taken with. */
export async function copyData(source: DataSource, into: string, options: { snapshots: boolean; flatten: boolean; pool?: string; target?: PoolDriver; ownRange?: CopyToOptions['ownRange'] }): Promise<InstanceRecord> {
  const { snapshot, status } = source;
  // Bytes read against the source's size on disk (its snapshots' too, when they are copied).
  await phase('copying', 0, 95, () => diskUsage(snapshot ? snapshot.dir : source.dir, true));
  await source.storage.copyTo(into, { status, snapshot, snapshots: options.snapshots && !snapshot, flatten: options.flatten, target: options.target, ownRange: options.ownRange });
  await phase('finishing', 95, 100);
  const taken = structuredClone(snapshot ? snapshot.meta.record : source.record);
  // The copy's data was made on the target pool or this instance's, whichever pool a snapshot's record names (an imported one's).
  const pool = options.target ? options.pool : source.record.pool;
  if (pool === undefined) delete taken.pool;
  else taken.pool = pool;
  return taken;
}

/** Fills `into` with an image of the stopped instance, or of a snapshot (then in any status, as LXD allows); the image's type and meta. */
export async function publishData(source: DataSource, into: string): Promise<{ type: InstanceType; meta: Record<string, unknown> }> {
  const { snapshot, status } = source;
  if (!snapshot && status !== 'stopped') throw new InvalidState(`cannot publish ${source.name}: it is ${status}; stop it first, or publish one of its snapshots`, status);
  await phase('copying', 0, 95, () => diskUsage(snapshot ? snapshot.dir : source.dir, true));
  return { type: source.type, meta: await source.storage.publishTo(into, { status, snapshot }) };
}

/** The instance being exported, stopped or running (inside its serialized operation). */
export interface ExportSource extends DataSource {
  status: 'stopped' | 'running';
  /** Freezes the running container for the archive (see BaseInstance.freezeFor), and thaws it. */
  freeze(): Promise<void>;
  thaw(): Promise<void>;
}

/**
 * Writes `source` to `target` as a zstd tarball. A running container is frozen while tar reads
 * it; a running VM's disk is first copied by a backup job (its snapshots only from a stopped VM).
 */
export async function writeExport(source: ExportSource, target: string, instanceOnly: boolean): Promise<void> {
  const { status, dir } = source;
  const liveVm = source.type === 'vm' && status === 'running';
  const snapshots = !instanceOnly && (await fs.readdir(path.join(dir, 'snapshots')).then((n) => n.length > 0, () => false));
  if (liveVm && snapshots) throw new NotSupported(`an export of a running vm holds its disk as it is now, not its snapshots: stop ${source.name} first, or export it with { instanceOnly: true }`);
  await fs.access(path.dirname(target)).catch(() => Promise.reject(new NotFound(`${path.dirname(target)} does not exist`)));
  const entries = [source.type === 'vm' ? 'disk.qcow2' : 'rootfs'];
  // A VM's TPM state (lib/drivers/vm/tpm.ts) is its own, as its disk is.
  if (source.type === 'vm' && (await fs.lstat(path.join(dir, 'tpm')).then((s) => s.isDirectory(), () => false))) entries.push('tpm');
  if (snapshots) entries.push('snapshots');
  const meta: ExportMeta = { format: 'lxq-export', version: 1, exportedAt: new Date().toISOString(), record: structuredClone(source.record), snapshots };
  const frozen = status === 'running' && !liveVm;
  const copied = liveVm ? stagingPath(dir, 'export-disk') : undefined;
  await phase('writing the archive', 0, 99, () => diskUsage(dir, true));
  if (frozen) await source.freeze();
  try {
    if (copied) {
      await fs.mkdir(copied, { mode: 0o700 });
      await source.storage.copyTo(copied, { status, snapshots: false, flatten: false, scratch: true });
    }
    const write = (from: string) => writeArchive(target, from, entries, meta, stagingPath(dir, 'export'), path.join(path.dirname(dir), PARTIALS_DIR), source.type === 'vm');
    if (!copied && source.storage.withExportTree) await source.storage.withExportTree(snapshots, write);
    else await write(copied ?? dir);
  } finally {
    if (frozen) await source.thaw();
    if (copied) await fs.rm(copied, { recursive: true, force: true });
  }
}
