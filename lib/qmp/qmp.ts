/**
 * QMP client: greeting, `qmp_capabilities` negotiation, commands matched by id with a timeout on
 * each, events to typed listeners. See https://www.qemu.org/docs/master/interop/qmp-spec.html
 *
 *   const qmp = await QmpClient.connect('/run/vm1/qmp.sock', { timeout: 10_000 });
 *   qmp.on('SHUTDOWN', (e) => console.log(e.data.reason));
 *   const st = await qmp.execute('query-status');    // typed: see commands.ts
 *   const gone = qmp.waitEvent('DEVICE_DELETED', { filter: (d) => d.device === 'dev-disk1', timeout: 20_000 });
 *   await qmp.execute('device_del', { id: 'dev-disk1' });
 *   await gone;
 *   await qmp.close();
 *
 * To be sure to see events sent during the handshake, attach listeners first:
 *   const qmp = new QmpClient(); qmp.on('event', ...); await qmp.connect(path);
 */
import { EventEmitter } from 'eventemitter3';
import { DEFAULT_TIMEOUT, JsonConnection, type JsonObject, type Target, isObject } from './connection';
import type { QmpCommands, QmpVersionInfo } from './commands';
import { QmpAbortError, QmpConnectionError, QmpProtocolError, QmpTimeoutError } from './errors';

/**
 * QEMU's greeting on connect: its version and capabilities.
 *
 * @example
 * ```ts
 * console.log(qmp.greeting?.QMP.version.qemu);
 * ```
 */
export interface QmpGreeting {
  QMP: { version: QmpVersionInfo; capabilities: string[] };
}

/**
 * An asynchronous QMP event: its name, data and timestamp.
 *
 * @example
 * ```ts
 * qmp.on('event', (e: QmpEvent) => console.log(e.timestamp.seconds, e.event));
 * ```
 */
export interface QmpEvent<D = Record<string, unknown>> {
  event: string;
  data: D;
  timestamp: { seconds: number; microseconds: number };
}

/**
 * Data of a few common events; any other event name is accepted with untyped data.
 *
 * @example
 * ```ts
 * qmp.on('SHUTDOWN', (e) => console.log(e.data.guest, e.data.reason));
 * ```
 */
export interface QmpKnownEvents {
  SHUTDOWN: { guest: boolean; reason: string };
  RESET: { guest: boolean; reason: string };
  POWERDOWN: Record<string, never>;
  STOP: Record<string, never>;
  RESUME: Record<string, never>;
  /** The guest released a device (after `device_del`): `device` is its id, when it had one. */
  DEVICE_DELETED: { device?: string; path: string };
  /** A job (`job-id` of the command that made it) moved to `status` (`concluded` when it ended). */
  JOB_STATUS_CHANGE: { id: string; status: string };
}

/**
 * The data of event `K`: typed for the events of QmpKnownEvents, an object for any other.
 *
 * @example
 * ```ts
 * const data: QmpEventData<'SHUTDOWN'> = (await qmp.waitEvent('SHUTDOWN')).data;
 * ```
 */
export type QmpEventData<K extends string> = K extends keyof QmpKnownEvents ? QmpKnownEvents[K] : Record<string, unknown>;

type PerNameEvents = { [K in keyof QmpKnownEvents]: [event: QmpEvent<QmpKnownEvents[K]>] };

/**
 * Events of a QmpClient: every QMP event, and the connection closing.
 *
 * @example
 * ```ts
 * qmp.on('event', (e) => console.log(e.event, e.data));
 * ```
 */
export interface QmpClientEvents extends PerNameEvents {
  /** Every event, whatever its name. */
  event: [event: QmpEvent];
  /** The connection is gone. `error` is undefined after close(), else why (peer quit, killed...). */
  close: [error: QmpConnectionError | undefined];
  /** Per-name listeners: QMP event names are upper case (SHUTDOWN, BLOCK_JOB_COMPLETED...). */
  [name: Uppercase<string>]: [event: QmpEvent];
}

/**
 * Options of `QmpClient.connect`.
 *
 * @example
 * ```ts
 * await QmpClient.connect('/run/vm1/qmp.sock', { timeout: 5000 });
 * ```
 */
export interface QmpConnectOptions {
  /** Default timeout of every command, ms (0 or Infinity: none). Default 10 000. */
  timeout?: number;
  /** Retry while the socket is missing or refuses (a QEMU just spawned), until the connect timeout. */
  retry?: boolean;
  /** Bound on connect + greeting + qmp_capabilities, ms. Defaults to `timeout`. */
  connectTimeout?: number;
}

/**
 * Options of one QMP command.
 *
 * @example
 * ```ts
 * await qmp.execute('system_powerdown', undefined, { timeout: 2000 });
 * ```
 */
export interface QmpExecuteOptions {
  /** ms; overrides the client's default. */
  timeout?: number;
}

/**
 * Options of `QmpClient.waitEvent`.
 *
 * @example
 * ```ts
 * const ac = new AbortController();
 * await qmp.waitEvent('DEVICE_DELETED', { filter: (d) => d.device === 'dev-disk1', timeout: 20_000, signal: ac.signal });
 * ```
 */
export interface QmpWaitEventOptions<D = Record<string, unknown>> {
  /** Which event of that name ends the wait (default: the first). An exception it throws rejects the wait. */
  filter?: (data: D) => boolean;
  /** ms (0 or Infinity: none, the default): then the wait rejects with QmpTimeoutError. */
  timeout?: number;
  /** Aborting it rejects the wait with QmpAbortError. */
  signal?: AbortSignal;
}

/**
 * A QMP client over a unix socket: capabilities negotiated, commands with ids and timeouts, events as they come.
 *
 * @example
 * ```ts
 * const qmp = await QmpClient.connect('/run/vm1/qmp.sock');
 * console.log(await qmp.execute('query-status'));
 * qmp.on('event', (e) => console.log(e.event));
 * ```
 */
export class QmpClient extends EventEmitter<QmpClientEvents> {
  /** The greeting QEMU sent, once connected. */
  greeting?: QmpGreeting;
  /** Default command timeout, ms. */
  timeout = DEFAULT_TIMEOUT;
  private conn?: JsonConnection;
  private seq = 0;
  /** Events held back while the static connect() hands the client to its caller. */
  private held?: QmpEvent[];

  /** Connect, read the greeting, negotiate capabilities. */
  static async connect(target: Target, opts: QmpConnectOptions = {}): Promise<QmpClient> {
    const client = new QmpClient();
    const held: QmpEvent[] = (client.held = []);
    await client.connect(target, opts);
    // The caller could not listen yet: deliver what came during the handshake on the next turn.
    setImmediate(() => {
      client.held = undefined;
      for (const e of held) client.dispatch(e);
    });
    return client;
  }

  /** Connect this client (listeners attached before see every event). */
  async connect(target: Target, opts: QmpConnectOptions = {}): Promise<void> {
    if (this.conn && !this.conn.closedReason) throw new QmpConnectionError('already connected');
    this.timeout = opts.timeout ?? DEFAULT_TIMEOUT;
    const budget = opts.connectTimeout ?? this.timeout;
    const deadline = Date.now() + budget;
    const left = () => (Number.isFinite(budget) && budget > 0 ? Math.max(1, deadline - Date.now()) : 0);

    const conn = await JsonConnection.open(target, left(), opts.retry);
    this.conn = conn;
    conn.on('message', (msg) => this.onMessage(msg));
    conn.on('close', (err) => this.emit('close', err));
    try {
      const msg = await conn.expect({ accept: () => true, command: 'greeting', timeout: left(),
        timeoutMessage: `no QMP greeting within ${budget} ms` });
      const qmp = msg.QMP;
      if (!isObject(qmp) || !isObject(qmp.version) || !Array.isArray(qmp.capabilities)) {
        throw new QmpProtocolError('expected a QMP greeting {"QMP": {"version", "capabilities"}}', msg);
      }
      this.greeting = msg as unknown as QmpGreeting;
      await this.execute('qmp_capabilities', undefined, { timeout: left() });
    } catch (err) {
      if (err instanceof QmpConnectionError) conn.fail(err);
      else await conn.close();
      throw err;
    }
  }

  /** QEMU's version, from the greeting. */
  get version(): QmpVersionInfo | undefined {
    return this.greeting?.QMP.version;
  }

  get connected(): boolean {
    return !!this.conn && !this.conn.closedReason;
  }

  /**
   * Run a command; resolves with its "return" member. A command of QmpCommands has its
   * arguments checked and its result typed; any other is sent as is, its result of type `T`.
   */
  execute<K extends keyof QmpCommands>(
    command: K,
    ...rest: undefined extends QmpCommands[K]['args']
      ? [args?: QmpCommands[K]['args'], opts?: QmpExecuteOptions]
      : [args: QmpCommands[K]['args'], opts?: QmpExecuteOptions]
  ): Promise<QmpCommands[K]['returns']>;
  // A listed name is turned away here (`never`): its arguments are checked by the signature above.
  execute<T = unknown, C extends string = string>(command: C extends keyof QmpCommands ? never : C, args?: Record<string, unknown>, opts?: QmpExecuteOptions): Promise<T>;
  execute<T>(command: string, args?: Record<string, unknown>, opts: QmpExecuteOptions = {}): Promise<T> {
    const conn = this.conn;
    if (!conn) return Promise.reject(new QmpConnectionError('not connected'));
    // Short ids: QEMU's monitor reads its socket one byte per syscall (~8 µs a byte here).
    const id = (++this.seq).toString(36);
    const msg: JsonObject = args === undefined ? { execute: command, id } : { execute: command, arguments: args, id };
    const reply = conn.request<T>(id, msg, command, opts.timeout ?? this.timeout);
    if (command !== 'quit') return reply;
    // QEMU answers quit and closes the socket. If we write anything else meanwhile, the write
    // fails with EPIPE and Node drops the socket before reading that answer: the connection
    // going away while quit is pending means quit did its job.
    return reply.catch((err) => {
      if (err instanceof QmpConnectionError && !(err instanceof QmpProtocolError) && !conn.closedByClient) {
        return {} as T;
      }
      throw err;
    });
  }

  /**
   * The next event `name` whose data passes `filter`. Call it before what causes the event (an
   * event that came earlier is not seen). Rejects with QmpTimeoutError after `timeout`,
   * QmpAbortError when `signal` aborts, and the connection's QmpConnectionError when it closes.
   */
  waitEvent<K extends Uppercase<string>>(name: K, opts: QmpWaitEventOptions<QmpEventData<K>> = {}): Promise<QmpEvent<QmpEventData<K>>> {
    const conn = this.conn;
    const what = `event ${name}`;
    if (!conn || conn.closedReason) return Promise.reject(conn?.closedReason ?? new QmpConnectionError('not connected'));
    const { filter, timeout = 0, signal } = opts;
    if (signal?.aborted) return Promise.reject(new QmpAbortError(what, signal.reason));
    return new Promise((resolve, reject) => {
      const end = (settle: () => void) => {
        clearTimeout(timer);
        this.off(name, onEvent);
        this.off('close', onClose);
        signal?.removeEventListener('abort', onAbort);
        settle();
      };
      const onEvent = (e: QmpEvent) => {
        const event = e as QmpEvent<QmpEventData<K>>;
        try {
          if (!filter || filter(event.data)) end(() => resolve(event));
        } catch (err) {
          end(() => reject(err));
        }
      };
      const onClose = () => end(() => reject(conn.closedReason ?? new QmpConnectionError('connection closed')));
      const onAbort = () => end(() => reject(new QmpAbortError(what, signal?.reason)));
      const timer = timeout > 0 && Number.isFinite(timeout)
        ? setTimeout(() => end(() => reject(new QmpTimeoutError(what, timeout, `no ${name} event within ${timeout} ms`))), timeout)
        : undefined;
      this.on(name, onEvent);
      this.on('close', onClose);
      signal?.addEventListener('abort', onAbort, { once: true });
    });
  }

  /** Close the socket; pending calls reject with QmpConnectionError. */
  async close(): Promise<void> {
    await this.conn?.close();
  }

  private onMessage(msg: JsonObject): void {
    const conn = this.conn!;
    if (typeof msg.event === 'string') {
      const e: QmpEvent = {
        event: msg.event,
        data: isObject(msg.data) ? msg.data : {},
        timestamp: isObject(msg.timestamp)
          ? (msg.timestamp as QmpEvent['timestamp'])
          : { seconds: 0, microseconds: 0 },
      };
      if (this.held) this.held.push(e);
      else this.dispatch(e);
    } else if ('id' in msg) {
      // Unknown ids (a reply after its timeout) are dropped, as the QMP spec asks.
      conn.settle(String(msg.id), msg);
    } else {
      // QEMU answers without an id only when it could not parse a request: we are out of step.
      conn.fail(new QmpProtocolError('message is neither a reply with an id nor an event', msg));
    }
  }

  private dispatch(e: QmpEvent): void {
    this.emit('event', e);
    this.emit(e.event as Uppercase<string>, e);
  }
}
