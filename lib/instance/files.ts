/**
 * File access inside an instance. Paths are absolute paths of the instance's own filesystem;
 * they are resolved as the instance would resolve them, so no symlink or ".." can reach the host.
 */
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
 * Files inside an instance, by paths that cannot escape its root: read, write, push, pull, stat, list, remove.
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
}

/** Validates an instance path; returns it without the leading slash. */
export function instancePath(p: unknown): string {
  if (typeof p !== 'string' || p.length === 0) throw new InvalidArgument('path must be a non-empty string');
  if (p.includes('\0')) throw new InvalidArgument('path must not contain NUL bytes');
  if (!p.startsWith('/')) throw new InvalidArgument(`path must be absolute inside the instance, got ${JSON.stringify(p)}`);
  return p.replace(/^\/+/, '');
}

/** Checks the options of write, push (`known` WRITE_OPTION_KEYS) or mkdir (MKDIR_OPTION_KEYS). */
export function checkOwnership(options: WriteOptions = {}, known = WRITE_OPTION_KEYS): { mode?: number; uid: number; gid: number } {
  refuseUnknownKeys(known === MKDIR_OPTION_KEYS ? 'mkdir' : 'write', options, known);
  const { mode, uid = 0, gid = 0 } = options;
  if (mode !== undefined && (!Number.isInteger(mode) || mode < 0 || mode > 0o7777)) throw new InvalidArgument(`mode must be permission bits (0 to 0o7777), got ${mode}`);
  for (const [k, v] of [['uid', uid], ['gid', gid]] as const) {
    if (!Number.isInteger(v) || v < 0 || v > 65535) throw new InvalidArgument(`${k} must be between 0 and 65535, got ${v}`);
  }
  return { mode, uid, gid };
}
