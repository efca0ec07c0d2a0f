/**
 * Generic protocol machinery shared by the QMP and guest-agent clients: JSON messages, one per
 * line, over a stream socket. It knows nothing of greetings, capabilities or events; it gives:
 *
 *  - framing: bytes are split on "\n" (QEMU sends "\r\n"), each line parsed as JSON; a line that is
 *    not JSON closes the connection (the stream can no longer be trusted);
 *  - requests matched by a key, each with its own timeout, settled from a `{"return"}` /
 *    `{"error"}` reply the owner hands back with `settle()`;
 *  - one-off waiters (`expect()`) that see messages first, optionally after discarding every byte
 *    up to a delimiter (the guest agent's 0xFF resynchronisation);
 *  - a single failure path: when the socket drops, every pending call and waiter rejects at once
 *    with the same QmpConnectionError, and 'close' fires once.
 */
import * as net from 'node:net';
import { EventEmitter } from 'eventemitter3';
import { QmpCommandError, QmpConnectionError, QmpProtocolError, QmpTimeoutError } from './errors';

/**
 * A JSON object as the connection sends and receives it.
 *
 * @example
 * ```ts
 * const msg: JsonObject = { execute: 'query-status' };
 * ```
 */
export type JsonObject = Record<string, unknown>;

/**
 * Default timeout of connect and of every command, ms.
 *
 * @example
 * ```ts
 * console.log(DEFAULT_TIMEOUT); // ms
 * ```
 */
export const DEFAULT_TIMEOUT = 10_000;

export function isObject(v: unknown): v is JsonObject {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/**
 * Where to connect: a unix socket path, or a socket (connected or connecting) to adopt.
 *
 * @example
 * ```ts
 * await QmpClient.connect('/run/vm1/qmp.sock'); // or an already connected net.Socket
 * ```
 */
export type Target = string | net.Socket;

/**
 * Events of a JsonConnection.
 *
 * @example
 * ```ts
 * conn.on('close', () => console.log('closed'));
 * ```
 */
export interface ConnectionEvents {
  /** A parsed message not consumed by a waiter. */
  message: [msg: JsonObject];
  /** Fired once. `error` is undefined when close() was called, else why the connection died. */
  close: [error: QmpConnectionError | undefined];
}

interface Pending {
  command: string;
  resolve(value: unknown): void;
  reject(err: Error): void;
  timer?: NodeJS.Timeout;
}

/**
 * How long `JsonConnection.expect` waits for a matching message.
 *
 * @example
 * ```ts
 * await conn.expect({ accept: (m) => 'QMP' in m, command: 'greeting', timeout: 5000 });
 * ```
 */
export interface ExpectOptions {
  /** Which message ends the wait. */
  accept(msg: JsonObject): boolean;
  /** Name used in errors. */
  command: string;
  /** ms; 0 or Infinity: wait forever. */
  timeout: number;
  timeoutMessage?: string;
  /** Discard input up to and including this byte, then test the next line; a line that is not
   *  accepted (or not JSON) sends the framer back to discarding. If the wait times out, the
   *  framer stays tolerant (discarding up to the byte, dropping what is not JSON) until a later
   *  resync succeeds: the answer may still come, late. */
  resyncByte?: number;
}

interface Waiter extends ExpectOptions {
  resolve(msg: JsonObject): void;
  reject(err: Error): void;
  timer?: NodeJS.Timeout;
}

function armTimer(ms: number, fire: () => void): NodeJS.Timeout | undefined {
  return ms > 0 && Number.isFinite(ms) ? setTimeout(fire, ms) : undefined;
}

function preview(s: string): string {
  return JSON.stringify(s.length > 120 ? s.slice(0, 120) + '…' : s);
}

/**
 * Newline-delimited JSON over a unix socket: the transport under the QMP and guest-agent clients.
 *
 * @example
 * ```ts
 * const conn = await JsonConnection.open('/run/vm1/qmp.sock', 5000);
 * await conn.write({ execute: 'qmp_capabilities' });
 * ```
 */
export class JsonConnection extends EventEmitter<ConnectionEvents> {
  private readonly pending = new Map<string, Pending>();
  private waiter?: Waiter;
  private partial: Buffer[] = [];
  /** Resynchronising: the delimiter byte, and whether we are still looking for it. */
  private resync?: { byte: number; discarding: boolean };
  private ended?: QmpConnectionError;
  private socketError?: NodeJS.ErrnoException;
  private readonly closedPromise: Promise<void>;

  /**
   * Connect to a unix socket path (or adopt a socket) within `timeout` ms. With `retry`, a path
   * that does not exist yet or refuses (ENOENT, ECONNREFUSED: a QEMU just spawned creates the
   * socket file at bind(), a little before listen()) is tried again every 10 ms until the timeout.
   */
  static async open(target: Target, timeout: number, retry = false): Promise<JsonConnection> {
    const deadline = Date.now() + timeout;
    const bounded = timeout > 0 && Number.isFinite(timeout);
    for (;;) {
      try {
        return await JsonConnection.openOnce(target, bounded ? Math.max(1, deadline - Date.now()) : 0);
      } catch (err) {
        const code = err instanceof QmpConnectionError ? err.code : undefined;
        if (!retry || typeof target !== 'string' || (code !== 'ENOENT' && code !== 'ECONNREFUSED')) throw err;
        if (bounded && Date.now() + 10 >= deadline) {
          throw new QmpTimeoutError('connect', timeout, `connect to ${target}: nobody listening within ${timeout} ms (${code})`);
        }
        await new Promise((r) => setTimeout(r, 10));
      }
    }
  }

  private static openOnce(target: Target, timeout: number): Promise<JsonConnection> {
    const socket = typeof target === 'string' ? net.createConnection({ path: target }) : target;
    return new Promise((resolve, reject) => {
      const where = typeof target === 'string' ? target : 'socket';
      const done = (err?: Error) => {
        clearTimeout(timer);
        socket.off('connect', onConnect);
        socket.off('error', onError);
        if (err) {
          socket.destroy();
          reject(err);
        } else resolve(new JsonConnection(socket));
      };
      const onConnect = () => done();
      const onError = (e: NodeJS.ErrnoException) =>
        done(new QmpConnectionError(`cannot connect to ${where}: ${e.message}`, { cause: e, code: e.code }));
      const timer = armTimer(timeout, () =>
        done(new QmpTimeoutError('connect', timeout, `connect to ${where}: not connected within ${timeout} ms`)),
      );
      if (socket.destroyed) return done(new QmpConnectionError(`cannot connect to ${where}: socket is destroyed`));
      if (!socket.connecting) return done();
      socket.once('connect', onConnect);
      socket.once('error', onError);
    });
  }

  constructor(private readonly socket: net.Socket) {
    super();
    this.closedPromise = new Promise((resolve) => socket.once('close', () => resolve()));
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('error', (e: NodeJS.ErrnoException) => (this.socketError ??= e));
    socket.on('end', () => this.fail(this.lostError()));
    socket.on('close', () => this.fail(this.lostError()));
  }

  private byClient = false;

  /** True if close() ended the connection. */
  get closedByClient(): boolean {
    return this.byClient;
  }

  /** Why the connection is unusable, or undefined while it is open. */
  get closedReason(): QmpConnectionError | undefined {
    return this.ended;
  }

  /** Write one message (and an optional raw prefix) as one line; resolves once handed to the OS. */
  write(msg: JsonObject, prefix?: Buffer): Promise<void> {
    if (this.ended) return Promise.reject(this.ended);
    const line = Buffer.from(JSON.stringify(msg) + '\n');
    return new Promise((resolve, reject) => {
      this.socket.write(prefix ? Buffer.concat([prefix, line]) : line, (err) =>
        err ? reject(this.ended ?? new QmpConnectionError(`write failed: ${err.message}`, { cause: err })) : resolve(),
      );
    });
  }

  /** Send `msg` and wait for the reply the owner passes to `settle(key, ...)`. */
  request<T>(key: string, msg: JsonObject, command: string, timeout: number): Promise<T> {
    if (this.ended) return Promise.reject(this.ended);
    if (this.pending.has(key)) return Promise.reject(new Error(`duplicate request key ${key}`));
    return new Promise<T>((resolve, reject) => {
      const p: Pending = { command, resolve: resolve as (v: unknown) => void, reject };
      p.timer = armTimer(timeout, () => {
        this.pending.delete(key); // a late reply finds no entry and is dropped
        reject(new QmpTimeoutError(command, timeout));
      });
      this.pending.set(key, p);
      // No write callback: a failed write destroys the socket, and the close path rejects the call.
      this.socket.write(JSON.stringify(msg) + '\n');
    });
  }

  /**
   * Settle the request `key` with a reply: `{"return": x}` resolves with x, `{"error": {class,
   * desc}}` rejects with QmpCommandError, anything else is a protocol error (fatal). Returns false
   * when no such request is pending (e.g. it timed out): the reply is dropped.
   */
  settle(key: string, reply: JsonObject): boolean {
    const p = this.pending.get(key);
    if (!p) return false;
    this.pending.delete(key);
    clearTimeout(p.timer);
    if ('return' in reply) {
      p.resolve(reply.return);
    } else if (isObject(reply.error)) {
      const { class: cls, desc } = reply.error;
      p.reject(new QmpCommandError(p.command, String(cls ?? 'GenericError'), String(desc ?? '')));
    } else {
      const err = new QmpProtocolError(`${p.command}: reply has neither "return" nor "error"`, reply);
      p.reject(err);
      this.fail(err);
    }
    return true;
  }

  /** Wait for the next message that `accept`s (see ExpectOptions). One waiter at a time. */
  expect(opts: ExpectOptions): Promise<JsonObject> {
    if (this.ended) return Promise.reject(this.ended);
    if (this.waiter) return Promise.reject(new Error('expect(): another waiter is active'));
    return new Promise((resolve, reject) => {
      const w: Waiter = { ...opts, resolve, reject };
      w.timer = armTimer(opts.timeout, () => {
        if (this.waiter === w) this.waiter = undefined;
        if (this.resync) this.resync.discarding = true;
        reject(new QmpTimeoutError(opts.command, opts.timeout, opts.timeoutMessage));
      });
      if (opts.resyncByte !== undefined) {
        this.resync = { byte: opts.resyncByte, discarding: true };
        this.partial = []; // a half-received line is stale too
      }
      this.waiter = w;
    });
  }

  /** Tear the connection down with `error`: every pending call and waiter rejects with it. */
  fail(error: QmpConnectionError): void {
    if (this.ended) return;
    this.ended = error;
    this.partial = [];
    for (const p of this.pending.values()) {
      clearTimeout(p.timer);
      p.reject(error);
    }
    this.pending.clear();
    const w = this.waiter;
    this.waiter = undefined;
    if (w) {
      clearTimeout(w.timer);
      w.reject(error);
    }
    this.socket.destroy();
    this.emit('close', this.byClient ? undefined : error);
  }

  /** Close the socket; pending calls reject with QmpConnectionError. Resolves once closed. */
  close(): Promise<void> {
    if (!this.ended) this.byClient = true;
    this.fail(new QmpConnectionError('connection closed by client'));
    return this.closedPromise;
  }

  private lostError(): QmpConnectionError {
    const e = this.socketError;
    return e
      ? new QmpConnectionError(`connection lost: ${e.message}`, { cause: e, code: e.code })
      : new QmpConnectionError('connection closed by peer');
  }

  private onData(data: Buffer): void {
    let start = 0;
    while (start < data.length && !this.ended) {
      if (this.resync?.discarding) {
        const at = data.indexOf(this.resync.byte, start);
        if (at < 0) return;
        this.resync.discarding = false;
        this.partial = [];
        start = at + 1;
        continue;
      }
      const nl = data.indexOf(0x0a, start);
      if (nl < 0) {
        this.partial.push(data.subarray(start));
        return;
      }
      this.partial.push(data.subarray(start, nl));
      start = nl + 1;
      const line = this.partial.length === 1 ? this.partial[0] : Buffer.concat(this.partial);
      this.partial = [];
      this.onLine(line.toString('utf8').trim());
    }
  }

  private onLine(text: string): void {
    if (!text) return;
    const w = this.waiter;
    let msg: unknown;
    try {
      msg = JSON.parse(text);
    } catch {
      if (this.resync) return void (this.resync.discarding = true);
      return this.fail(new QmpConnectionError(`peer sent unparsable JSON: ${preview(text)}`));
    }
    if (!isObject(msg)) {
      if (this.resync) return void (this.resync.discarding = true);
      return this.fail(new QmpProtocolError(`peer sent a non-object message: ${preview(text)}`, msg));
    }
    if (w) {
      if (w.accept(msg)) {
        this.waiter = undefined;
        if (w.resyncByte !== undefined) this.resync = undefined;
        clearTimeout(w.timer);
        return w.resolve(msg);
      }
      if (this.resync) return void (this.resync.discarding = true);
    }
    this.emit('message', msg);
  }
}
