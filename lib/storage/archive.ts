/**
 * Export and import of instances as zstd tarballs, made and read by GNU tar and zstd in child
 * processes (streamed by them, never held in memory, never on the event loop).
 *
 * Layout: `lxq-export.json` (format marker and the record) then `instance/…` (a container's
 * `rootfs/`, a VM's `disk.qcow2`, and `snapshots/` when asked). What the driver derives from
 * paths (liblxc's config) is made again on import. An import lists the archive first and refuses
 * anything but that layout: absolute names, `..`, members under a symlink of the archive, links
 * whose targets leave it, device nodes for a privileged target; then extracts into a staging
 * directory moved into place by one rename, the record written last.
 */
import { promises as fs } from 'node:fs';
import * as path from 'node:path';

import { InvalidArgument } from '../errors';
import type { InstanceRecord } from '../instance/instance';
import { run } from '../util/run';
import { checkMembers, listTar } from '../util/tar';

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

/** Writes the archive of `dir` (its `entries`) and `meta` to `file`, through a staging file renamed into place. */
export async function writeArchive(file: string, dir: string, entries: string[], meta: ExportMeta, staging: string): Promise<void> {
  await fs.mkdir(staging, { mode: 0o700 });
  const partial = path.join(path.dirname(file), `.${path.basename(file)}.partial-${process.pid}`);
  try {
    await fs.writeFile(path.join(staging, EXPORT_META), JSON.stringify(meta, null, 2));
    const names = entries.map((e) => `--transform=s,^${e.replace(/[.]/g, '\\.')},${TOP}/${e},`);
    await run('tar', ['--create', '--zstd', '--file', partial, ...KEEP, ...names, '-C', staging, EXPORT_META, '-C', dir, ...entries]);
    await fs.rename(partial, file);
  } finally {
    await fs.rm(partial, { force: true });
    await fs.rm(staging, { recursive: true, force: true });
  }
}

/** Refuses an archive that is not an lxq export or whose members could land outside the import's directory. */
export async function checkArchive(file: string): Promise<void> {
  const members = await listTar(file, 'lxq export');
  if (members[0]?.name !== EXPORT_META) throw new InvalidArgument(`${file} is not an lxq export (no ${EXPORT_META} at its start)`);
  checkMembers(file, members.slice(1), { top: TOP });
}

/** Extracts a checked archive into `into` (an empty directory); returns its meta. */
export async function extractArchive(file: string, into: string): Promise<ExportMeta> {
  const args = ['--extract', '--file', file, ...KEEP, '--same-owner', '--same-permissions', '--no-overwrite-dir', '--delay-directory-restore', '-C', into];
  await run('tar', args);
  const meta = JSON.parse(await fs.readFile(path.join(into, EXPORT_META), 'utf8')) as ExportMeta;
  if (meta?.format !== 'lxq-export' || meta.version !== 1 || !meta.record || (meta.record.type !== 'container' && meta.record.type !== 'vm')) {
    throw new InvalidArgument(`${file} is not an lxq export (its ${EXPORT_META} says ${JSON.stringify(meta?.format)})`);
  }
  // Device nodes are harmless in an unprivileged container (its cgroup denies them), not in a privileged one.
  if (meta.record.config?.['security.privileged'] === 'true') {
    const stdout = await run('find', [path.join(into, TOP), '(', '-type', 'b', '-o', '-type', 'c', ')', '-print', '-quit']);
    if (stdout.trim()) throw new InvalidArgument(`${file} is refused: it holds a device node (${path.relative(into, stdout.trim())}) and the target would be privileged`);
  }
  return meta;
}

export const ARCHIVE_TOP = TOP;
