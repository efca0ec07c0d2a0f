/**
 * A VM's files through lxq's own guest agent (REQUEST, DATA and RESULT of native/agent/PROTOCOL.md):
 * content streams both ways under the agent's window (no size cap, at most a window held on
 * either side), and every path is resolved by the agent inside the guest's root with
 * openat2(RESOLVE_IN_ROOT) — the host only sends a normalised path and bytes, so nothing the guest
 * holds (".." or a symlink to /etc) can reach the host. Writes are atomic as a container's: the
 * agent fills a temporary file beside the target and renames it over the target at the end.
 * The agent's errno comes back as lxq's typed errors (ENOENT NotFound, EEXIST AlreadyExists,
 * EACCES/EPERM PermissionDenied, ENOSPC NoSpace, ENOTDIR/EISDIR/ENOTEMPTY/ELOOP/EINVAL InvalidArgument).
 */
import { constants as osConstants } from 'node:os';
import { promises as fs } from 'node:fs';
import * as path from 'node:path';

import { AlreadyExists, InvalidArgument, NoSpace, NotFound, OperationFailed, PermissionDenied } from '../../core/errors';
import { replaceFile } from '../../core/fs';
import {
  checkLinkTarget,
  checkOwnership,
  checkTimes,
  type DirEntry,
  type FileStat,
  type FileType,
  instancePath,
  MKDIR_OPTION_KEYS,
  OWNER_OPTION_KEYS,
  type OwnerOptions,
  type WriteOptions,
} from '../../instance/files';
import { TreeFiles } from '../../instance/trees';
import { typeOfMode } from './agent-files';
import type { LxqAgentClient } from './lxq-agent';
import { FrameType, MAX_DATA, MAX_PAYLOAD, Op, StreamId } from './lxq-agent-protocol';

const E = osConstants.errno;

/** The agent's errno for `p` as lxq's error. */
export function fileError(errno: number, message: string, p: string): Error {
  switch (errno) {
    case E.ENOENT:
      return new NotFound(`${p}: no such file or directory in the instance`);
    case E.EEXIST:
      return new AlreadyExists(`${p} already exists in the instance`);
    case E.EACCES:
    case E.EPERM:
      return new PermissionDenied(`${p}: ${message}`);
    case E.ENOSPC:
    case E.EDQUOT:
      return new NoSpace(`${p}: no space left in the instance`, p);
    case E.ENOTDIR:
    case E.EISDIR:
    case E.ENOTEMPTY:
    case E.ELOOP:
    case E.EXDEV:
    case E.EINVAL:
    case E.ENAMETOOLONG:
      return new InvalidArgument(`${p}: ${message}`);
    default:
      return new OperationFailed(`${p}: ${message}`, { call: 'lxq-agent:files', errno });
  }
}

interface RequestArgs {
  op: Op;
  /** Normalised, relative to the guest's root ("" for "/"). */
  rel: string;
  arg?: string;
  mode?: number;
  uid?: number;
  gid?: number;
  flags?: number;
}

function requestPayload(r: RequestArgs): Buffer {
  const fixed = Buffer.alloc(20);
  [r.op, r.mode ?? 0, r.uid ?? 0, r.gid ?? 0, r.flags ?? 0].forEach((v, i) => fixed.writeUInt32BE(v, i * 4));
  const payload = Buffer.concat([fixed, Buffer.from(`${r.rel}\0${r.arg ?? ''}\0`)]);
  if (payload.length > MAX_PAYLOAD) throw new InvalidArgument(`a path of ${payload.length} bytes is longer than the lxq agent takes`);
  return payload;
}

/**
 * One request on its own channel. `sink` takes the DATA of a read or a listing (awaited before
 * the agent is told it may send more); `source` gives the DATA of a write. Resolves with the
 * RESULT's payload (empty after a stream's end); rejects with the agent's error as lxq's, or
 * with the connection's end.
 */
export function agentRequest(
  client: LxqAgentClient,
  r: RequestArgs,
  p: string,
  io: { sink?: (chunk: Buffer) => Promise<void> | void; source?: AsyncIterable<Buffer> | Iterable<Buffer> } = {},
): Promise<Buffer> {
  const payload = requestPayload(r);
  return new Promise<Buffer>((resolve, reject) => {
    let settled = false;
    let channel = 0;
    let unacked = 0;
    let chain = Promise.resolve();
    let inFlight = 0;
    let wake: (() => void) | undefined;
    /** Ends the call. `cancel`: the host's side failed while the agent's transfer goes on. */
    const settle = (e: Error | undefined, v?: Buffer, cancel = false) => {
      if (settled) return;
      settled = true;
      if (cancel) client.send(FrameType.Cancel, channel);
      else client.release(channel);
      wake?.();
      if (e) reject(e);
      else resolve(v!);
    };
    const handler = {
      frame(type: FrameType, data: Buffer): string | undefined {
        if (settled) {
          // Cancelled: what was in flight is dropped until the transfer's last frame.
          if (type === FrameType.Error || type === FrameType.Result || (type === FrameType.Data && data.length === 0)) client.release(channel);
          return undefined;
        }
        if (type === FrameType.Result && !io.sink) return void settle(undefined, Buffer.from(data));
        if (type === FrameType.Error) {
          if (data.length < 4) return 'a malformed ERROR';
          const message = data.subarray(4, 4 + 1024).toString('utf8').replace(/^[^:]*: /, '');
          return void settle(fileError(data.readUInt32BE(0), message, p));
        }
        if (type === FrameType.Ack && io.source) {
          if (data.length !== 8 || data.readUInt8(0) !== StreamId.Stdin || data.readUInt32BE(4) > inFlight) return 'a malformed ACK';
          inFlight -= data.readUInt32BE(4);
          wake?.();
          return undefined;
        }
        if (type !== FrameType.Data || !io.sink) return `an unexpected frame of type ${type}`;
        if (data.length > MAX_DATA || unacked + data.length > client.agentWindow) return 'DATA past its window';
        if (data.length === 0) {
          chain.then(() => settle(undefined, Buffer.alloc(0)), (e: Error) => settle(e, undefined, true));
          return undefined;
        }
        unacked += data.length;
        const chunk = Buffer.from(data); // the payload is a view of the connection's buffer
        chain = chain.then(async () => {
          if (settled) return;
          await io.sink!(chunk);
          unacked -= chunk.length;
          const ack = Buffer.alloc(8);
          ack.writeUInt8(StreamId.Stdout, 0);
          ack.writeUInt32BE(chunk.length, 4);
          client.send(FrameType.Ack, channel, ack);
        });
        chain.catch((e: Error) => settle(e, undefined, true));
        return undefined;
      },
      lost: (reason: Error) => settle(reason),
    };
    try {
      channel = client.request(payload, handler);
    } catch (e) {
      return reject(e);
    }
    if (!io.source) return;
    const flow = {
      settled: () => settled,
      inFlight: () => inFlight,
      sent: (n: number) => (inFlight += n),
      acked: () => new Promise<void>((w) => (wake = w)),
    };
    // A failure on the host's side (a host file unreadable) rejects the call and cancels the
    // agent's transfer (its temporary file removed).
    sendSource(client, channel, io.source, flow).catch((e: Error) => settle(e, undefined, true));
  });
}

/** Sends a write's DATA, at most the agent's window unacknowledged, then its end. */
async function sendSource(
  client: LxqAgentClient,
  channel: number,
  source: AsyncIterable<Buffer> | Iterable<Buffer>,
  flow: { settled(): boolean; inFlight(): number; sent(n: number): void; acked(): Promise<void> },
): Promise<void> {
  for await (const buf of source) {
    for (let at = 0; at < buf.length; ) {
      if (flow.settled()) return;
      if (flow.inFlight() >= client.agentWindow) {
        await flow.acked();
        continue;
      }
      const size = Math.min(MAX_DATA, buf.length - at, client.agentWindow - flow.inFlight());
      flow.sent(size);
      client.send(FrameType.Data, channel, buf.subarray(at, at + size));
      at += size;
    }
  }
  if (!flow.settled()) client.send(FrameType.Data, channel);
}

const TYPES: Record<string, FileType> = { f: 'file', d: 'directory', l: 'symlink', o: 'other' };

/** The normalised path below "/" ("" for "/" itself). */
function normalised(p: string): string {
  return path.posix.normalize('/' + instancePath(p)).slice(1);
}

function below(p: string): string {
  const rel = normalised(p);
  if (rel === '') throw new InvalidArgument('this operation needs a path below "/", not "/" itself');
  return rel;
}

export class LxqAgentFiles extends TreeFiles {
  constructor(
    /** The connected agent, once the VM runs (InvalidState/NotSupported otherwise). */
    private readonly client: () => Promise<LxqAgentClient>,
  ) {
    super();
  }

  private async call(r: RequestArgs, p: string, io?: Parameters<typeof agentRequest>[3]): Promise<Buffer> {
    return agentRequest(await this.client(), r, p, io);
  }

  async read(p: string): Promise<Buffer> {
    const chunks: Buffer[] = [];
    await this.call({ op: Op.Read, rel: normalised(p) }, p, { sink: (b) => void chunks.push(b) });
    return Buffer.concat(chunks);
  }

  private async replace(p: string, options: WriteOptions | undefined, source: AsyncIterable<Buffer> | Iterable<Buffer>, defaultMode: number): Promise<void> {
    const { mode, uid, gid } = checkOwnership(options);
    await this.call({ op: Op.Write, rel: below(p), mode: mode ?? defaultMode, uid, gid }, p, { source });
  }

  async write(p: string, data: string | Buffer, options?: WriteOptions): Promise<void> {
    if (typeof data !== 'string' && !Buffer.isBuffer(data)) throw new InvalidArgument('data must be a string or a Buffer');
    const buf = Buffer.from(data);
    await this.replace(p, options, [buf], 0o644);
  }

  async push(hostPath: string, p: string, options?: WriteOptions): Promise<void> {
    if (typeof hostPath !== 'string' || !hostPath) throw new InvalidArgument('hostPath must be a path on the host');
    below(p);
    const st = await fs.stat(hostPath).catch(() => {
      throw new NotFound(`host file ${hostPath} does not exist`);
    });
    if (!st.isFile()) throw new InvalidArgument(`host path ${hostPath} is not a regular file`);
    const fh = await fs.open(hostPath, 'r');
    try {
      await this.replace(p, options, fh.createReadStream({ autoClose: false, highWaterMark: MAX_DATA * 4 }), st.mode & 0o7777);
    } finally {
      await fh.close();
    }
  }

  async pull(p: string, hostPath: string): Promise<void> {
    if (typeof hostPath !== 'string' || !hostPath) throw new InvalidArgument('hostPath must be a path on the host');
    const st = await this.stat(p);
    if (st.type !== 'file') throw new InvalidArgument(`${p} is not a regular file`);
    await replaceFile(hostPath, st.mode & 0o777, async (fh) => {
      await this.call({ op: Op.Read, rel: normalised(p) }, p, { sink: async (b) => void (await fh.write(b)) });
    });
  }

  async stat(p: string): Promise<FileStat> {
    const r = await this.call({ op: Op.Stat, rel: normalised(p) }, p);
    if (r.length !== 40) throw new OperationFailed(`${p}: the lxq agent's stat has ${r.length} bytes`, { call: 'lxq-agent:files' });
    const mode = r.readUInt32BE(0);
    const mtime = Number(r.readBigUInt64BE(24)) * 1000 + Math.floor(r.readUInt32BE(32) / 1e6);
    return { type: typeOfMode(mode), size: Number(r.readBigUInt64BE(16)), mode: mode & 0o7777, uid: r.readUInt32BE(4), gid: r.readUInt32BE(8), mtime: new Date(mtime) };
  }

  async list(p: string): Promise<DirEntry[]> {
    const chunks: Buffer[] = [];
    await this.call({ op: Op.List, rel: normalised(p) }, p, { sink: (b) => void chunks.push(b) });
    const text = Buffer.concat(chunks).toString('utf8');
    return text
      .split('\0')
      .filter(Boolean)
      .map((r) => ({ name: r.slice(1), type: TYPES[r[0]] ?? 'other' }))
      .sort((a, b) => (a.name < b.name ? -1 : 1));
  }

  async mkdir(p: string, options: WriteOptions & { parents?: boolean } = {}): Promise<void> {
    const { mode = 0o755, uid, gid } = checkOwnership(options, MKDIR_OPTION_KEYS);
    const rel = options.parents ? normalised(p) : below(p);
    if (rel === '') return;
    await this.call({ op: Op.Mkdir, rel, mode, uid, gid, flags: options.parents ? 1 : 0 }, p);
  }

  async remove(p: string, options: { recursive?: boolean } = {}): Promise<void> {
    await this.call({ op: Op.Remove, rel: below(p), flags: options.recursive ? 1 : 0 }, p);
  }

  /** Makes `p` a symlink to `target` (kept as given, resolved by the guest), owned as asked. */
  async symlink(target: string, p: string, options: OwnerOptions = {}): Promise<void> {
    checkLinkTarget(target);
    const { uid, gid } = checkOwnership(options, OWNER_OPTION_KEYS);
    await this.call({ op: Op.Symlink, rel: below(p), arg: target, uid, gid }, p);
  }

  /** Sets the times of `p`, not following a final symlink. */
  async utimes(p: string, atime: Date, mtime: Date): Promise<void> {
    checkTimes(atime, mtime);
    const parts = (d: Date) => {
      const ms = d.getTime();
      const s = Math.floor(ms / 1000);
      return `${s} ${(ms - s * 1000) * 1e6}`;
    };
    await this.call({ op: Op.Utimes, rel: normalised(p), arg: `${parts(atime)} ${parts(mtime)}` }, p);
  }

  /** The target of the symlink `p` (InvalidArgument if `p` is not one). */
  async readlink(p: string): Promise<string> {
    return (await this.call({ op: Op.Readlink, rel: below(p) }, p)).toString('utf8');
  }
}
