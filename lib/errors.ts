/**
 * The errors lxq throws. Each has a stable `code`, so callers can branch without `instanceof`
 * across package copies; messages say what was wrong and what would be accepted.
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
  | 'OPERATION_FAILED';

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

/** A name, option, value or path that lxq refuses before doing anything. */
export class InvalidArgument extends LxqError {
  constructor(message: string) {
    super('INVALID_ARGUMENT', message);
  }
}

export class NotFound extends LxqError {
  constructor(message: string) {
    super('NOT_FOUND', message);
  }
}

export class AlreadyExists extends LxqError {
  constructor(message: string) {
    super('ALREADY_EXISTS', message);
  }
}

/** The instance is not in a state that allows the operation (e.g. freezing a stopped container). */
export class InvalidState extends LxqError {
  constructor(
    message: string,
    readonly status?: string,
  ) {
    super('INVALID_STATE', message);
  }
}

/** The instance type cannot do this; the message names the condition. */
export class NotSupported extends LxqError {
  constructor(message: string) {
    super('NOT_SUPPORTED', message);
  }
}

export class Timeout extends LxqError {
  constructor(message: string) {
    super('TIMEOUT', message);
  }
}

/** The caller's AbortSignal fired; what was running was stopped. */
export class Aborted extends LxqError {
  constructor(message: string) {
    super('ABORTED', message);
  }
}

/** The thing is in use (an image an instance was made from, a network with NICs on it); `users` says by what. */
export class Busy extends LxqError {
  constructor(
    message: string,
    readonly users: string[] = [],
  ) {
    super('BUSY', message);
  }
}

/** The other side refused who we are, or is not who we pinned: an untrusted client certificate, a server certificate that is not the pinned one. */
export class PermissionDenied extends LxqError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('PERMISSION_DENIED', message, options);
  }
}

/** A liblxc, QEMU or host call failed; `call`, `errno` and `log` say which and why. */
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
