/**
 * Files of an instance on an LXD server, through its files API (GET/HEAD/POST/DELETE
 * …/files?path=). LXD resolves every path inside the instance (its sftp server runs in the
 * instance's mount namespace), so a symlink or ".." cannot reach the server's own files; a final
 * symlink is reported as such by stat/list, and followed inside the instance by read.
 */
import { promises as fs } from 'node:fs';
import * as path from 'node:path';

import { AlreadyExists, InvalidArgument, NotFound, NotSupported } from '../../core/errors';
import { checkLinkTarget, checkOwnership, checkTimes, type DirEntry, type FileStat, type FileType, instancePath, MKDIR_OPTION_KEYS, OWNER_OPTION_KEYS, type OwnerOptions, type WriteOptions } from '../../instance/files';
import { TreeFiles } from '../../instance/trees';
import { writeFileAtomic } from '../../core/fs';
import type { LxdClient } from './client';

/** As the kernel: at most 40 symlinks on one path. */
const MAX_LINKS = 40;

interface Entry {
  stat: FileStat;
  /** A file's content, a symlink's target. */
  content?: Buffer;
  /** A directory's entries. */
  names?: string[];
}

const TYPES: Record<string, FileType> = { file: 'file', directory: 'directory', symlink: 'symlink' };

/** LXD's X-LXD-modified: "2026-12-03 08:12:59 +0000 UTC". */
function parseModified(v: string | undefined): Date {
  const m = /^(\d{4}-\d\d-\d\d) (\d\d:\d\d:\d\d(?:\.\d+)?) ([+-]\d\d)(\d\d)/.exec(v ?? '');
  return m ? new Date(`${m[1]}T${m[2]}${m[3]}:${m[4]}`) : new Date(0);
}

export class RemoteFiles extends TreeFiles {
  constructor(
    private readonly client: LxdClient,
    /** The instance's API path (it changes with a rename) and name, for messages. */
    private readonly instance: () => { path: string; name: string },
  ) {
    super();
  }

  private url(p: string): string {
    return this.client.url(`${this.instance().path}/files`, { path: p });
  }

  private missing(p: string, e: unknown): never {
    if (e instanceof NotFound) throw new NotFound(`${p} does not exist in ${this.instance().name} (${e.message})`);
    throw e;
  }

  /** One GET: what is at `p` (not following a final symlink), with its content. */
  private async entry(p: string): Promise<Entry> {
    const r = await this.client.request('GET', this.url(p), undefined, { binary: true }).catch((e) => this.missing(p, e));
    const h = r.headers ?? {};
    const type = TYPES[String(h['x-lxd-type'])] ?? 'other';
    const stat: FileStat = {
      type,
      size: 0,
      mode: parseInt(String(h['x-lxd-mode'] ?? '0'), 8) & 0o7777,
      uid: Number(h['x-lxd-uid'] ?? 0),
      gid: Number(h['x-lxd-gid'] ?? 0),
      mtime: parseModified(h['x-lxd-modified'] as string | undefined),
    };
    if (type === 'directory') {
      const names = (JSON.parse(r.raw!.toString('utf8')).metadata ?? []) as string[];
      return { stat: { ...stat, size: 4096 }, names: names.sort((a, b) => (a < b ? -1 : a > b ? 1 : 0)) };
    }
    return { stat: { ...stat, size: r.raw!.length }, content: r.raw! };
  }

  /** The metadata alone (HEAD: no content is sent). */
  private async head(p: string): Promise<Pick<FileStat, 'type' | 'mode' | 'uid' | 'gid'> | undefined> {
    try {
      const r = await this.client.request('HEAD', this.url(p), undefined, { binary: true });
      const h = r.headers ?? {};
      return { type: TYPES[String(h['x-lxd-type'])] ?? 'other', mode: parseInt(String(h['x-lxd-mode'] ?? '0'), 8) & 0o7777, uid: Number(h['x-lxd-uid'] ?? 0), gid: Number(h['x-lxd-gid'] ?? 0) };
    } catch (e) {
      if (e instanceof NotFound) return undefined;
      throw e;
    }
  }

  /** What `p` leads to, symlinks followed inside the instance. */
  private async resolved(p: string): Promise<{ path: string; entry: Entry }> {
    let at = p;
    for (let hops = 0; hops <= MAX_LINKS; hops++) {
      const e = await this.entry(at);
      if (e.stat.type !== 'symlink') return { path: at, entry: e };
      const target = e.content!.toString('utf8');
      at = path.posix.resolve(path.posix.dirname(at), target);
    }
    throw new InvalidArgument(`${p}: more than ${MAX_LINKS} symbolic links`);
  }

  async read(p: string): Promise<Buffer> {
    const abs = '/' + instancePath(p);
    const { entry } = await this.resolved(abs);
    if (entry.stat.type === 'directory') throw new InvalidArgument(`${abs} is a directory`);
    return entry.content!;
  }

  async stat(p: string): Promise<FileStat> {
    return (await this.entry('/' + instancePath(p))).stat;
  }

  async list(p: string): Promise<DirEntry[]> {
    const abs = '/' + instancePath(p);
    const { path: dir, entry } = await this.resolved(abs);
    if (!entry.names) throw new InvalidArgument(`${abs} is not a directory`);
    const types = await Promise.all(entry.names.map(async (name) => (await this.head(path.posix.join(dir, name)))?.type));
    return entry.names.flatMap((name, i) => (types[i] ? [{ name, type: types[i]! }] : []));
  }

  async write(p: string, data: string | Buffer, options: WriteOptions = {}): Promise<void> {
    const abs = '/' + instancePath(p);
    const own = checkOwnership(options);
    const mode = own.mode ?? 0o644;
    const buf = typeof data === 'string' ? Buffer.from(data) : data;
    if (!Buffer.isBuffer(buf)) throw new InvalidArgument('data must be a string or a Buffer');
    const now = await this.head(abs);
    if (now?.type === 'directory') throw new InvalidArgument(`${abs} is a directory`);
    // LXD keeps an existing file's mode and owner: a file that must change them, or a symlink
    // (replaced, not written through), is removed first.
    if (now && (now.type !== 'file' || now.mode !== mode || now.uid !== own.uid || now.gid !== own.gid)) await this.delete(abs);
    await this.post(abs, 'file', buf, mode, own.uid, own.gid);
  }

  private async post(abs: string, type: 'file' | 'directory' | 'symlink', body: Buffer, mode: number, uid: number, gid: number): Promise<void> {
    const headers = { 'X-LXD-type': type, 'X-LXD-mode': mode.toString(8).padStart(4, '0'), 'X-LXD-uid': String(uid), 'X-LXD-gid': String(gid), 'X-LXD-write': 'overwrite' };
    await this.client.request('POST', this.url(abs), undefined, { raw: body, headers }).catch((e) => {
      if (e instanceof NotFound) throw new NotFound(`${path.posix.dirname(abs)} does not exist in ${this.instance().name} (${e.message})`);
      throw e;
    });
  }

  private async delete(abs: string): Promise<void> {
    await this.client.request('DELETE', this.url(abs)).catch((e) => this.missing(abs, e));
  }

  async push(hostPath: string, p: string, options: WriteOptions = {}): Promise<void> {
    instancePath(p);
    checkOwnership(options);
    const st = await fs.stat(hostPath).catch((e: NodeJS.ErrnoException) => Promise.reject(e.code === 'ENOENT' ? new NotFound(`${hostPath} does not exist on this host`) : e));
    if (!st.isFile()) throw new InvalidArgument(`${hostPath} is not a regular file`);
    await this.write(p, await fs.readFile(hostPath), { mode: st.mode & 0o7777, ...options });
  }

  async pull(p: string, hostPath: string): Promise<void> {
    const abs = '/' + instancePath(p);
    const { entry } = await this.resolved(abs);
    if (entry.stat.type !== 'file') throw new InvalidArgument(`${abs} is not a regular file`);
    await writeFileAtomic(hostPath, entry.content!, entry.stat.mode & 0o777);
  }

  async mkdir(p: string, options: WriteOptions & { parents?: boolean } = {}): Promise<void> {
    const abs = '/' + instancePath(p);
    const own = checkOwnership(options, MKDIR_OPTION_KEYS);
    const mode = own.mode ?? 0o755;
    const now = await this.head(abs);
    if (now) {
      if (options.parents && now.type === 'directory') return;
      throw new AlreadyExists(`${abs} already exists in ${this.instance().name}`);
    }
    if (options.parents) {
      const parent = path.posix.dirname(abs);
      if (parent !== abs && !(await this.head(parent))) await this.mkdir(parent, { parents: true });
    }
    await this.post(abs, 'directory', Buffer.alloc(0), mode, own.uid, own.gid);
  }

  async remove(p: string, options: { recursive?: boolean } = {}): Promise<void> {
    const rel = instancePath(p);
    if (rel === '' || path.posix.normalize('/' + rel) === '/') throw new InvalidArgument('refusing to remove / of an instance');
    const abs = '/' + rel;
    const e = await this.entry(abs);
    if (e.names && e.names.length) {
      if (!options.recursive) throw new InvalidArgument(`${abs} is a directory that is not empty (pass { recursive: true })`);
      for (const name of e.names) await this.remove(path.posix.join(abs, name), options);
    }
    await this.delete(abs);
  }

  /** LXD makes the link as root: its file API has no owner for symlinks (the options are checked, not applied). */
  async symlink(target: string, p: string, options: OwnerOptions = {}): Promise<void> {
    const abs = '/' + instancePath(p);
    checkLinkTarget(target);
    const own = checkOwnership(options, OWNER_OPTION_KEYS);
    if (await this.head(abs)) throw new AlreadyExists(`${abs} already exists in ${this.instance().name}`);
    await this.post(abs, 'symlink', Buffer.from(target), 0o777, own.uid, own.gid);
  }

  /** LXD answers with the target made absolute (a relative one joined to the link's directory), as `lxc file pull` sees it. */
  async readlink(p: string): Promise<string> {
    const abs = '/' + instancePath(p);
    const e = await this.entry(abs);
    if (e.stat.type !== 'symlink') throw new InvalidArgument(`${abs} is not a symlink`);
    return e.content!.toString('utf8');
  }

  /**
   * LXD answers every target absolute: one inside the tree pulled is archived relative to the
   * link again, so the tree's own links still work wherever it is pushed (an absolute link into
   * the tree becomes relative too: the API cannot tell them apart).
   */
  protected override async treeLink(at: string, root: string): Promise<string> {
    const target = await this.readlink(at);
    const inside = target === root || target.startsWith(root === '/' ? '/' : `${root}/`);
    return inside ? path.posix.relative(path.posix.dirname(at), target) || '.' : target;
  }

  async utimes(p: string, atime: Date, mtime: Date): Promise<void> {
    instancePath(p);
    checkTimes(atime, mtime);
    throw new NotSupported(`setting file times in ${this.instance().name} is not supported: LXD's file API has no way to set them`);
  }
}
