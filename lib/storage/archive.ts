/**
 * Export and import of instances as zstd tarballs, made and read by GNU tar and zstd in child
 * processes (streamed by them, never held in memory, never on the event loop).
 *
 * Layout: `lxq-export.json` (format marker and the record) then `instance/…` (a container's
 * `rootfs/`, a VM's `disk.qcow2` and `tpm/` if it has a TPM, and `snapshots/` when asked). What the driver derives from
 * paths (liblxc's config) is made again on import. An import lists the archive first and refuses
 * anything but that layout: absolute names, `..`, members under a symlink of the archive, links
 * whose targets leave it, device nodes for a privileged target; then extracts into a staging
 * directory moved into place by one rename, the record written last.
 */
import { promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import { InvalidArgument } from '../core/errors';
import { refuseControlCharsDeep } from '../images/meta';
import { checkForeignRecord } from '../instance/foreign';
import type { InstanceRecord } from '../instance/instance';
import { writeJsonAtomic } from '../core/fs';
import { run } from '../core/run';
import { checkAborted, phase } from '../core/abort';
import { dropPartial, notePartial } from './partials';
import { validateSnapshotName } from './snapshots';
import type { StoredSnapshot } from './types';
import { checkMembers, listTar, type TarMember } from '../core/tar';

export const EXPORT_META = 'lxq-export.json';
const TOP = 'instance';

export interface ExportMeta {
  format: 'lxq-export';
  version: 1;
  exportedAt: string;
  record: InstanceRecord;
  snapshots: boolean;
}

/** What tar keeps of a root filesystem beyond names and bytes. */
const KEEP = ['--numeric-owner', '--xattrs', '--xattrs-include=*', '--acls', '--sparse'];

/**
 * Writes the archive of `dir` (its `entries`) and `meta` to `file`, through a staging file renamed
 * into place. The staging file is noted in `partials` first (see ./partials): if this process
 * dies, tar dies with it and the next Host.open removes what it wrote.
 */
export async function writeArchive(file: string, dir: string, entries: string[], meta: ExportMeta, staging: string, partials: string, dereference = false): Promise<void> {
  await fs.mkdir(staging, { mode: 0o700 });
  const partial = path.join(path.dirname(file), `.${path.basename(file)}.partial-${process.pid}`);
  const note = await notePartial(partials, partial);
  try {
    await fs.writeFile(path.join(staging, EXPORT_META), JSON.stringify(meta, null, 2));
    const names = entries.map((e) => `--transform=s,^${e.replace(/[.]/g, '\\.')},${TOP}/${e},`);
    // A VM's disk on a btrfs pool is a link into its subvolume: the archive holds the disk (a VM's entries hold no other link).
    await run('tar', ['--create', '--zstd', '--file', partial, ...KEEP, ...(dereference ? ['--dereference'] : []), ...names, '-C', staging, EXPORT_META, '-C', dir, ...entries]);
    await phase('finishing', 99, 100);
    checkAborted(); // an aborted export leaves no file, whole or partial (also from the report just made)
    await fs.rename(partial, file);
  } finally {
    await fs.rm(partial, { force: true });
    await fs.rm(staging, { recursive: true, force: true });
    await dropPartial(note);
  }
}

/** Refuses an archive that is not an lxq export or whose members could land outside the import's directory. */
export async function checkArchive(file: string): Promise<TarMember[]> {
  await phase('checking the archive', 0, 30);
  const members = await listTar(file, 'lxq export');
  // LXD's instance backup (lxc export: backup/index.yaml, backup/container/rootfs…) is not read in this version: said so by name.
  if (members[0]?.name !== EXPORT_META && members.some((m) => m.name.replace(/^\.\//, '') === 'backup/index.yaml'))
    throw new InvalidArgument(`${file} is an LXD backup (lxc export), not an lxq export: lxq imports its own format only (an LXD storage volume backup is imported by volumes.import)`);
  if (members[0]?.name !== EXPORT_META) throw new InvalidArgument(`${file} is not an lxq export (no ${EXPORT_META} at its start)`);
  checkMembers(file, members.slice(1), { top: TOP });
  return members;
}

/** A snapshot's own facts in an archive, beside its record. */
export const SNAPSHOT_META = 'snapshot.json';
const SNAPSHOT_TAG = /^[A-Za-z0-9._-]{1,64}$/;

/** The export's records as the archive brings them, checked (lib/instance/foreign.ts); nothing is extracted. */
export interface CheckedExport {
  meta: ExportMeta;
  /** Each snapshot's stored facts, its record checked, by snapshot name. */
  snapshots: Map<string, StoredSnapshot>;
}

/** The JSON members of a checked archive, read in one pass of tar (a compressed archive is decompressed once). */
async function readMembers(file: string, names: string[]): Promise<Map<string, unknown>> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'lxq-import-meta-'));
  try {
    await run('tar', ['--extract', '--file', file, '--no-same-owner', '-C', dir, '--', ...names]);
    const out = new Map<string, unknown>();
    for (const name of names) {
      const text = await fs.readFile(path.join(dir, name), 'utf8');
      try {
        out.set(name, JSON.parse(text));
      } catch (e) {
        throw new InvalidArgument(`${file}: ${name} is not JSON: ${(e as Error).message}`);
      }
    }
    return out;
  } finally {
    await fs.rm(dir, { recursive: true, force: true });
  }
}

/**
 * Reads and checks the export's record and its snapshots' records from a listed archive
 * (checkArchive first), as create would check them: every option, device, name and image field.
 */
export async function readExport(file: string, members: TarMember[]): Promise<CheckedExport> {
  const prefix = `${TOP}/snapshots/`;
  // Named as tar lists them (to extract them), matched without a leading "./" (as checkMembers reads them).
  const bare = (name: string) => name.replace(/^(\.\/)+/, '');
  const snapshotMembers = members.filter((m) => {
    const parts = bare(m.name).split('/');
    return bare(m.name).startsWith(prefix) && parts.length === 4 && parts[3] === SNAPSHOT_META;
  });
  for (const m of [members[0], ...snapshotMembers]) {
    if (m.kind !== '-') throw new InvalidArgument(`${file} is refused: member ${JSON.stringify(m.name)} is not a regular file`);
  }
  const json = await readMembers(file, [EXPORT_META, ...snapshotMembers.map((m) => m.name)]);
  const raw = json.get(EXPORT_META) as Partial<ExportMeta> | null;
  if (raw?.format !== 'lxq-export' || raw.version !== 1) throw new InvalidArgument(`${file} is not an lxq export (its ${EXPORT_META} says ${JSON.stringify(raw?.format)})`);
  const record = checkForeignRecord(`${file}: ${EXPORT_META} record`, raw.record);
  const meta: ExportMeta = { format: 'lxq-export', version: 1, exportedAt: String(raw.exportedAt), record, snapshots: raw.snapshots === true };
  const snapshots = new Map<string, StoredSnapshot>();
  for (const m of snapshotMembers) {
    const snapshot = bare(m.name).split('/')[2];
    const where = `${file}: snapshot ${JSON.stringify(snapshot)}`;
    try {
      validateSnapshotName(snapshot);
    } catch (e) {
      throw new InvalidArgument(`${where}: ${(e as Error).message}`);
    }
    const s = json.get(m.name) as Partial<StoredSnapshot> | null;
    if (s?.format !== 'lxq-snapshot' || s.version !== 1) throw new InvalidArgument(`${where} is not an lxq snapshot`);
    if (typeof s.tag !== 'string' || !SNAPSHOT_TAG.test(s.tag)) throw new InvalidArgument(`${where}: tag must be letters, digits, ".", "_", "-", got ${JSON.stringify(s.tag)}`);
    if (typeof s.stateful !== 'boolean' || typeof s.createdAt !== 'string' || (s.expiresAt !== null && typeof s.expiresAt !== 'string') || typeof s.description !== 'string') {
      throw new InvalidArgument(`${where}: its stateful, createdAt, expiresAt or description field is malformed`);
    }
    refuseControlCharsDeep(`${where}: description`, s.description);
    const snapRecord = checkForeignRecord(`${where} record`, s.record);
    if (snapRecord.type !== record.type) throw new InvalidArgument(`${where}: a ${snapRecord.type} snapshot of a ${record.type}`);
    snapshots.set(snapshot, { format: 'lxq-snapshot', version: 1, createdAt: s.createdAt, stateful: s.stateful, expiresAt: s.expiresAt ?? null, description: s.description, tag: s.tag, record: snapRecord });
  }
  return { meta, snapshots };
}

/**
 * Extracts a checked archive into `into` (an empty directory), then writes the checked records
 * over the extracted ones (what is restored later is what was checked).
 */
export async function extractArchive(file: string, checked: CheckedExport, into: string): Promise<void> {
  await phase('extracting', 30, 95);
  const args = ['--extract', '--file', file, ...KEEP, '--same-owner', '--same-permissions', '--no-overwrite-dir', '--delay-directory-restore', '-C', into];
  await run('tar', args);
  for (const [name, s] of checked.snapshots) await writeJsonAtomic(path.join(into, TOP, 'snapshots', name, SNAPSHOT_META), s);
  // Device nodes are harmless in an unprivileged container (its cgroup denies them), not in a privileged one.
  if (checked.meta.record.config['security.privileged'] === 'true') {
    const stdout = await run('find', [path.join(into, TOP), '(', '-type', 'b', '-o', '-type', 'c', ')', '-print', '-quit']);
    if (stdout.trim()) throw new InvalidArgument(`${file} is refused: it holds a device node (${path.relative(into, stdout.trim())}) and the target would be privileged`);
  }
}

/**
 * An imported VM's disk: a qcow2 whose backing file, if any, is this host's disk of its image
 * (`imageDisk`), never another host file, and no external data file.
 */
export async function checkImportedVmDisk(file: string, disk: string, imageDisk: string): Promise<void> {
  const st = await fs.lstat(disk).catch(() => undefined);
  if (!st?.isFile()) throw new InvalidArgument(`${file} is not a complete lxq export (no disk.qcow2 file)`);
  const info = JSON.parse(await run('qemu-img', ['info', '--output=json', '-f', 'qcow2', disk]).catch(() => {
    throw new InvalidArgument(`${file}: disk.qcow2 is not a qcow2 image`);
  })) as { 'backing-filename'?: string; 'backing-filename-format'?: string; 'format-specific'?: { data?: { 'data-file'?: string } } };
  if (info['format-specific']?.data?.['data-file'] !== undefined) throw new InvalidArgument(`${file}: disk.qcow2 names an external data file`);
  const backing = info['backing-filename'];
  if (backing === undefined) return;
  const ok = path.isAbsolute(backing) && (await fs.realpath(backing).catch(() => undefined)) === (await fs.realpath(imageDisk)) && info['backing-filename-format'] === 'qcow2';
  if (!ok) {
    throw new InvalidArgument(`${file}: disk.qcow2 is backed by ${JSON.stringify(backing)}, not by this host's disk of its image (${imageDisk}); a VM's disk may only rest on its own image`);
  }
}

export const ARCHIVE_TOP = TOP;
