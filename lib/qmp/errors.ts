/**
 * Errors of the QMP and guest-agent clients. One family for both protocols (the guest agent
 * speaks QMP's JSON framing), so `instanceof QmpError` catches everything this module throws.
 *
 *   QmpError
 *   ├── QmpCommandError      the peer answered {"error": {"class", "desc"}}; the connection is fine
 *   ├── QmpTimeoutError      no answer (or awaited event) in time; the connection stays usable
 *   ├── QmpAbortError        the caller's AbortSignal ended a wait for an event
 *   └── QmpConnectionError   the connection is gone (refused, closed, reset, unparsable JSON)
 *       └── QmpProtocolError the peer sent a message of the wrong shape; the connection was closed
 */

/**
 * The base of the QMP and guest-agent clients' errors (the family above).
 *
 * @example
 * ```ts
 * await qmp.execute('nope').catch((err) => err instanceof QmpError);
 * ```
 */
export class QmpError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
  }
}

/**
 * The command ran and failed: `{"error": {"class": "CommandNotFound", "desc": "..."}}`.
 *
 * @example
 * ```ts
 * await qmp.execute('no-such-command').catch((err) => err instanceof QmpCommandError && console.log(err.errorClass));
 * ```
 */
export class QmpCommandError extends QmpError {
  constructor(
    readonly command: string,
    readonly errorClass: string,
    readonly desc: string,
  ) {
    super(`${command}: ${errorClass}: ${desc}`);
  }
}

/**
 * No reply within the timeout. A reply arriving later is dropped.
 *
 * @example
 * ```ts
 * await qmp.execute('query-status', {}, { timeout: 10 }).catch((err) => err instanceof QmpTimeoutError);
 * ```
 */
export class QmpTimeoutError extends QmpError {
  constructor(
    readonly command: string,
    readonly timeout: number,
    message = `${command}: no reply within ${timeout} ms`,
  ) {
    super(message);
  }
}

/**
 * A wait for an event ended by the caller's AbortSignal; `cause` is the signal's reason.
 *
 * @example
 * ```ts
 * const ac = new AbortController();
 * const wait = qmp.waitEvent('SHUTDOWN', { signal: ac.signal });
 * ac.abort();
 * await wait.catch((err) => err instanceof QmpAbortError);
 * ```
 */
export class QmpAbortError extends QmpError {
  constructor(
    readonly command: string,
    reason?: unknown,
  ) {
    super(`${command}: aborted`, { cause: reason });
  }
}

/**
 * The connection could not be made or is gone; every pending call fails with it at once.
 *
 * @example
 * ```ts
 * await QmpClient.connect('/nonexistent.sock').catch((err) => err instanceof QmpConnectionError);
 * ```
 */
export class QmpConnectionError extends QmpError {
  /** errno code of the underlying socket error, when there was one (ECONNREFUSED, ENOENT, ...). */
  readonly code?: string;
  constructor(message: string, options?: { cause?: unknown; code?: string }) {
    super(message, options);
    if (options?.code) this.code = options.code;
  }
}

/** The peer broke the protocol (no greeting, a reply without "return"/"error", ...). Fatal: the
 *
 * @example
 * ```ts
 * qmp.on('close', (err) => { if (err instanceof QmpProtocolError) console.log('the peer broke the protocol'); });
 * ```
 *  connection is closed, so this is also a QmpConnectionError. */
export class QmpProtocolError extends QmpConnectionError {
  constructor(
    message: string,
    readonly received?: unknown,
  ) {
    super(message);
  }
}
