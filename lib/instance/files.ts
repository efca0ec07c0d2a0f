/**
 * File access inside an instance. Paths are absolute paths of the instance's own filesystem;
 * they are resolved as the instance would resolve them, so no symlink or ".." can reach the host.
 */
import type { Readable } from 'node:stream';

import { InvalidArgument } from '../core/errors';
import { optionKeys, refuseUnknownKeys } from '../core/keys';

/**
 * The kind of a path inside an instance.
 *
 * @example
 * ```ts
 * if ((await c.files.stat('/etc')).type === 'directory') console.log('a directory');
 * ```
 */
export type FileType = 'file' | 'directory' | 'symlink' | 'other';

/**
 * What `files.stat` reports about a path inside an instance.
 *
 * @example
 * ```ts
 * const st = await c.files.stat('/etc/passwd');
 * console.log(st.type, st.size, st.mode.toString(8));
 * ```
 */
export interface FileStat {
  type: FileType;
  size: number;
  /** Permission bits (e.g. 0o644). */
  mode: number;
  /** Owner as seen inside the instance. */
  uid: number;
  gid: number;
  mtime: Date;
}

/**
 * One entry of `files.list`.
 *
 * @example
 * ```ts
 * for (const entry of await c.files.list('/etc')) console.log(entry.name, entry.type);
 * ```
 */
export interface DirEntry {
  name: string;
  type: FileType;
}

/**
 * Mode and owner of a file written into an instance.
 *
 * @example
 * ```ts
 * await c.files.write('/usr/local/bin/hi', '#!/bin/sh\necho hi\n', { mode: 0o755 });
 * ```
 */
export interface WriteOptions {
  /** Permission bits; default 0o644 for files, 0o755 for directories. */
  mode?: number;
  /** Owner inside the instance; default 0. */
  uid?: number;
  gid?: number;
}

export const WRITE_OPTION_KEYS = optionKeys<WriteOptions>({ mode: true, uid: true, gid: true });
export const MKDIR_OPTION_KEYS = optionKeys<WriteOptions & { parents?: boolean }>({ mode: true, uid: true, gid: true, parents: true });

/**
 * Files inside an instance, by paths that cannot escape its root: read, write, push, pull, stat, list,
 * remove, symlinks, and whole directory trees as tar streams (pullTree, pushTree).
 *
 * @example
 * ```ts
 * await c.files.write('/etc/motd', 'hello\n', { mode: 0o644 });
 * console.log((await c.files.read('/etc/motd')).toString());
 * await c.files.pull('/etc/hosts', './hosts');
 * ```
 */
export interface InstanceFiles {
  read(path: string): Promise<Buffer>;
  /** Replaces the file atomically (a reader sees the old or the new content). */
  write(path: string, data: string | Buffer, options?: WriteOptions): Promise<void>;
  /** Copies a host file into the instance (mode from the host file unless given). */
  push(hostPath: string, path: string, options?: WriteOptions): Promise<void>;
  /** Copies a file of the instance to the host (written atomically there). */
  pull(path: string, hostPath: string): Promise<void>;
  /** Does not follow a final symlink. */
  stat(path: string): Promise<FileStat>;
  list(path: string): Promise<DirEntry[]>;
  mkdir(path: string, options?: WriteOptions & { parents?: boolean }): Promise<void>;
  remove(path: string, options?: { recursive?: boolean }): Promise<void>;
  /** Makes `path` a symlink to `target` (kept as given; resolved inside the instance when used). AlreadyExists if `path` exists. */
  symlink(target: string, path: string, options?: OwnerOptions): Promise<void>;
  /** The target of the symlink `path` (InvalidArgument if it is not one). */
  readlink(path: string): Promise<string>;
  /**
   * Sets the access and modification times of `path`, not following a final symlink. Added to the
   * contract agreed for trees (issue 26) so that pushTree keeps mtimes; a driver that cannot set
   * them (LXD's file API) throws NotSupported, and pushTree then leaves the times as written.
   */
  utimes(path: string, atime: Date, mtime: Date): Promise<void>;
  /**
   * A tar stream (POSIX pax) of the directory `path`'s contents, names relative to it (no "./"
   * entry). Symlinks are archived as links, never followed; what is neither a file, a directory
   * nor a symlink (devices, fifos, sockets) is left out and reported to `onSkip`.
   */
  pullTree(path: string, options?: PullTreeOptions): Promise<Readable>;
  /**
   * Extracts a tar stream (pax, ustar or GNU) into the directory `path` (made if missing): modes,
   * owners (ids inside the instance), symlinks and mtimes kept. The stream is hostile: it is read
   * and checked whole before anything is written (see lib/instance/trees.ts).
   */
  pushTree(path: string, tar: Readable, options?: TreeOptions): Promise<void>;
}

/**
 * The owner of a symlink made in an instance.
 *
 * @example
 * ```ts
 * await c.files.symlink('/usr/bin/python3', '/usr/local/bin/python', { uid: 0, gid: 0 });
 * ```
 */
export interface OwnerOptions {
  /** Owner inside the instance; default 0. */
  uid?: number;
  gid?: number;
}

/**
 * Options of `files.pushTree`.
 *
 * @example
 * ```ts
 * await c.files.pushTree('/srv/app', createReadStream('app.tar'), { signal: AbortSignal.timeout(60_000) });
 * ```
 */
export interface TreeOptions {
  /** Aborting rejects with Aborted; before the archive is checked whole, nothing was written. */
  signal?: AbortSignal;
}

/**
 * Options of `files.pullTree`.
 *
 * @example
 * ```ts
 * const tar = await c.files.pullTree('/etc', { onSkip: (p, type) => console.warn(`${p} (${type}) left out`) });
 * ```
 */
export interface PullTreeOptions extends TreeOptions {
  /** Called for each member left out (a device, fifo or socket), with its path inside the instance; and for each virtual filesystem's mount point (/proc, /sys, /dev…), archived as an empty directory (type `directory`). */
  onSkip?: (path: string, type: FileType) => void;
}

export const OWNER_OPTION_KEYS = optionKeys<OwnerOptions>({ uid: true, gid: true });
export const TREE_OPTION_KEYS = optionKeys<TreeOptions>({ signal: true });
export const PULL_TREE_OPTION_KEYS = optionKeys<PullTreeOptions>({ signal: true, onSkip: true });

/** Validates an instance path; returns it without the leading slash. */
export function instancePath(p: unknown): string {
  if (typeof p !== 'string' || p.length === 0) throw new InvalidArgument('path must be a non-empty string');
  if (p.includes('\0')) throw new InvalidArgument('path must not contain NUL bytes');
  if (!p.startsWith('/')) throw new InvalidArgument(`path must be absolute inside the instance, got ${JSON.stringify(p)}`);
  return p.replace(/^\/+/, '');
}

/** Checks the options of write, push (`known` WRITE_OPTION_KEYS), mkdir (MKDIR_OPTION_KEYS) or symlink (OWNER_OPTION_KEYS). */
export function checkOwnership(options: WriteOptions = {}, known = WRITE_OPTION_KEYS): { mode?: number; uid: number; gid: number } {
  refuseUnknownKeys(known === MKDIR_OPTION_KEYS ? 'mkdir' : known === OWNER_OPTION_KEYS ? 'symlink' : 'write', options, known);
  const { mode, uid = 0, gid = 0 } = options;
  if (mode !== undefined && (!Number.isInteger(mode) || mode < 0 || mode > 0o7777)) throw new InvalidArgument(`mode must be permission bits (0 to 0o7777), got ${mode}`);
  for (const [k, v] of [['uid', uid], ['gid', gid]] as const) {
    if (!Number.isInteger(v) || v < 0 || v > 65535) throw new InvalidArgument(`${k} must be between 0 and 65535, got ${v}`);
  }
  return { mode, uid, gid };
}

/** Validates a symlink's target: a non-empty string without NUL bytes. */
export function checkLinkTarget(target: unknown): string {
  if (typeof target !== 'string' || target.length === 0) throw new InvalidArgument('a symlink target must be a non-empty string');
  if (target.includes('\0')) throw new InvalidArgument('a symlink target must not contain NUL bytes');
  return target;
}

/** Validates the times given to utimes. */
export function checkTimes(atime: unknown, mtime: unknown): void {
  for (const [k, v] of [['atime', atime], ['mtime', mtime]] as const) {
    if (!(v instanceof Date) || Number.isNaN(v.getTime())) throw new InvalidArgument(`${k} must be a valid Date`);
  }
}
