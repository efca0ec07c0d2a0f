/**
 * Files of a running VM through the guest agent. Content moves with `guest-file-open/read/write/
 * close` (base64, 48 KiB chunks); what the agent of QEMU 7.2 has no command for (stat, list,
 * mkdir, remove, chmod/chown, rename) runs as a small busybox shell script through `guest-exec`.
 *
 * Every path is resolved by the guest kernel, inside the guest: a symlink or ".." in the guest
 * points somewhere in the guest, never on the host — the host only ever sees bytes over the
 * agent channel, so no host escape is possible. The VM must be running (its agent answering):
 * files of a stopped VM are refused with NotSupported (a container's are not: its root is on the
 * host).
 *
 * Writes are atomic like a container's: a temporary file in the target's directory, then
 * chown, chmod and `mv` over the target (a rename: a symlink target is replaced, not followed).
 */
import { randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import * as path from 'node:path';

import { AlreadyExists, InvalidArgument, LxqError, NotFound, NotSupported, OperationFailed } from '../../core/errors';
import { checkLinkTarget, checkOwnership, DirEntry, MKDIR_OPTION_KEYS, FileStat, FileType, instancePath, OWNER_OPTION_KEYS, OwnerOptions, WriteOptions } from '../../instance/files';
import { TreeFiles } from '../../instance/trees';
import type { GuestAgent } from './agent';
import { agentSpawn } from './agent-exec';
import { collect } from '../../instance/process';
import { replaceFile } from '../../core/fs';

const CHUNK = 48 * 1024;
const ENV = ['PATH=/usr/sbin:/usr/bin:/sbin:/bin', 'LANG=C'];

/** Maps the guest's errno text (from the agent or a busybox tool) to lxq's errors. */
function translate(message: string, p: string): Error {
  if (/No such file or directory/.test(message)) return new NotFound(`${p}: no such file or directory in the instance`);
  if (/File exists/.test(message)) return new AlreadyExists(`${p} already exists in the instance`);
  for (const [text, code] of [
    ['Not a directory', 'ENOTDIR'],
    ['Is a directory', 'EISDIR'],
    ['Directory not empty', 'ENOTEMPTY'],
    ['Too many levels of symbolic links', 'ELOOP'],
    ['Invalid argument', 'EINVAL'],
  ]) {
    if (message.includes(text)) return new InvalidArgument(`${p}: ${text.toLowerCase()} (${code})`);
  }
  return new OperationFailed(`${p}: ${message}`, { call: 'qga' });
}

function typeOf(c: string): FileType {
  return c === 'f' ? 'file' : c === 'd' ? 'directory' : c === 'l' ? 'symlink' : 'other';
}

/** S_IFMT of st_mode to a file type. */
export function typeOfMode(mode: number): FileType {
  switch (mode & 0o170000) {
    case 0o100000:
      return 'file';
    case 0o040000:
      return 'directory';
    case 0o120000:
      return 'symlink';
    default:
      return 'other';
  }
}

export class AgentFiles extends TreeFiles {
  constructor(
    private readonly agent: GuestAgent,
    /** Rejects unless the VM runs. */
    private readonly ready: () => Promise<void>,
  ) {
    super();
  }

  /** Runs a busybox sh script in the guest with args; returns stdout, or throws from stderr. */
  private async sh(p: string, script: string, args: string[]): Promise<Buffer> {
    await this.ready();
    const proc = await agentSpawn(this.agent, ['/bin/sh', '-c', script, 'sh', ...args], ENV, '/', undefined);
    const r = await collect(proc, { timeout: 60_000 }, 'a file operation');
    if (r.exitCode !== 0) throw translate(r.stderr.toString().trim() || `exit ${r.exitCode ?? r.signal}`, p);
    return r.stdout;
  }

  private async open(p: string, mode: string): Promise<number> {
    await this.ready();
    return this.agent.execute<number>('guest-file-open', { path: p, mode }).catch((e) => {
      throw e instanceof LxqError && e.code === 'OPERATION_FAILED' ? translate((e as Error).message, p) : e;
    });
  }

  private async readAll(p: string, onChunk: (b: Buffer) => Promise<void> | void): Promise<void> {
    const handle = await this.open(p, 'r');
    try {
      for (;;) {
        const r = await this.agent.execute<{ count: number; 'buf-b64': string; eof: boolean }>('guest-file-read', { handle, count: CHUNK }).catch((e) => {
          throw translate((e as Error).message, p);
        });
        if (r.count) await onChunk(Buffer.from(r['buf-b64'], 'base64'));
        if (r.eof || r.count === 0) return;
      }
    } finally {
      await this.agent.execute('guest-file-close', { handle }).catch(() => undefined);
    }
  }

  async read(p: string): Promise<Buffer> {
    instancePath(p);
    const chunks: Buffer[] = [];
    await this.readAll(p, (b) => void chunks.push(b));
    return Buffer.concat(chunks);
  }

  /** Writes `data` to a temporary file beside `p`, then sets owner and mode and renames it over `p`. */
  private async replace(p: string, options: WriteOptions | undefined, data: Buffer | (() => AsyncIterable<Buffer>), defaultMode: number): Promise<void> {
    const rel = instancePath(p);
    const { mode, uid, gid } = checkOwnership(options);
    const target = path.posix.normalize('/' + rel);
    if (target === '/') throw new InvalidArgument('this operation needs a path below "/", not "/" itself');
    const tmp = path.posix.join(path.posix.dirname(target), `.lxq-${randomBytes(6).toString('hex')}.tmp`);
    const handle = await this.open(tmp, 'w'); // a new random name (the agent has no O_EXCL mode)
    let closed = false;
    try {
      const write = async (b: Buffer) => {
        for (let off = 0; off < b.length; off += CHUNK) {
          await this.agent.execute('guest-file-write', { handle, 'buf-b64': b.subarray(off, off + CHUNK).toString('base64') });
        }
      };
      if (Buffer.isBuffer(data)) await write(data);
      else for await (const b of data()) await write(b);
      await this.agent.execute('guest-file-close', { handle });
      closed = true;
      await this.sh(p, 'chown "$1" "$3" && chmod "$2" "$3" && mv -f "$3" "$4"', [`${uid}:${gid}`, (mode ?? defaultMode).toString(8), tmp, target]);
    } catch (e) {
      if (!closed) await this.agent.execute('guest-file-close', { handle }).catch(() => undefined);
      await this.sh(tmp, 'rm -f "$1"', [tmp]).catch(() => undefined);
      throw e;
    }
  }

  async write(p: string, data: string | Buffer, options?: WriteOptions): Promise<void> {
    if (typeof data !== 'string' && !Buffer.isBuffer(data)) throw new InvalidArgument('data must be a string or a Buffer');
    await this.replace(p, options, Buffer.from(data), 0o644);
  }

  async push(hostPath: string, p: string, options?: WriteOptions): Promise<void> {
    if (typeof hostPath !== 'string' || !hostPath) throw new InvalidArgument('hostPath must be a path on the host');
    instancePath(p);
    const st = await fs.stat(hostPath).catch(() => {
      throw new NotFound(`host file ${hostPath} does not exist`);
    });
    if (!st.isFile()) throw new InvalidArgument(`host path ${hostPath} is not a regular file`);
    await this.replace(
      p,
      options,
      async function* () {
        const fh = await fs.open(hostPath, 'r');
        try {
          for (;;) {
            const buf = Buffer.alloc(CHUNK);
            const { bytesRead } = await fh.read(buf, 0, CHUNK, null);
            if (bytesRead === 0) return;
            yield buf.subarray(0, bytesRead);
          }
        } finally {
          await fh.close();
        }
      },
      st.mode & 0o7777,
    );
  }

  async pull(p: string, hostPath: string): Promise<void> {
    if (typeof hostPath !== 'string' || !hostPath) throw new InvalidArgument('hostPath must be a path on the host');
    const st = await this.stat(p);
    if (st.type !== 'file') throw new InvalidArgument(`${p} is not a regular file`);
    await replaceFile(hostPath, st.mode & 0o777, (fh) => this.readAll(p, async (b) => void (await fh.write(b))));
  }

  async stat(p: string): Promise<FileStat> {
    instancePath(p);
    // busybox stat does not follow a final symlink unless -L: %f raw mode (hex), size, uid, gid, mtime.
    const out = (await this.sh(p, 'exec stat -c "%f %s %u %g %Y" -- "$1"', [p])).toString().trim();
    const [modeHex, size, uid, gid, mtime] = out.split(' ');
    const raw = parseInt(modeHex, 16);
    return { type: typeOfMode(raw), size: Number(size), mode: raw & 0o7777, uid: Number(uid), gid: Number(gid), mtime: new Date(Number(mtime) * 1000) };
  }

  async list(p: string): Promise<DirEntry[]> {
    instancePath(p);
    // One record per entry: a type letter and the name, NUL-terminated (names may hold newlines).
    const script =
      // The errno text of the guest's shell varies (dash says only "can't cd"): say it here.
      'if ! [ -d "$1" ]; then if [ -e "$1" ]; then echo "Not a directory" >&2; else echo "No such file or directory" >&2; fi; exit 1; fi; ' +
      'cd -- "$1" || exit 1; for f in * .*; do ' +
      'case "$f" in .|..) continue;; esac; ' +
      'if [ -L "$f" ]; then t=l; elif [ -f "$f" ]; then t=f; elif [ -d "$f" ]; then t=d; elif [ -e "$f" ]; then t=o; else continue; fi; ' +
      'printf "%s%s\\0" "$t" "$f"; done';
    const out = await this.sh(p, script, [p]);
    return out
      .toString()
      .split('\0')
      .filter(Boolean)
      .map((r) => ({ name: r.slice(1), type: typeOf(r[0]) }))
      .sort((a, b) => (a.name < b.name ? -1 : 1));
  }

  async mkdir(p: string, options: WriteOptions & { parents?: boolean } = {}): Promise<void> {
    const rel = instancePath(p);
    const { mode = 0o755, uid, gid } = checkOwnership(options, MKDIR_OPTION_KEYS);
    if (path.posix.normalize('/' + rel) === '/' && !options.parents) throw new InvalidArgument('this operation needs a path below "/", not "/" itself');
    const script = options.parents
      ? '[ -d "$1" ] && exit 0; mkdir -p -- "$1" && chown "$2" "$1" && chmod "$3" "$1"'
      : 'mkdir -- "$1" && chown -h "$2" "$1" && chmod "$3" "$1"';
    await this.sh(p, script, [p, `${uid}:${gid}`, mode.toString(8)]);
  }

  async remove(p: string, options: { recursive?: boolean } = {}): Promise<void> {
    const rel = instancePath(p);
    if (path.posix.normalize('/' + rel) === '/') throw new InvalidArgument('this operation needs a path below "/", not "/" itself');
    // rm -r does not follow symlinks; a directory without recursive must be empty (rmdir).
    const script =
      '[ -e "$1" ] || [ -L "$1" ] || { echo "$1: No such file or directory" >&2; exit 1; }; ' +
      'if [ -d "$1" ] && [ ! -L "$1" ]; then if [ "$2" = 1 ]; then exec rm -rf -- "$1"; else exec rmdir -- "$1"; fi; else exec rm -f -- "$1"; fi';
    await this.sh(p, script, [p, options.recursive ? '1' : '0']);
  }

  async symlink(target: string, p: string, options: OwnerOptions = {}): Promise<void> {
    checkLinkTarget(target);
    const { uid, gid } = checkOwnership(options, OWNER_OPTION_KEYS);
    const rel = instancePath(p);
    if (path.posix.normalize('/' + rel) === '/') throw new InvalidArgument('this operation needs a path below "/", not "/" itself');
    await this.sh(p, 'ln -s -- "$1" "$2" && chown -h "$3" "$2"', [target, p, `${uid}:${gid}`]);
  }

  async readlink(p: string): Promise<string> {
    instancePath(p);
    const script = '[ -L "$1" ] || { [ -e "$1" ] && echo "Invalid argument" >&2 || echo "No such file or directory" >&2; exit 1; }; readlink -- "$1"';
    return (await this.sh(p, script, [p])).toString().replace(/\n$/, '');
  }

  /** qemu-ga has no call for it, and busybox touch cannot set a symlink's own times. */
  async utimes(): Promise<void> {
    throw new NotSupported("setting file times in a vm through qemu-ga is not supported (its image has no lxq agent): pushTree leaves the times as written");
  }
}
