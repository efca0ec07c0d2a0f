/**
 * Container files, resolved inside the container's own root.
 *
 * Every path is opened with openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS) relative to the
 * container's root: the rootfs when stopped, `/proc/<init>/root` when running (its mount
 * namespace, so what the container has mounted is what is seen). Absolute symlinks and ".."
 * then resolve as they would inside the container and can never reach the host. Operations on a
 * final component (create, rename, mkdir, unlink) act on `/proc/self/fd/<parent>/<name>`, where
 * only the name is looked up, without following it.
 */
import { randomBytes } from 'node:crypto';
import { constants as C, createReadStream, createWriteStream, promises as fs } from 'node:fs';
import * as path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { promisify } from 'node:util';
import { close as closeCb, fstat as fstatCb, readFile as readFileCb } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';

import { AlreadyExists, InvalidArgument, LxqError, NotFound, OperationFailed } from '../../core/errors';
import { checkLinkTarget, checkOwnership, checkTimes, DirEntry, MKDIR_OPTION_KEYS, FileStat, FileType, instancePath, OWNER_OPTION_KEYS, OwnerOptions, WriteOptions } from '../../instance/files';
import { TreeFiles } from '../../instance/trees';
import { replaceFile } from '../../core/fs';
import { sys } from '../../native/sys';
import type { IdMap } from './host-facts';
import { hostId, nsId } from './idmap';

/** Linux x86-64/arm64 values; Node does not export O_PATH. */
export const O_PATH = 0o10000000;

const readFd = promisify(readFileCb) as (fd: number) => Promise<Buffer>;
const closeFd = promisify(closeCb);
const fstatFd = promisify(fstatCb);

/** Where the container's root is now, and its id map. */
export interface RootLocator {
  root(): Promise<string>;
  /** The container's id map (null for a privileged container: ids as on the host). */
  ids(): IdMap | null;
}

function typeOf(st: { isFile(): boolean; isDirectory(): boolean; isSymbolicLink(): boolean }): FileType {
  return st.isFile() ? 'file' : st.isDirectory() ? 'directory' : st.isSymbolicLink() ? 'symlink' : 'other';
}

function translate(e: unknown, p: string): Error {
  if (e instanceof LxqError) return e;
  const code = (e as NodeJS.ErrnoException).code;
  switch (code) {
    case 'ENOENT':
      return new NotFound(`${p}: no such file or directory in the instance`);
    case 'EEXIST':
      return new AlreadyExists(`${p} already exists in the instance`);
    case 'ENOTDIR':
    case 'EISDIR':
    case 'ENOTEMPTY':
    case 'ELOOP':
    case 'EXDEV':
      return new InvalidArgument(`${p}: ${(e as Error).message.replace(/^.*?: /, '')} (${code})`);
    default:
      return new OperationFailed(`${p}: ${(e as Error).message}`, { errno: (e as NodeJS.ErrnoException).errno }, { cause: e });
  }
}

export class ContainerFiles extends TreeFiles {
  constructor(private readonly locator: RootLocator) {
    super();
  }

  /** Opens `rel` (relative to the container's root) inside that root; returns an fd. */
  private async open(rel: string, flags: number, mode = 0): Promise<number> {
    return sys().openInRoot(await this.locator.root(), rel || '.', flags, mode);
  }

  /** The parent directory (opened, O_PATH) and the final name of a path; refuses "/". */
  private async parent(p: string): Promise<{ fd: number; name: string; at: string }> {
    const rel = path.posix.normalize('/' + instancePath(p)).slice(1);
    if (rel === '') throw new InvalidArgument('this operation needs a path below "/", not "/" itself');
    const fd = await this.open(path.posix.dirname(rel), O_PATH | C.O_DIRECTORY);
    const name = path.posix.basename(rel);
    return { fd, name, at: `/proc/self/fd/${fd}/${name}` };
  }

  private async withParent<T>(p: string, op: (at: string, dirAt: string) => Promise<T>): Promise<T> {
    try {
      const { fd, at } = await this.parent(p);
      try {
        return await op(at, `/proc/self/fd/${fd}`);
      } finally {
        await closeFd(fd);
      }
    } catch (e) {
      throw translate(e, p);
    }
  }

  async read(p: string): Promise<Buffer> {
    const rel = instancePath(p);
    try {
      const fd = await this.open(rel, C.O_RDONLY);
      try {
        if ((await fstatFd(fd)).isDirectory()) throw new InvalidArgument(`${p} is a directory`);
        return await readFd(fd);
      } finally {
        await closeFd(fd);
      }
    } catch (e) {
      throw translate(e, p);
    }
  }

  /** Writes through a temporary file in the target's directory, then renames it over the target. */
  private async replace(p: string, options: WriteOptions | undefined, fill: (file: FileHandle) => Promise<void>, defaultMode: () => Promise<number>, durable = true): Promise<void> {
    const { mode, uid, gid } = checkOwnership(options);
    await this.withParent(p, async (at, dirAt) => {
      const tmp = `${dirAt}/.lxq-${randomBytes(6).toString('hex')}.tmp`;
      const handle = await fs.open(tmp, C.O_WRONLY | C.O_CREAT | C.O_EXCL | C.O_NOFOLLOW, 0o600);
      try {
        await fill(handle);
        await handle.chown(hostId(this.locator.ids(), 'uid', uid), hostId(this.locator.ids(), 'gid', gid));
        await handle.chmod(mode ?? (await defaultMode())); // after chown, which clears set-id bits
        if (durable) await handle.sync();
        await handle.close();
        await fs.rename(tmp, at);
      } catch (e) {
        await handle.close().catch(() => undefined);
        await fs.rm(tmp, { force: true });
        throw e;
      }
    });
  }

  async write(p: string, data: string | Buffer, options?: WriteOptions): Promise<void> {
    if (typeof data !== 'string' && !Buffer.isBuffer(data)) throw new InvalidArgument('data must be a string or a Buffer');
    await this.replace(p, options, (file) => file.writeFile(data), async () => 0o644);
  }

  async push(hostPath: string, p: string, options?: WriteOptions): Promise<void> {
    await this.pushFile(hostPath, p, options, true);
  }

  /** A tree's files are not synced one by one (as tar -x does not): that was 10 ms a file here (bench/trees.ts); each is still whole or absent. */
  protected override async treeFile(hostPath: string, p: string, options: WriteOptions): Promise<void> {
    await this.pushFile(hostPath, p, options, false);
  }

  private async pushFile(hostPath: string, p: string, options: WriteOptions | undefined, durable: boolean): Promise<void> {
    if (typeof hostPath !== 'string' || !hostPath) throw new InvalidArgument('hostPath must be a path on the host');
    const st = await fs.stat(hostPath).catch(() => {
      throw new NotFound(`host file ${hostPath} does not exist`);
    });
    if (!st.isFile()) throw new InvalidArgument(`host path ${hostPath} is not a regular file`);
    await this.replace(
      p,
      options,
      // A small file in one read: setting up two streams costs more than its bytes.
      async (file) => (st.size <= 1024 * 1024 ? file.writeFile(await fs.readFile(hostPath)) : pipeline(createReadStream(hostPath), createWriteStream('', { fd: file.fd, autoClose: false }))),
      async () => st.mode & 0o7777,
      durable,
    );
  }

  async pull(p: string, hostPath: string): Promise<void> {
    if (typeof hostPath !== 'string' || !hostPath) throw new InvalidArgument('hostPath must be a path on the host');
    const rel = instancePath(p);
    let fd: number;
    try {
      fd = await this.open(rel, C.O_RDONLY);
    } catch (e) {
      throw translate(e, p);
    }
    try {
      const st = await fstatFd(fd);
      if (!st.isFile()) throw new InvalidArgument(`${p} is not a regular file`);
      await replaceFile(hostPath, st.mode & 0o777, (out) =>
        pipeline(createReadStream('', { fd, autoClose: false, start: 0 }), createWriteStream('', { fd: out.fd, autoClose: false })),
      );
    } finally {
      await closeFd(fd);
    }
  }

  async stat(p: string): Promise<FileStat> {
    const rel = path.posix.normalize('/' + instancePath(p)).slice(1);
    const st =
      rel === ''
        ? await this.open('.', O_PATH | C.O_DIRECTORY).then(async (fd) => {
            try {
              return await fs.lstat(`/proc/self/fd/${fd}/.`);
            } finally {
              await closeFd(fd);
            }
          })
        : await this.withParent(p, (at) => fs.lstat(at));
    return {
      type: typeOf(st),
      size: st.size,
      mode: st.mode & 0o7777,
      uid: nsId(this.locator.ids(), 'uid', st.uid),
      gid: nsId(this.locator.ids(), 'gid', st.gid),
      mtime: st.mtime,
    };
  }

  async list(p: string): Promise<DirEntry[]> {
    const rel = instancePath(p);
    try {
      const fd = await this.open(rel, C.O_RDONLY | C.O_DIRECTORY);
      try {
        const entries = await fs.readdir(`/proc/self/fd/${fd}`, { withFileTypes: true });
        return entries.map((e) => ({ name: e.name, type: typeOf(e) })).sort((a, b) => (a.name < b.name ? -1 : 1));
      } finally {
        await closeFd(fd);
      }
    } catch (e) {
      throw translate(e, p);
    }
  }

  async mkdir(p: string, options: WriteOptions & { parents?: boolean } = {}): Promise<void> {
    const { mode = 0o755, uid, gid } = checkOwnership(options, MKDIR_OPTION_KEYS);
    if (options.parents) {
      const parts = path.posix.normalize('/' + instancePath(p)).slice(1).split('/').filter(Boolean);
      for (let i = 1; i <= parts.length; i++) {
        const sub = '/' + parts.slice(0, i).join('/');
        const exists = await this.stat(sub).then((s) => s.type, () => undefined);
        if (exists === 'directory') continue;
        if (exists && exists !== 'symlink') throw new InvalidArgument(`${sub} exists and is not a directory`);
        if (exists === 'symlink') {
          await this.list(sub); // a symlink to a directory (inside the container) is fine to go through
          continue;
        }
        await this.mkdir(sub, { mode, uid, gid });
      }
      return;
    }
    await this.withParent(p, async (at) => {
      await fs.mkdir(at, { mode });
      await fs.lchown(at, hostId(this.locator.ids(), 'uid', uid), hostId(this.locator.ids(), 'gid', gid));
      await fs.chmod(at, mode);
    });
  }

  async remove(p: string, options: { recursive?: boolean } = {}): Promise<void> {
    await this.withParent(p, async (at) => {
      const st = await fs.lstat(at);
      if (!st.isDirectory()) return fs.unlink(at);
      if (options.recursive) await this.emptyDirectory(path.posix.normalize('/' + instancePath(p)).slice(1));
      await fs.rmdir(at);
    });
  }

  async symlink(target: string, p: string, options: OwnerOptions = {}): Promise<void> {
    checkLinkTarget(target);
    const { uid, gid } = checkOwnership(options, OWNER_OPTION_KEYS);
    await this.withParent(p, async (at) => {
      await fs.symlink(target, at);
      await fs.lchown(at, hostId(this.locator.ids(), 'uid', uid), hostId(this.locator.ids(), 'gid', gid));
    });
  }

  async readlink(p: string): Promise<string> {
    return this.withParent(p, async (at) => {
      if (!(await fs.lstat(at)).isSymbolicLink()) throw new InvalidArgument(`${p} is not a symlink`);
      return fs.readlink(at);
    });
  }

  async utimes(p: string, atime: Date, mtime: Date): Promise<void> {
    checkTimes(atime, mtime);
    if (path.posix.normalize('/' + instancePath(p)) === '/') {
      const fd = await this.open('.', O_PATH | C.O_DIRECTORY).catch((e) => Promise.reject(translate(e, p)));
      return fs.utimes(`/proc/self/fd/${fd}`, atime, mtime).finally(() => closeFd(fd));
    }
    await this.withParent(p, (at) => fs.lutimes(at, atime, mtime));
  }

  /**
   * Empties a directory one opened level at a time. Each level is opened inside the root with
   * O_NOFOLLOW and its entries are removed by name through that fd, so a container swapping a
   * directory for a symlink mid-walk makes the walk fail, never follow the link (fs.rm would walk
   * paths and could be led out of the container).
   */
  private async emptyDirectory(rel: string): Promise<void> {
    const fd = await this.open(rel, C.O_RDONLY | C.O_DIRECTORY | C.O_NOFOLLOW);
    try {
      for (const name of await fs.readdir(`/proc/self/fd/${fd}`)) {
        const at = `/proc/self/fd/${fd}/${name}`;
        if ((await fs.lstat(at)).isDirectory()) {
          await this.emptyDirectory(`${rel}/${name}`);
          await fs.rmdir(at);
        } else {
          await fs.unlink(at);
        }
      }
    } finally {
      await closeFd(fd);
    }
  }
}
