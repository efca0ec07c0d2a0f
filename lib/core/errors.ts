/**
 * The errors lxq throws. Each has a stable `code`, so callers can branch without `instanceof`
 * across package copies; messages say what was wrong and what would be accepted.
 *
 * @example
 * ```ts
 * if (err instanceof LxqError && err.code === 'BUSY') retryLater();
 * ```
 */
export type ErrorCode =
  | 'INVALID_ARGUMENT'
  | 'NOT_FOUND'
  | 'ALREADY_EXISTS'
  | 'INVALID_STATE'
  | 'NOT_SUPPORTED'
  | 'TIMEOUT'
  | 'ABORTED'
  | 'BUSY'
  | 'PERMISSION_DENIED'
  | 'NO_SPACE'
  | 'OPERATION_FAILED';

/**
 * The base of every error lxq throws: a stable `code` and a message that says what would be accepted.
 *
 * @example
 * ```ts
 * try {
 *   await host.get('web1');
 * } catch (err) {
 *   if (err instanceof LxqError && err.code === 'NOT_FOUND') console.log(err.message);
 * }
 * ```
 */
export class LxqError extends Error {
  constructor(
    readonly code: ErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = new.target.name;
  }
}

/**
 * A name, option, value or path that lxq refuses before doing anything.
 *
 * @example
 * ```ts
 * await host.create('Bad_Name', { image: 'busybox' }); // throws InvalidArgument, nothing is made
 * ```
 */
export class InvalidArgument extends LxqError {
  constructor(message: string) {
    super('INVALID_ARGUMENT', message);
  }
}

/**
 * What was named (an instance, snapshot, image, network, file) does not exist.
 *
 * @example
 * ```ts
 * await host.get('nope').catch((err) => err instanceof NotFound); // true
 * ```
 */
export class NotFound extends LxqError {
  constructor(message: string) {
    super('NOT_FOUND', message);
  }
}

/**
 * The name is taken (an instance, snapshot, image alias or network).
 *
 * @example
 * ```ts
 * await host.create('web1', { image: 'busybox' });
 * await host.create('web1', { image: 'busybox' }); // throws AlreadyExists
 * ```
 */
export class AlreadyExists extends LxqError {
  constructor(message: string) {
    super('ALREADY_EXISTS', message);
  }
}

/**
 * The instance is not in a state that allows the operation (e.g. freezing a stopped container).
 *
 * @example
 * ```ts
 * await c.stop();
 * await c.freeze(); // throws InvalidState; err.status === 'stopped'
 * ```
 */
export class InvalidState extends LxqError {
  constructor(
    message: string,
    readonly status?: string,
  ) {
    super('INVALID_STATE', message);
  }
}

/**
 * The instance type cannot do this; the message names the condition.
 *
 * @example
 * ```ts
 * await vm.console.attach().then((s) => s.resize(80, 24)); // NotSupported: a serial port has no size
 * ```
 */
export class NotSupported extends LxqError {
  constructor(message: string) {
    super('NOT_SUPPORTED', message);
  }
}

/**
 * Something did not happen within the time given (an address, a guest agent, a graceful stop).
 *
 * @example
 * ```ts
 * await vm.waitForAgent(1000).catch((err) => err instanceof Timeout);
 * ```
 */
export class Timeout extends LxqError {
  constructor(message: string) {
    super('TIMEOUT', message);
  }
}

/**
 * The caller's AbortSignal fired; what was running was stopped.
 *
 * @example
 * ```ts
 * const ac = new AbortController();
 * setTimeout(() => ac.abort(), 100);
 * await c.waitForAddress({ signal: ac.signal }); // throws Aborted
 * ```
 */
export class Aborted extends LxqError {
  constructor(message: string) {
    super('ABORTED', message);
  }
}

/**
 * The thing is in use (an image an instance was made from, a network with NICs on it); `users` says by what.
 *
 * @example
 * ```ts
 * await host.images.delete('busybox'); // Busy while an instance uses it; err.users names them
 * ```
 */
export class Busy extends LxqError {
  constructor(
    message: string,
    readonly users: string[] = [],
  ) {
    super('BUSY', message);
  }
}

/**
 * The other side refused who we are, or is not who we pinned: an untrusted client certificate, a server certificate that is not the pinned one.
 *
 * @example
 * ```ts
 * await Host.connect({ url: 'https://lxd.lan:8443', cert, key, serverCert: wrongCert }).catch((err) => err instanceof PermissionDenied);
 * ```
 */
export class PermissionDenied extends LxqError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('PERMISSION_DENIED', message, options);
  }
}

/**
 * A filesystem ran out of room (ENOSPC) while lxq or a helper it ran (cp, tar, qemu-img) wrote to
 * it; `path` names what was being written, when the tool said. What was half-written is removed.
 *
 * @example
 * ```ts
 * await c.snapshots.create().catch((err) => err instanceof NoSpace && console.log('full:', err.path));
 * ```
 */
export class NoSpace extends LxqError {
  constructor(
    message: string,
    readonly path?: string,
    options?: { cause?: unknown },
  ) {
    super('NO_SPACE', message, options);
  }
}

/**
 * A liblxc, QEMU or host call failed; `call`, `errno` and `log` say which and why.
 *
 * @example
 * ```ts
 * await c.start().catch((err) => err instanceof OperationFailed && console.log(err.call, err.log));
 * ```
 */
export class OperationFailed extends LxqError {
  constructor(
    message: string,
    readonly details: { call?: string; errno?: number; log?: string } = {},
    options?: { cause?: unknown },
  ) {
    super('OPERATION_FAILED', message, options);
  }
  get call(): string | undefined {
    return this.details.call;
  }
  get errno(): number | undefined {
    return this.details.errno;
  }
  get log(): string | undefined {
    return this.details.log;
  }
}
