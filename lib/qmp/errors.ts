/**
 * Errors of the QMP and guest-agent clients. One family for both protocols (the guest agent
 * speaks QMP's JSON framing), so `instanceof QmpError` catches everything this module throws.
 *
 *   QmpError
 *   ├── QmpCommandError      the peer answered {"error": {"class", "desc"}}; the connection is fine
 *   ├── QmpTimeoutError      no answer in time; the connection stays usable
 *   └── QmpConnectionError   the connection is gone (refused, closed, reset, unparsable JSON)
 *       └── QmpProtocolError the peer sent a message of the wrong shape; the connection was closed
 */

export class QmpError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** The command ran and failed: `{"error": {"class": "CommandNotFound", "desc": "..."}}`. */
export class QmpCommandError extends QmpError {
  constructor(
    readonly command: string,
    readonly errorClass: string,
    readonly desc: string,
  ) {
    super(`${command}: ${errorClass}: ${desc}`);
  }
}

/** No reply within the timeout. A reply arriving later is dropped. */
export class QmpTimeoutError extends QmpError {
  constructor(
    readonly command: string,
    readonly timeout: number,
    message = `${command}: no reply within ${timeout} ms`,
  ) {
    super(message);
  }
}

/** The connection could not be made or is gone; every pending call fails with it at once. */
export class QmpConnectionError extends QmpError {
  /** errno code of the underlying socket error, when there was one (ECONNREFUSED, ENOENT, ...). */
  readonly code?: string;
  constructor(message: string, options?: { cause?: unknown; code?: string }) {
    super(message, options);
    if (options?.code) this.code = options.code;
  }
}

/** The peer broke the protocol (no greeting, a reply without "return"/"error", ...). Fatal: the
 *  connection is closed, so this is also a QmpConnectionError. */
export class QmpProtocolError extends QmpConnectionError {
  constructor(
    message: string,
    readonly received?: unknown,
  ) {
    super(message);
  }
}
