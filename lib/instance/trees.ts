/**
 * Directory trees as tar streams, once for every driver, over the file primitives of
 * InstanceFiles (stat, list, read, pull, push, mkdir, symlink, readlink, utimes, remove). A
 * driver's files class extends TreeFiles and gets pullTree and pushTree.
 *
 * pushTree's stream is hostile. It is read whole first, its files spooled to a private host
 * temporary directory, and checked: every header (checksum, truncation, sizes), every name (no
 * absolute name, no "..", nothing under a symlink of the archive, no control character), every
 * type (files, directories and symlinks; hard links, devices and fifos are refused, as `lxc file
 * push -r` refuses what it cannot make), owners in range, and what is already in the instance
 * (nothing is written through an existing symlink, no directory replaced by a file). Only then is
 * anything written, parents before children: a refused archive changes nothing. What can still
 * fail half-way is the instance itself (a full disk, a name too long for its filesystem, an
 * abort): then what this push made where nothing was is removed again (files it replaced keep
 * their new content: the primitives have no rename to stage a whole tree with; each file is
 * written atomically). A directory that already exists keeps its mode and owner, as with LXD. Symlinks are made
 * as they are in the archive, wherever they point: they are never followed by the extraction.
 *
 * pullTree walks the tree with stat (which never follows a final symlink): a symlink is archived
 * as a link, whatever it points to; devices, fifos and sockets are left out and reported to
 * `onSkip`; a virtual filesystem mounted inside (/proc, /sys, /dev…: see virtual-mounts.ts) is
 * archived as an empty directory and reported too. Names are relative to the directory pulled,
 * directories end with "/".
 */
import { promises as fs, createReadStream } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { Readable } from 'node:stream';

import { Aborted, InvalidArgument, NotFound, NotSupported } from '../core/errors';
import { refuseUnknownKeys } from '../core/keys';
import { readTar, TAR_END, tarHeader, tarPadding, type TarHeader } from '../core/pax';
import { checkMembers } from '../core/tar';
import { virtualMounts } from './virtual-mounts';
import { type DirEntry, type FileStat, type FileType, type InstanceFiles, instancePath, type OwnerOptions, PULL_TREE_OPTION_KEYS, type PullTreeOptions, TREE_OPTION_KEYS, type TreeOptions, type WriteOptions } from './files';

/** A file larger than this is pulled through a host temporary file, not held in memory. */
const IN_MEMORY = 8 * 1024 * 1024;
const STREAM = 'the tar stream';

function checkAbort(signal: AbortSignal | undefined, what: string): void {
  if (signal?.aborted) throw new Aborted(`${what} was aborted`);
}

export abstract class TreeFiles implements InstanceFiles {
  abstract read(path: string): Promise<Buffer>;
  abstract write(path: string, data: string | Buffer, options?: WriteOptions): Promise<void>;
  abstract push(hostPath: string, path: string, options?: WriteOptions): Promise<void>;
  abstract pull(path: string, hostPath: string): Promise<void>;
  abstract stat(path: string): Promise<FileStat>;
  abstract list(path: string): Promise<DirEntry[]>;
  abstract mkdir(path: string, options?: WriteOptions & { parents?: boolean }): Promise<void>;
  abstract remove(path: string, options?: { recursive?: boolean }): Promise<void>;
  abstract symlink(target: string, path: string, options?: OwnerOptions): Promise<void>;
  abstract readlink(path: string): Promise<string>;
  abstract utimes(path: string, atime: Date, mtime: Date): Promise<void>;

  /** Writes one file of a tree being pushed (from the host file the archive was spooled to). */
  protected async treeFile(hostPath: string, path: string, options: WriteOptions): Promise<void> {
    await this.push(hostPath, path, options);
  }

  /** A symlink's target as archived by pullTree (`root` is the directory pulled); a driver whose readlink loses the link's own form may improve on it. */
  protected async treeLink(at: string, _root: string): Promise<string> {
    return this.readlink(at);
  }

  async pullTree(p: string, options: PullTreeOptions = {}): Promise<Readable> {
    refuseUnknownKeys('pullTree', options, PULL_TREE_OPTION_KEYS);
    const root = path.posix.normalize('/' + instancePath(p));
    const { signal, onSkip } = options;
    if (onSkip !== undefined && typeof onSkip !== 'function') throw new InvalidArgument('onSkip must be a function');
    const what = `pulling ${root}`;
    checkAbort(signal, what);
    const first = await this.list(root); // NotFound, or InvalidArgument when not a directory
    const link = (at: string) => this.treeLink(at, root);
    const virtual = await virtualMounts(this);
    // A virtual filesystem asked for itself is not walked either: an empty stream, reported.
    if (virtual.has(root)) onSkip?.(root, 'directory');
    const entries = virtual.has(root) ? [] : first;
    const stream = Readable.from(pullEntries(this, root, entries, { signal, onSkip, what, link, virtual }), { objectMode: false });
    if (signal) {
      const abort = () => stream.destroy(new Aborted(`${what} was aborted`));
      signal.addEventListener('abort', abort, { once: true });
      stream.once('close', () => signal.removeEventListener('abort', abort));
    }
    return stream;
  }

  async pushTree(p: string, tar: Readable, options: TreeOptions = {}): Promise<void> {
    refuseUnknownKeys('pushTree', options, TREE_OPTION_KEYS);
    const root = path.posix.normalize('/' + instancePath(p));
    if (tar === null || typeof tar !== 'object' || typeof (tar as Partial<Readable>)[Symbol.asyncIterator] !== 'function') {
      throw new InvalidArgument('pushTree wants a readable stream of a tar archive');
    }
    const what = `pushing a tree to ${root}`;
    checkAbort(options.signal, what);
    const spool = await fs.mkdtemp(path.join(os.tmpdir(), 'lxq-tree-'));
    // A stream that stalls must not outlast an abort: it is ended with Aborted.
    const abort = () => tar.destroy(new Aborted(`${what} was aborted`));
    options.signal?.addEventListener('abort', abort, { once: true });
    try {
      const members = await spoolArchive(tar, spool, options.signal, what);
      const existing = await survey(this, root, members);
      await extract(this, root, members, existing, { signal: options.signal, what, put: (from, to, o) => this.treeFile(from, to, o) });
    } finally {
      options.signal?.removeEventListener('abort', abort);
      await fs.rm(spool, { recursive: true, force: true });
    }
  }
}

// ---- pull ----

interface PullContext {
  signal?: AbortSignal;
  onSkip?: (path: string, type: FileType) => void;
  what: string;
  link: (at: string) => Promise<string>;
  /** Mount points of virtual filesystems: archived as empty directories. */
  virtual: Set<string>;
  tmp?: string;
}

async function* pullEntries(files: TreeFiles, root: string, first: DirEntry[], ctx: PullContext): AsyncGenerator<Buffer> {
  try {
    yield* walk(files, root, '', first, ctx);
    yield TAR_END;
  } finally {
    if (ctx.tmp) await fs.rm(ctx.tmp, { recursive: true, force: true });
  }
}

async function* walk(files: TreeFiles, root: string, rel: string, entries: DirEntry[], ctx: PullContext): AsyncGenerator<Buffer> {
  for (const entry of entries) {
    checkAbort(ctx.signal, ctx.what);
    const name = rel ? `${rel}/${entry.name}` : entry.name;
    const at = path.posix.join(root, name);
    const st = await files.stat(at).catch((e) => (e instanceof NotFound ? undefined : Promise.reject(e)));
    if (!st) continue; // removed since it was listed
    const h: TarHeader = { name, type: 'file', mode: st.mode, uid: st.uid, gid: st.gid, mtime: st.mtime, size: 0 };
    if (st.type === 'directory' && ctx.virtual.has(at)) {
      yield tarHeader({ ...h, type: 'directory', name: `${name}/` });
      ctx.onSkip?.(at, 'directory');
    } else if (st.type === 'directory') {
      const children = await files.list(at);
      yield tarHeader({ ...h, type: 'directory', name: `${name}/` });
      yield* walk(files, root, name, children, ctx);
    } else if (st.type === 'symlink') {
      yield tarHeader({ ...h, type: 'symlink', linkname: await ctx.link(at) });
    } else if (st.type === 'file') {
      yield* pullFile(files, at, h, st.size, ctx);
    } else {
      ctx.onSkip?.(at, st.type);
    }
  }
}

/** A file's header and content; the size is what was read (the file may have changed since its stat). */
async function* pullFile(files: TreeFiles, at: string, h: TarHeader, statSize: number, ctx: PullContext): AsyncGenerator<Buffer> {
  if (statSize <= IN_MEMORY) {
    const data = await files.read(at);
    yield tarHeader({ ...h, size: data.length });
    yield data;
    yield tarPadding(data.length);
    return;
  }
  ctx.tmp ??= await fs.mkdtemp(path.join(os.tmpdir(), 'lxq-tree-'));
  const local = path.join(ctx.tmp, 'file');
  await files.pull(at, local);
  try {
    const { size } = await fs.stat(local);
    yield tarHeader({ ...h, size });
    for await (const chunk of createReadStream(local)) yield chunk as Buffer;
    yield tarPadding(size);
  } finally {
    await fs.rm(local, { force: true });
  }
}

// ---- push ----

/** One member to make: its name relative to the target ('' for the target itself), its header, and its spooled content. */
interface Member {
  name: string;
  header: TarHeader;
  file?: string;
}

/** Control characters (C0 and DEL) have no business in a member's name: they fake lines in listings and terminals. */
const CONTROL = { test: (s: string) => [...s].some((c) => c.charCodeAt(0) < 0x20 || c.charCodeAt(0) === 0x7f) };

/** Checks what a member is, on its own; returns its name with "." and empty components dropped. */
function checkMember(h: TarHeader): string {
  const quoted = JSON.stringify(h.name);
  if (h.type !== 'file' && h.type !== 'directory' && h.type !== 'symlink') {
    throw new NotSupported(`${STREAM} is refused: member ${quoted} is a ${h.type === 'other' ? 'kind of member' : h.type} lxq does not make (pushTree makes files, directories and symlinks; hard links, devices and fifos are refused)`);
  }
  if (h.name === '') throw new InvalidArgument(`${STREAM} is refused: a member has an empty name`);
  if (CONTROL.test(h.name)) throw new InvalidArgument(`${STREAM} is refused: member ${quoted} has a control character in its name`);
  if (h.type === 'symlink' && (!h.linkname || CONTROL.test(h.linkname))) throw new InvalidArgument(`${STREAM} is refused: symlink ${quoted} has an empty target or a control character in it`);
  for (const [k, v] of [['uid', h.uid], ['gid', h.gid]] as const) {
    if (v > 65535) throw new InvalidArgument(`${STREAM} is refused: member ${quoted} has ${k} ${v}, above the 65535 an instance's files can have`);
  }
  const name = (h.name.startsWith('/') ? '/' : '') + h.name.split('/').filter((c) => c !== '' && c !== '.').join('/');
  if (name === '' && h.type !== 'directory') throw new InvalidArgument(`${STREAM} is refused: member ${quoted} names the target directory but is a ${h.type}`);
  return name;
}

/** Reads the whole stream, files into `spool`; returns the members to make, in order, a name made once (the last of the same name wins, as tar). */
async function spoolArchive(tar: Readable, spool: string, signal: AbortSignal | undefined, what: string): Promise<Member[]> {
  const all: Member[] = [];
  let out: FileHandle | undefined;
  const close = async () => {
    await out?.close();
    out = undefined;
  };
  try {
    await readTar(
      tar,
      async (header) => {
        checkAbort(signal, what);
        await close();
        const member: Member = { name: checkMember(header), header };
        if (header.type === 'file') {
          member.file = path.join(spool, String(all.length));
          out = await fs.open(member.file, 'wx', 0o600);
        }
        all.push(member);
      },
      async (_h, chunk) => {
        if (out) await out.write(chunk);
      },
    );
  } finally {
    await close();
  }
  checkMembers(
    STREAM,
    all.map((m) => ({ kind: m.header.type === 'symlink' ? 'l' : m.header.type === 'directory' ? 'd' : '-', name: m.name, link: m.header.linkname })),
    { linksOut: true },
  );
  return unique(all);
}

/** The members by name (the last wins), refusing a name the archive makes both a directory and something else. */
function unique(all: Member[]): Member[] {
  const byName = new Map<string, Member>();
  const dirs = new Set<string>(['']);
  for (const m of all) {
    const parts = m.name.split('/');
    for (let i = 1; i < parts.length; i++) {
      const up = parts.slice(0, i).join('/');
      const made = byName.get(up);
      if (made && made.header.type !== 'directory') throw new InvalidArgument(`${STREAM} is refused: member ${JSON.stringify(m.header.name)} lies under ${JSON.stringify(up)}, a ${made.header.type} of the archive`);
      dirs.add(up);
    }
    const before = dirs.has(m.name) ? 'directory' : byName.get(m.name)?.header.type;
    if (m.name !== '' && before !== undefined && (before === 'directory') !== (m.header.type === 'directory')) {
      throw new InvalidArgument(`${STREAM} is refused: member ${JSON.stringify(m.header.name)} is a ${m.header.type} where the archive also has a ${before}`);
    }
    if (m.header.type === 'directory') dirs.add(m.name);
    byName.set(m.name, m);
  }
  return [...byName.values()];
}

/** What is in the instance where members go: 'missing' or its type. Refuses writing through anything but a directory, or over a directory. */
async function survey(files: TreeFiles, root: string, members: Member[]): Promise<Map<string, FileType | 'missing'>> {
  const seen = new Map<string, FileType | 'missing'>();
  const rootType = await files.stat(root).then(
    (s) => s.type,
    (e) => (e instanceof NotFound ? ('missing' as const) : Promise.reject(e)),
  );
  if (rootType === 'symlink') await files.list(root); // a symlink to a directory, as `tar -C` takes it
  else if (rootType !== 'missing' && rootType !== 'directory') throw new InvalidArgument(`${root} exists in the instance and is not a directory`);
  seen.set('', rootType === 'symlink' ? 'directory' : rootType);
  const look = async (rel: string): Promise<FileType | 'missing'> => {
    if (!seen.has(rel)) {
      const parent = rel.includes('/') ? rel.slice(0, rel.lastIndexOf('/')) : '';
      const up = await look(parent);
      const at = path.posix.join(root, rel);
      seen.set(rel, up === 'missing' ? 'missing' : await files.stat(at).then((s) => s.type, (e) => (e instanceof NotFound ? ('missing' as const) : Promise.reject(e))));
    }
    return seen.get(rel)!;
  };
  for (const m of members) {
    const parts = m.name.split('/');
    for (let i = 1; i < parts.length; i++) {
      const up = parts.slice(0, i).join('/');
      const t = await look(up);
      if (t !== 'missing' && t !== 'directory') {
        throw new InvalidArgument(`${STREAM} is refused: member ${JSON.stringify(m.header.name)} would be written under ${path.posix.join(root, up)}, a ${t} in the instance (nothing is written through a symlink)`);
      }
    }
    const t = await look(m.name);
    if (m.header.type !== 'directory' && t === 'directory') throw new InvalidArgument(`${STREAM} is refused: member ${JSON.stringify(m.header.name)} is a ${m.header.type}, and ${path.posix.join(root, m.name)} is a directory in the instance`);
    if (m.header.type === 'directory' && t !== 'missing' && t !== 'directory') throw new InvalidArgument(`${STREAM} is refused: member ${JSON.stringify(m.header.name)} is a directory, and ${path.posix.join(root, m.name)} is a ${t} in the instance`);
  }
  return seen;
}

/** How members are made: the abort, what is being done (for messages), and how a file is written. */
interface ExtractContext {
  signal?: AbortSignal;
  what: string;
  put: (hostPath: string, path: string, options: WriteOptions) => Promise<void>;
}

/** Makes the members (see extractMembers); on a failure, takes away what it made where nothing was. */
async function extract(files: TreeFiles, root: string, members: Member[], seen: Map<string, FileType | 'missing'>, ctx: ExtractContext): Promise<void> {
  const ready = new Set<string>([...seen].filter(([, t]) => t === 'directory').map(([rel]) => rel));
  const top = members.find((m) => m.name === '');
  // What this push made where nothing was: taken away again if it fails half-way.
  const created: string[] = [];
  try {
    if (seen.get('') === 'missing') {
      // The highest missing ancestor is what this push makes (mkdir -p below it).
      let highest = root;
      while (highest !== '/' && path.posix.dirname(highest) !== '/' && !(await files.stat(path.posix.dirname(highest)).then(() => true, (e) => (e instanceof NotFound ? false : Promise.reject(e))))) highest = path.posix.dirname(highest);
      if (root !== '/') await files.mkdir(path.posix.dirname(root), { parents: true });
      created.push(highest);
      await files.mkdir(root, top ? owner(top.header) : {});
      ready.add('');
    }
    await extractMembers(files, root, members, seen, ready, created, ctx);
  } catch (e) {
    for (const at of created.reverse()) await files.remove(at, { recursive: true }).catch(() => undefined);
    throw e;
  }
}

/** Makes the members, parents first (each made where nothing was added to `created`); then directories' times, deepest first (making their contents changed them). */
async function extractMembers(
  files: TreeFiles,
  root: string,
  members: Member[],
  seen: Map<string, FileType | 'missing'>,
  ready: Set<string>,
  created: string[],
  { signal, what, put }: ExtractContext,
): Promise<void> {
  const top = members.find((m) => m.name === '');
  const at = (rel: string) => path.posix.join(root, rel);
  const dirMembers = new Map(members.filter((m) => m.header.type === 'directory').map((m) => [m.name, m]));
  const made: Member[] = top && seen.get('') === 'missing' ? [top] : [];
  let times = true;
  const setTimes = async (m: Member) => {
    if (times) await files.utimes(at(m.name), new Date(), m.header.mtime).catch((e) => (e instanceof NotSupported ? (times = false) : Promise.reject(e)));
  };
  const makeDir = async (rel: string) => {
    if (ready.has(rel)) return;
    const m = dirMembers.get(rel);
    await files.mkdir(at(rel), m ? owner(m.header) : {});
    created.push(at(rel));
    ready.add(rel);
    if (m) made.push(m);
  };
  for (const m of members) {
    if (m.name === '') continue;
    checkAbort(signal, what);
    const parts = m.name.split('/');
    for (let i = 1; i <= parts.length; i++) if (i < parts.length || m.header.type === 'directory') await makeDir(parts.slice(0, i).join('/'));
    const h = m.header;
    const fresh = seen.get(m.name) === 'missing';
    if (h.type === 'file') await put(m.file!, at(m.name), owner(h));
    else if (h.type === 'symlink') {
      if (!fresh) await files.remove(at(m.name));
      await files.symlink(h.linkname!, at(m.name), { uid: h.uid, gid: h.gid });
    }
    if (h.type !== 'directory' && fresh) created.push(at(m.name));
    if (h.type !== 'directory') await setTimes(m);
  }
  // A directory that was there keeps its mode, owner and times (LXD's push -r does the same).
  for (const m of made.reverse()) await setTimes(m);
}

function owner(h: TarHeader): WriteOptions {
  return { mode: h.mode, uid: h.uid, gid: h.gid };
}
