/**
 * Export and import of custom volumes (LXD's `lxc storage volume export|import`), in LXD's
 * layout: `backup/index.yaml` (the volume's name, content type, keys and snapshots), then
 * `backup/volume/` (a filesystem volume's tree) or `backup/volume.img` (a block volume's disk),
 * and each snapshot's as `backup/volume-snapshots/<name>/` or `<name>.img`; a zstd tarball
 * written by GNU tar in a child process, through a partial file renamed into place.
 *
 * An archive to import is hostile. It is listed first and refused (InvalidArgument naming the
 * member, nothing written) if it is truncated, has a member outside `backup/`, an absolute name,
 * "..", a member under a symlink of the archive, a hard link across trees or out of the archive,
 * a device node, or any member that is not in the layout its index.yaml describes (a snapshot it
 * does not list, a tree for a block volume…); index.yaml is read as plain YAML (no tags, few
 * aliases, 1 MiB at most) and checked as `create` checks its input. The volume's files keep
 * their owners (a volume's ids are the host's: containers see them through an idmapped mount),
 * but not what would grant more on this host: set-user-ID and set-group-ID bits are cleared and
 * no `security.*` or `trusted.*` extended attribute (file capabilities, overlayfs's) is taken.
 */
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { parse, stringify } from 'yaml';

import { checkAborted, phase } from '../../core/abort';
import { InvalidArgument } from '../../core/errors';
import { run } from '../../core/run';
import { checkMembers, listTar, type TarMember } from '../../core/tar';
import { dropPartial, notePartial } from '../partials';
import { checkContentType, checkVolumeConfig, checkVolumeDescription, validateVolumeName } from './names';
import { type LxdIdRange, parseLxdIdmap } from './lxd-idmap';
import type { StoredVolume, VolumeContentType } from './types';

const TOP = 'backup';
const INDEX = `${TOP}/index.yaml`;
const MAX_INDEX_BYTES = 2 ** 20;
/** LXD's zero time: a snapshot that never expires. */
const NEVER = '0001-01-01T00:00:00Z';
/** What tar keeps of a volume's files: owners by number, ACLs, user xattrs, holes. */
const KEEP = ['--numeric-owner', '--acls', '--xattrs', '--xattrs-include=user.*', '--sparse'];

/** A volume's or snapshot's data in the archive. */
export function archivedData(contentType: VolumeContentType, snapshot?: string): string {
  const base = snapshot === undefined ? `${TOP}/volume` : `${TOP}/volume-snapshots/${snapshot}`;
  return contentType === 'block' ? `${base}.img` : base;
}

/** What an archive's index.yaml says, checked. */
export interface VolumeIndex {
  name: string;
  contentType: VolumeContentType;
  description: string;
  config: Record<string, string>;
  createdAt: string;
  /** Oldest first, each with its creation time. */
  snapshots: { name: string; createdAt: string; shifted?: LxdIdRange[] }[];
  /** LXD's archive: the map its files were shifted to (volatile.idmap.last), to be undone (lxd-idmap.ts). */
  shifted?: LxdIdRange[];
}

/** Escapes a path for a `--transform` expression (sed's basic regular expressions, "," as delimiter). */
const literal = (p: string) => p.replace(/[\\.*^$[\],]/g, (c) => `\\${c}`);

/**
 * Writes the archive of a volume to `file`: `data` is the host path of its data, `snapshots` each
 * snapshot's name, creation time and data path. `staging` (a directory to make and remove) holds
 * index.yaml; the partial file is noted in `partials` (removed by Host.open if this process dies).
 */
export async function writeVolumeArchive(file: string, index: VolumeIndex, data: string, snapshots: { name: string; data: string }[], staging: string, partials: string): Promise<void> {
  const partial = path.join(path.dirname(file), `.${path.basename(file)}.partial-${process.pid}`);
  await fs.mkdir(path.join(staging, TOP), { recursive: true, mode: 0o700 });
  const note = await notePartial(partials, partial);
  try {
    const volume = { name: index.name, description: index.description, type: 'custom', content_type: index.contentType, config: index.config, created_at: index.createdAt };
    // expires_at as LXD writes "never": LXD 5.0's import reads it unchecked (a daemon crash without it).
    const volumeSnapshots = index.snapshots.map((s) => ({ name: s.name, description: '', content_type: index.contentType, config: {}, created_at: s.createdAt, expires_at: NEVER }));
    const yaml = { name: index.name, optimized: false, optimized_header: false, type: 'custom', snapshots: index.snapshots.map((s) => s.name), config: { volume, volume_snapshots: volumeSnapshots } };
    await fs.writeFile(path.join(staging, INDEX), stringify(yaml));
    // Each tree under its archive name; `S`: a symlink's target is never rewritten.
    const sources = [{ from: data, to: archivedData(index.contentType) }, ...snapshots.map((s) => ({ from: s.data, to: archivedData(index.contentType, s.name) }))];
    const transforms = sources.map((s) => `--transform=s,^${literal(path.relative('/', s.from))},${s.to},S`);
    await phase('writing the archive', 0, 99);
    await run('tar', ['--create', '--zstd', '--file', partial, ...KEEP, '-C', staging, INDEX, ...transforms, '-C', '/', ...sources.map((s) => path.relative('/', s.from))]);
    checkAborted(); // an aborted export leaves no file
    await fs.rename(partial, file);
  } finally {
    await fs.rm(partial, { force: true });
    await fs.rm(staging, { recursive: true, force: true });
    await dropPartial(note);
  }
}

/** The archive's index.yaml, read from a listed archive (nothing else is extracted) and checked. */
async function readIndex(file: string, scratch: string): Promise<VolumeIndex> {
  await run('tar', ['--extract', '--file', file, '--no-same-owner', '--no-same-permissions', '-C', scratch, '--', INDEX]);
  const where = `${file}: ${INDEX}`;
  const st = await fs.lstat(path.join(scratch, INDEX));
  if (!st.isFile() || st.size > MAX_INDEX_BYTES) throw new InvalidArgument(`${where} is not a file of at most 1 MiB`);
  let raw: Record<string, unknown>;
  try {
    raw = parse(await fs.readFile(path.join(scratch, INDEX), 'utf8'), { customTags: [], maxAliasCount: 16, schema: 'core' }) as Record<string, unknown>;
  } catch (e) {
    throw new InvalidArgument(`${where} is not YAML: ${(e as Error).message.split('\n')[0]}`);
  }
  const bad = (why: string) => new InvalidArgument(`${where}: ${why}`);
  if (raw === null || typeof raw !== 'object') throw bad('not a mapping');
  if (raw.type !== 'custom') throw bad(`type is ${JSON.stringify(raw.type)}, not "custom" (an instance backup is imported by host.import)`);
  if (raw.optimized === true) throw bad('an optimized (driver-specific) backup; export it without --optimized-storage');
  const config = raw.config as { volume?: Record<string, unknown>; volume_snapshots?: unknown } | undefined;
  const volume = config?.volume;
  if (volume === null || typeof volume !== 'object') throw bad('config.volume is missing');
  const checked = <T>(what: string, check: () => T): T => {
    try {
      return check();
    } catch (e) {
      throw bad(`${what}: ${(e as Error).message}`);
    }
  };
  const name = checked('name', () => validateVolumeName(volume.name ?? raw.name));
  const contentType = checked('content_type', () => checkContentType(volume.content_type ?? 'filesystem'));
  // LXD's volatile.* keys are its bookkeeping of the volume (the id maps it shifted it to), not settings.
  const lxdShift = (c: unknown) => parseLxdIdmap((c as Record<string, unknown> | undefined)?.['volatile.idmap.last'], where);
  const shifted = lxdShift(volume.config);
  const settings = Object.fromEntries(Object.entries((volume.config ?? {}) as Record<string, unknown>).filter(([k]) => !k.startsWith('volatile.')));
  const volumeConfig = checked('config', () => checkVolumeConfig(settings, false)) as Record<string, string>;
  const description = checked('description', () => checkVolumeDescription(volume.description ?? ''));
  const time = (t: unknown) => (typeof t === 'string' && !Number.isNaN(Date.parse(t)) ? new Date(t).toISOString() : new Date().toISOString());
  const listed = raw.snapshots ?? [];
  if (!Array.isArray(listed)) throw bad('snapshots is not a list');
  const details = Array.isArray(config?.volume_snapshots) ? (config.volume_snapshots as Record<string, unknown>[]) : [];
  const seen = new Set<string>();
  const snapshots = listed.map((n) => {
    const snapshot = checked('a snapshot', () => validateVolumeName(n, 'volume snapshot'));
    if (seen.has(snapshot)) throw bad(`snapshot "${snapshot}" is listed twice`);
    seen.add(snapshot);
    const detail = details.find((d) => d !== null && typeof d === 'object' && d.name === snapshot);
    // A snapshot keeps the volume's keys as they were when it was taken, its map among them.
    return { name: snapshot, createdAt: time(detail?.created_at), shifted: detail ? lxdShift(detail.config) : shifted };
  });
  return { name, contentType, description, config: volumeConfig, createdAt: time(volume.created_at), snapshots, shifted };
}

/** Refuses a member that is not in the layout `index` describes, or that is a device node or a hard link across trees. */
function checkLayout(file: string, members: TarMember[], names: string[], index: VolumeIndex): void {
  const trees = [archivedData(index.contentType), ...index.snapshots.map((s) => archivedData(index.contentType, s.name))];
  const treeOf = (name: string) => trees.find((t) => name === t || (index.contentType === 'filesystem' && name.startsWith(`${t}/`)));
  const bad = (name: string, why: string) => new InvalidArgument(`${file} is refused: member ${JSON.stringify(name)} ${why}`);
  const seen = new Set<string>();
  members.forEach((m, i) => {
    const name = names[i];
    if (m.kind === 'b' || m.kind === 'c') throw bad(name, 'is a device node (a volume archive holds none)');
    if (name === TOP || (name === `${TOP}/volume-snapshots` && index.snapshots.length)) {
      if (m.kind !== 'd') throw bad(name, 'is not a directory');
      return;
    }
    if (name === INDEX) return;
    const tree = treeOf(name);
    if (!tree) throw bad(name, `is not part of the volume or of a snapshot that ${INDEX} lists`);
    if (name === tree) {
      seen.add(tree);
      const want = index.contentType === 'block' ? '-' : 'd';
      if (m.kind !== want) throw bad(name, `is not a ${index.contentType === 'block' ? 'regular file (a block volume\'s disk)' : 'directory'}`);
    }
    // A hard link shares its file: one across trees would tie a snapshot to the volume.
    if (m.kind === 'h' && treeOf((m.link ?? '').replace(/^(\.\/)+/, '')) !== tree) throw bad(name, `is a hard link to ${JSON.stringify(m.link)}, in another tree`);
  });
  for (const t of trees) if (!seen.has(t)) throw new InvalidArgument(`${file} is not a complete storage volume backup (no ${t})`);
}

/**
 * Lists and checks an archive (nothing but index.yaml is extracted, into `scratch`), refusing
 * what does not belong in a volume backup; returns its checked index.
 */
export async function checkVolumeArchive(file: string, scratch: string): Promise<VolumeIndex> {
  await phase('checking the archive', 0, 20);
  const members = await listTar(file, 'storage volume backup');
  const names = checkMembers(file, members, { top: TOP });
  if (!names.includes(INDEX) || members[names.indexOf(INDEX)].kind !== '-') throw new InvalidArgument(`${file} is not a storage volume backup (no ${INDEX})`);
  const index = await readIndex(file, scratch);
  checkLayout(file, members, names, index);
  return index;
}

/** Extracts a checked archive into `into` (an empty directory); what would grant more on this host is dropped (see above). */
export async function extractVolumeArchive(file: string, into: string): Promise<void> {
  await phase('extracting', 20, 60);
  await run('tar', ['--extract', '--file', file, ...KEEP, '--same-owner', '--same-permissions', '--no-overwrite-dir', '--delay-directory-restore', '-C', into]);
  await run('find', [path.join(into, TOP), '-type', 'f', '-perm', '/6000', '-exec', 'chmod', 'ug-s', '{}', '+']);
}

/** The record of a volume made from an archive. */
export function importedRecord(index: VolumeIndex): StoredVolume {
  return { format: 'lxq-storage-volume', version: 1, contentType: index.contentType, description: index.description, config: index.config, createdAt: index.createdAt };
}
