/**
 * The wire format of lxq's guest agent, as native/agent/PROTOCOL.md writes it down: frame types,
 * sizes, the HELLO, and the errors a connection ends with. lxq-agent.ts speaks it.
 */
import { OperationFailed } from '../../core/errors';

/** 2: file operations, the guest's state and interface settings (REQUEST, DATA, RESULT). */
export const VERSION = 2;
export const HEADER = 12;
export const MAGIC = Buffer.from('LXQAGENT');
/** What this side accepts whatever the agent says: its own maximum (PROTOCOL.md). */
export const MAX_PAYLOAD = 256 * 1024;
export const MAX_DATA = 32 * 1024;
export const AGENT_HELLO_SIZE = 28;
/** Each output stream's buffer before its consumer is asked to slow down. */
export const STREAM_HIGH_WATER = 64 * 1024;

export enum FrameType {
  Hello = 1,
  Ping = 2,
  Pong = 3,
  Error = 4,
  Exec = 16,
  Started = 17,
  Stdin = 18,
  Stdout = 19,
  Stderr = 20,
  Ack = 21,
  Signal = 22,
  Resize = 23,
  Exit = 24,
  Request = 32,
  Data = 33,
  Result = 34,
  Cancel = 35,
}

/** What a REQUEST asks (PROTOCOL.md, "Files and state"). */
export enum Op {
  Stat = 1,
  List = 2,
  Read = 3,
  Write = 4,
  Mkdir = 5,
  Remove = 6,
  Symlink = 7,
  Readlink = 8,
  State = 9,
  Nic = 10,
  Utimes = 11,
  Identity = 12,
}

/** A channel of a request (not a command): gets its frames, and the reason if the connection ends. */
export interface ChannelHandler {
  /** Returns what is wrong with the frame, if anything (a protocol error). */
  frame(type: FrameType, payload: Buffer): string | undefined;
  lost(reason: Error): void;
}

export enum StreamId {
  Stdin = 0,
  Stdout = 1,
  Stderr = 2,
}

/**
 * The agent sent something the protocol does not allow (a frame over the maximum size, of an
 * unknown type or the wrong size, output past its window); the connection was closed.
 *
 * @example
 * ```ts
 * await p.exit.catch((err) => err instanceof LxqAgentProtocolError);
 * ```
 */
export class LxqAgentProtocolError extends OperationFailed {
  constructor(message: string) {
    super(`lxq agent protocol error: ${message}`, { call: 'lxq-agent' });
  }
}

/**
 * The agent went away (its connection closed, or the guest closed its port) while a command
 * was starting or running.
 *
 * @example
 * ```ts
 * await p.exit.catch((err) => err instanceof LxqAgentLost);
 * ```
 */
export class LxqAgentLost extends OperationFailed {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, { call: 'lxq-agent' }, options);
  }
}

/** What a command is started with; `env` is the whole environment as "K=V" (see checkSpawn). */
export interface LxqAgentSpawnOptions {
  env: string[];
  cwd?: string;
  user?: number;
  group?: number;
  /** A terminal of this size; none when null or absent. */
  pty?: { cols: number; rows: number } | null;
}

export function frame(type: FrameType, channel: number, payload: Buffer = Buffer.alloc(0)): Buffer {
  const header = Buffer.alloc(HEADER);
  header.writeUInt32BE(payload.length, 0);
  header.writeUInt32BE(channel, 4);
  header.writeUInt8(type, 8);
  return Buffer.concat([header, payload]);
}

/** The first 20 bytes of the agent's HELLO: its header and the magic. */
export const AGENT_HELLO_PREFIX = Buffer.concat([frame(FrameType.Hello, 0).subarray(0, HEADER), MAGIC]);
AGENT_HELLO_PREFIX.writeUInt32BE(AGENT_HELLO_SIZE, 0);

/**
 * Hands each whole frame at the start of `buffer` to `onFrame` while `go()` holds; returns what
 * is left (copied, so that a whole chunk is not kept alive by less than a frame), or the problem
 * that ends the connection (a frame over the maximum, non-zero reserved bytes).
 */
export function takeFrames(buffer: Buffer, go: () => boolean, onFrame: (type: number, channel: number, payload: Buffer) => void): { rest: Buffer; problem?: string } {
  let pos = 0;
  while (go() && buffer.length - pos >= HEADER) {
    const length = buffer.readUInt32BE(pos);
    if (length > MAX_PAYLOAD) return { rest: Buffer.alloc(0), problem: `a frame of ${length} bytes (the maximum is ${MAX_PAYLOAD})` };
    if (buffer.readUIntBE(pos + 9, 3) !== 0) return { rest: Buffer.alloc(0), problem: 'a frame header with non-zero reserved bytes' };
    if (buffer.length - pos < HEADER + length) break;
    const channel = buffer.readUInt32BE(pos + 4);
    const type = buffer.readUInt8(pos + 8);
    const payload = buffer.subarray(pos + HEADER, pos + HEADER + length);
    pos += HEADER + length;
    onFrame(type, channel, payload);
  }
  return { rest: pos === 0 ? buffer : Buffer.from(buffer.subarray(pos)) };
}
