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

import { InvalidArgument, LxqError } from '../errors';
import type { InstanceRecord } from '../instance/instance';
import { run } from '../util/run';

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

interface Member {
  kind: string;
  name: string;
  link?: string;
}

/** `tar --list --verbose` with C-quoted names, parsed; a truncated or non-tar file is refused. */
async function listArchive(file: string): Promise<Member[]> {
  let stdout: string;
  try {
    (stdout = await run('tar', ['--list', '--verbose', '--numeric-owner', '--quoting-style=c', '--file', file]));
  } catch (e) {
    throw new InvalidArgument(`${file} is not a complete lxq export (tar could not read it: ${(e as LxqError).message.split(': ').slice(1).join(': ')})`);
  }
  const line = /^(\S)\S*\s+\S+\s+[\d,\s]+\s+\S+\s+\S+\s+"((?:[^"\\]|\\.)*)"(?: (?:->|link to) "((?:[^"\\]|\\.)*)")?$/;
  const unquote = (s: string) => JSON.parse(`"${s.replace(/\\([0-7]{3})/g, (_m, o) => `\\u00${parseInt(o, 8).toString(16).padStart(2, '0')}`)}"`) as string;
  return stdout
    .split('\n')
    .filter(Boolean)
    .map((l) => {
      const m = line.exec(l);
      if (!m) throw new InvalidArgument(`${file}: an archive member tar describes as ${JSON.stringify(l.slice(0, 120))} is not one lxq reads`);
      return { kind: m[1], name: unquote(m[2]), ...(m[3] !== undefined ? { link: unquote(m[3]) } : {}) };
    });
}

/** Refuses an archive that is not an lxq export or whose members could land outside the import's directory. */
export async function checkArchive(file: string): Promise<void> {
  const members = await listArchive(file);
  if (members[0]?.name !== EXPORT_META) throw new InvalidArgument(`${file} is not an lxq export (no ${EXPORT_META} at its start)`);
  const symlinks = new Set<string>();
  const bad = (name: string, why: string) => new InvalidArgument(`${file} is refused: member ${JSON.stringify(name)} ${why}`);
  for (const m of members.slice(1)) {
    const name = m.name.replace(/\/+$/, '');
    if (path.isAbsolute(name)) throw bad(m.name, 'is an absolute path');
    const parts = name.split('/');
    if (parts.includes('..')) throw bad(m.name, 'contains ".."');
    if (parts[0] !== TOP) throw bad(m.name, `is outside "${TOP}/"`);
    for (let i = 1; i < parts.length; i++) if (symlinks.has(parts.slice(0, i).join('/'))) throw bad(m.name, 'lies under a symlink of the archive');
    if (m.kind === 'l') symlinks.add(name);
    if (m.kind === 'h' && m.link !== undefined && (path.isAbsolute(m.link) || m.link.split('/').includes('..') || m.link.split('/')[0] !== TOP)) {
      throw bad(m.name, `is a hard link to ${JSON.stringify(m.link)}, outside the archive`);
    }
    // A symlink's target is resolved inside the instance's root (absolute ones too), except above it.
    if (m.kind === 'l' && m.link !== undefined && !path.isAbsolute(m.link)) {
      const resolved = path.posix.normalize(path.posix.join(path.posix.dirname(name), m.link));
      if (resolved === '..' || resolved.startsWith('../') || resolved.split('/')[0] !== TOP) throw bad(m.name, `is a symlink to ${JSON.stringify(m.link)}, out of the archive`);
    }
  }
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
