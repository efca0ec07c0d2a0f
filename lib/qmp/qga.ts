/**
 * QEMU guest agent (qemu-ga) client. Same JSON framing as QMP, but: no greeting, no events, and
 * replies carry no id — the agent answers strictly in order — so commands run one at a time.
 *
 * The channel (a virtio-serial port behind a chardev socket) has no session: bytes of an earlier
 * client, or replies to commands that timed out, may still be in it. So the client resynchronises
 * on connect, and again after any command whose reply may still come (a timeout, a `noReply`
 * command): it sends 0xFF (which resets the agent's parser) and
 * `{"execute":"guest-sync-delimited","arguments":{"id":N}}`, then discards everything up to the
 * 0xFF byte the agent sends back and the matching `{"return": N}`.
 *
 * The host end of the channel accepts connections even when no agent runs in the guest; connect
 * then fails with a QmpTimeoutError on the sync instead of hanging.
 *
 *   const qga = await QgaClient.connect('/run/vm1/qga.sock', { timeout: 5_000 });
 *   await qga.ping();
 *   const info = await qga.execute('guest-info');
 *   await qga.execute('guest-shutdown', { mode: 'powerdown' }, { noReply: true });
 */
import { randomInt } from 'node:crypto';
import { EventEmitter } from 'eventemitter3';
import { DEFAULT_TIMEOUT, JsonConnection, type JsonObject, type Target } from './connection';
import { QmpConnectionError, QmpTimeoutError } from './errors';

/**
 * Options of `QgaClient.connect`.
 *
 * @example
 * ```ts
 * await QgaClient.connect('/run/vm1/qga.sock', { timeout: 5000 });
 * ```
 */
export interface QgaConnectOptions {
  /** Default timeout of every command, ms (0 or Infinity: none). Default 10 000. */
  timeout?: number;
  /** Retry while the socket is missing or refuses (a QEMU just spawned), until the connect timeout. */
  retry?: boolean;
  /** Bound on connect + the first sync, ms. Defaults to `timeout`. */
  connectTimeout?: number;
}

/**
 * Options of one guest-agent command.
 *
 * @example
 * ```ts
 * await qga.execute('guest-ping', undefined, { timeout: 2000 });
 * ```
 */
export interface QgaExecuteOptions {
  /** ms, counted from the call (time waiting behind earlier commands included). */
  timeout?: number;
  /** The command sends no reply on success (guest-shutdown, guest-suspend-*): resolve once sent. */
  noReply?: boolean;
}

/**
 * Events of a QgaClient.
 *
 * @example
 * ```ts
 * qga.on('close', () => console.log('the agent channel closed'));
 * ```
 */
export interface QgaClientEvents {
  /** The connection is gone. `error` is undefined after close(). */
  close: [error: QmpConnectionError | undefined];
}

const SYNC_BYTE = Buffer.from([0xff]);

/**
 * A client of the QEMU guest agent over its virtio-serial socket, resynchronised with guest-sync-delimited.
 *
 * @example
 * ```ts
 * const qga = await QgaClient.connect('/run/vm1/qga.sock');
 * console.log(await qga.execute('guest-get-osinfo'));
 * ```
 */
export class QgaClient extends EventEmitter<QgaClientEvents> {
  /** Default command timeout, ms. */
  timeout = DEFAULT_TIMEOUT;
  private conn?: JsonConnection;
  private seq = 0;
  /** Key of the request awaiting the agent's next reply. */
  private current?: string;
  /** A reply may still be in flight from an earlier command: resync before the next one. */
  private needSync = true;
  private tail: Promise<unknown> = Promise.resolve();

  static async connect(target: Target, opts: QgaConnectOptions = {}): Promise<QgaClient> {
    const client = new QgaClient();
    await client.connect(target, opts);
    return client;
  }

  /** Connect and synchronise with the agent. */
  async connect(target: Target, opts: QgaConnectOptions = {}): Promise<void> {
    if (this.conn && !this.conn.closedReason) throw new QmpConnectionError('already connected');
    this.timeout = opts.timeout ?? DEFAULT_TIMEOUT;
    const budget = opts.connectTimeout ?? this.timeout;
    const start = Date.now();
    const conn = await JsonConnection.open(target, budget, opts.retry);
    this.conn = conn;
    this.needSync = true;
    conn.on('message', (msg) => {
      // In order: the reply belongs to the command in flight; with none, it is stale: drop it.
      if (this.current !== undefined) conn.settle(this.current, msg);
    });
    conn.on('close', (err) => this.emit('close', err));
    try {
      await this.serialize(() => this.syncNow(remaining(budget, start), budget));
    } catch (err) {
      if (err instanceof QmpConnectionError) conn.fail(err);
      else await conn.close();
      throw err;
    }
  }

  get connected(): boolean {
    return !!this.conn && !this.conn.closedReason;
  }

  /** Run a command; resolves with its "return" member (undefined with `noReply`). */
  execute<T = unknown>(command: string, args?: Record<string, unknown>, opts: QgaExecuteOptions = {}): Promise<T> {
    const conn = this.conn;
    if (!conn) return Promise.reject(new QmpConnectionError('not connected'));
    if (conn.closedReason) return Promise.reject(conn.closedReason);
    const timeout = opts.timeout ?? this.timeout;
    const start = Date.now();
    const msg: JsonObject = args === undefined ? { execute: command } : { execute: command, arguments: args };
    return new Promise<T>((resolve, reject) => {
      let queued = true;
      const timer =
        timeout > 0 && Number.isFinite(timeout)
          ? setTimeout(() => {
              if (!queued) return;
              queued = false;
              reject(new QmpTimeoutError(command, timeout, `${command}: not sent within ${timeout} ms (agent busy with earlier commands)`));
            }, timeout)
          : undefined;
      this.serialize(async () => {
        if (!queued) return; // gave up while waiting its turn
        queued = false;
        clearTimeout(timer);
        try {
          resolve((await this.run<T>(conn, command, msg, start, timeout, opts.noReply)) as T);
        } catch (err) {
          reject(err);
        }
      });
    });
  }

  /** `guest-ping`: resolves when the agent answers. */
  async ping(opts: { timeout?: number } = {}): Promise<void> {
    await this.execute('guest-ping', undefined, opts);
  }

  /** Resynchronise now (done automatically on connect and when needed). */
  sync(opts: { timeout?: number } = {}): Promise<void> {
    const conn = this.conn;
    if (!conn) return Promise.reject(new QmpConnectionError('not connected'));
    const timeout = opts.timeout ?? this.timeout;
    return this.serialize(() => this.syncNow(timeout, timeout));
  }

  async close(): Promise<void> {
    await this.conn?.close();
  }

  private async run<T>(conn: JsonConnection, command: string, msg: JsonObject, start: number, timeout: number,
    noReply?: boolean): Promise<T | undefined> {
    if (this.needSync) await this.syncNow(remaining(timeout, start), timeout);
    if (noReply) {
      // Should it fail, the agent does reply: resync before the next command to drop that.
      this.needSync = true;
      await conn.write(msg);
      return undefined;
    }
    const key = String(++this.seq);
    this.current = key;
    try {
      return await conn.request<T>(key, msg, command, remaining(timeout, start));
    } catch (err) {
      if (err instanceof QmpTimeoutError) this.needSync = true; // its reply may still come
      throw err;
    } finally {
      this.current = undefined;
    }
  }

  private async syncNow(left: number, budget: number): Promise<void> {
    const conn = this.conn!;
    const id = randomInt(1, 2 ** 31 - 1);
    const synced = conn.expect({
      accept: (m) => m.return === id,
      command: 'guest-sync-delimited',
      timeout: left,
      resyncByte: 0xff,
      timeoutMessage: `guest agent did not answer guest-sync-delimited within ${budget} ms (is qemu-ga running in the guest?)`,
    });
    conn.write({ execute: 'guest-sync-delimited', arguments: { id } }, SYNC_BYTE).catch(() => undefined);
    await synced;
    this.needSync = false;
  }

  /** Run jobs one at a time, in call order. */
  private serialize<T>(job: () => Promise<T>): Promise<T> {
    const run = this.tail.then(job, job);
    this.tail = run.catch(() => undefined);
    return run;
  }
}

/** Time left of a `budget` started at `start`; 0 (no limit) stays 0, never below 1 ms otherwise. */
function remaining(budget: number, start: number): number {
  if (!(budget > 0) || !Number.isFinite(budget)) return 0;
  return Math.max(1, budget - (Date.now() - start));
}
