/**
 * Running commands in an instance: the option and result types both drivers share, their
 * validation, and `exec` built once on top of a driver's `spawn`.
 */
import { constants as osConstants } from 'node:os';
import type { Readable, Writable } from 'node:stream';

import { Aborted, InvalidArgument, Timeout } from '../core/errors';
import { optionKeys, refuseUnknownKeys } from '../core/keys';

/**
 * Options of `instance.spawn`: those of exec, and a pty.
 *
 * @example
 * ```ts
 * const p = await c.spawn(['sh'], { pty: { cols: 80, rows: 24 } });
 * ```
 */
export interface SpawnOptions {
  /** Added to the instance's environment (`environment.*` options), which is added to a default PATH/HOME. */
  env?: Record<string, string>;
  /** Absolute working directory inside the instance. Default: the user's home. */
  cwd?: string;
  /** Numeric uid and gid inside the instance. Default 0. */
  user?: number;
  group?: number;
  /**
   * Run on a new pseudo-terminal (interactive shells): `stdin` and `stdout` are its two
   * directions, stderr is merged into stdout as on any terminal. Default size 80×24.
   */
  pty?: boolean | { cols: number; rows: number };
}

const SPAWN_OPTION_KEYS_DECL = { env: true, cwd: true, user: true, group: true, pty: true } as const;
export const SPAWN_OPTION_KEYS = optionKeys<SpawnOptions>(SPAWN_OPTION_KEYS_DECL);

/**
 * Options of `instance.exec`: environment, working directory, user, stdin, a timeout, a signal.
 *
 * @example
 * ```ts
 * await c.exec(['sh', '-c', 'echo $GREETING'], { env: { GREETING: 'hi' }, cwd: '/tmp', stdin: 'stdin text' });
 * ```
 */
export interface ExecOptions extends SpawnOptions {
  /** Written to the command's standard input, which is then closed. Default: empty input. */
  stdin?: string | Buffer | Readable;
  /** Milliseconds before the command is killed and exec rejects with Timeout. */
  timeout?: number;
  /** Aborting kills the command; exec rejects with Aborted. */
  signal?: AbortSignal;
}

export const EXEC_OPTION_KEYS = optionKeys<ExecOptions>({ ...SPAWN_OPTION_KEYS_DECL, stdin: true, timeout: true, signal: true });

/**
 * How a process ended: its exit code, or the signal that killed it.
 *
 * @example
 * ```ts
 * const { exitCode, signal } = await p.exit;
 * ```
 */
export interface ExitStatus {
  /** The exit code, or null if a signal ended the process. */
  exitCode: number | null;
  /** The signal that ended the process ("SIGKILL"), or null. */
  signal: NodeJS.Signals | null;
}

/**
 * What `instance.exec` resolves: the exit status and the captured output.
 *
 * @example
 * ```ts
 * const r: ExecResult = await c.exec(['ls', '/']);
 * console.log(r.exitCode, r.stdout.toString());
 * ```
 */
export interface ExecResult extends ExitStatus {
  stdout: Buffer;
  stderr: Buffer;
}

/**
 * A process running inside an instance, with Node streams for its standard I/O.
 *
 * @example
 * ```ts
 * const p = await c.spawn(['sh', '-c', 'read x; echo got $x']);
 * p.stdout.pipe(process.stdout);
 * p.stdin.end('hello\n');
 * console.log((await p.exit).exitCode);
 * ```
 */
export interface InstanceProcess {
  /** The process id inside the instance; 0 where the driver is not told (an LXD server's exec API). */
  readonly pid: number;
  readonly stdin: Writable;
  readonly stdout: Readable;
  readonly stderr: Readable;
  /** Sends a signal (default SIGTERM); false if the process has already exited. */
  kill(signal?: NodeJS.Signals | number): boolean;
  /** Whether the process runs on a pseudo-terminal (`pty` option). */
  readonly tty: boolean;
  /** Sets the terminal's window size (the process gets SIGWINCH); InvalidState without a pty. */
  resize(cols: number, rows: number): void;
  /** Resolves when the process has exited (its output may still be draining). */
  readonly exit: Promise<ExitStatus>;
}

export const DEFAULT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

export function signalNumber(signal: NodeJS.Signals | number): number {
  const n = typeof signal === 'number' ? signal : osConstants.signals[signal];
  if (!Number.isInteger(n) || n <= 0 || n >= 65) throw new InvalidArgument(`unknown signal ${String(signal)}`);
  return n;
}

export function signalName(n: number): NodeJS.Signals {
  const entry = Object.entries(osConstants.signals).find(([, v]) => v === n);
  return (entry?.[0] ?? `SIG${n}`) as NodeJS.Signals;
}

/** Checks argv and options; returns the full environment as "K=V" strings. */
export function checkSpawn(argv: unknown, options: SpawnOptions, instanceEnv: Record<string, string>): string[] {
  if (!Array.isArray(argv) || argv.length === 0) throw new InvalidArgument('argv must be a non-empty array of strings');
  for (const a of argv) {
    if (typeof a !== 'string') throw new InvalidArgument('argv must contain strings only');
    if (a.includes('\0')) throw new InvalidArgument('argv must not contain NUL bytes');
  }
  if (argv[0] === '') throw new InvalidArgument('argv[0] (the command) must not be empty');
  const { cwd, user, group, env = {} } = options;
  if (cwd !== undefined && (typeof cwd !== 'string' || !cwd.startsWith('/') || cwd.includes('\0'))) {
    throw new InvalidArgument(`cwd must be an absolute path inside the instance, got ${JSON.stringify(cwd)}`);
  }
  for (const [what, id] of [['user', user], ['group', group]] as const) {
    if (id !== undefined && (!Number.isInteger(id) || id < 0 || id > 65535)) {
      throw new InvalidArgument(`${what} must be a numeric id between 0 and 65535, got ${JSON.stringify(id)}`);
    }
  }
  checkPty(options.pty);
  if (env === null || typeof env !== 'object') throw new InvalidArgument('env must be an object of names to strings');
  const merged: Record<string, string> = {
    PATH: DEFAULT_PATH,
    HOME: (user ?? 0) === 0 ? '/root' : '/',
    LANG: 'C.UTF-8',
    ...instanceEnv,
  };
  for (const [k, v] of Object.entries(env)) {
    if (!ENV_NAME.test(k)) throw new InvalidArgument(`bad environment variable name ${JSON.stringify(k)}`);
    if (typeof v !== 'string' || v.includes('\0')) throw new InvalidArgument(`environment variable ${k} must be a string without NUL bytes`);
    merged[k] = v;
  }
  return Object.entries(merged).map(([k, v]) => `${k}=${v}`);
}

/** The terminal size a `pty` option asks for, or null for pipes. */
export function checkPty(pty: SpawnOptions['pty']): { cols: number; rows: number } | null {
  if (pty === undefined || pty === false) return null;
  if (pty === true) return { cols: 80, rows: 24 };
  if (pty === null || typeof pty !== 'object') throw new InvalidArgument('pty must be true or { cols, rows }');
  checkWindowSize(pty.cols, pty.rows);
  return { cols: pty.cols, rows: pty.rows };
}

export function checkWindowSize(cols: unknown, rows: unknown): void {
  for (const [k, v] of [['cols', cols], ['rows', rows]] as const) {
    if (!Number.isInteger(v) || (v as number) < 1 || (v as number) > 65535) throw new InvalidArgument(`${k} must be an integer between 1 and 65535`);
  }
}

/** The `environment.*` options of an instance, as variables. */
export function instanceEnvironment(config: Readonly<Record<string, string>>): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(config)) if (k.startsWith('environment.')) env[k.slice('environment.'.length)] = v;
  return env;
}

/** Runs a spawned process to completion: feeds stdin, collects output, enforces timeout and abort. */
export async function collect(proc: InstanceProcess, options: ExecOptions, what: string): Promise<ExecResult> {
  const stdout: Buffer[] = [];
  const stderr: Buffer[] = [];
  const drained = Promise.all([
    new Promise<void>((resolve) => proc.stdout.on('data', (d: Buffer) => stdout.push(d)).once('close', resolve)),
    new Promise<void>((resolve) => proc.stderr.on('data', (d: Buffer) => stderr.push(d)).once('close', resolve)),
  ]);
  proc.stdin.on('error', () => undefined); // the command may exit without reading its input
  const input = options.stdin;
  if (input === undefined) proc.stdin.end();
  else if (typeof input === 'string' || Buffer.isBuffer(input)) proc.stdin.end(input);
  else input.pipe(proc.stdin);

  let stopReason: Error | undefined;
  let giveUp: NodeJS.Timeout | undefined;
  let givenUp: (reason: Error) => void = () => undefined;
  const abandoned = new Promise<never>((_, reject) => (givenUp = reject));
  abandoned.catch(() => undefined);
  const stop = (reason: Error) => {
    if (stopReason) return;
    stopReason = reason;
    proc.kill('SIGKILL');
    // A kill that cannot be delivered (a VM whose agent hangs) must not hold the caller: after a
    // grace period exec rejects all the same, and the process is left to whatever it does.
    giveUp = setTimeout(() => givenUp(reason), KILL_GRACE_MS);
  };
  const timer = options.timeout !== undefined ? setTimeout(() => stop(new Timeout(`${what} did not finish within ${options.timeout} ms; killed`)), options.timeout) : undefined;
  const onAbort = () => stop(new Aborted(`${what} was aborted; killed`));
  if (options.signal?.aborted) onAbort();
  options.signal?.addEventListener('abort', onAbort, { once: true });
  try {
    const status = await Promise.race([proc.exit, abandoned]);
    await Promise.race([drained, abandoned]);
    if (stopReason) throw stopReason;
    return { ...status, stdout: Buffer.concat(stdout), stderr: Buffer.concat(stderr) };
  } catch (e) {
    throw stopReason ?? e; // the timeout or abort, not what the kill did to the process's channel
  } finally {
    clearTimeout(timer);
    clearTimeout(giveUp);
    options.signal?.removeEventListener('abort', onAbort);
  }
}

/** How long exec waits for a killed command to be gone before it rejects anyway. */
export const KILL_GRACE_MS = 2_000;

/** Checks what exec takes beyond spawn's options (those are checked by checkSpawn). */
export function checkExecOptions(options: ExecOptions): void {
  refuseUnknownKeys('exec', options, EXEC_OPTION_KEYS);
  if (options.timeout !== undefined && (!Number.isFinite(options.timeout) || options.timeout <= 0)) {
    throw new InvalidArgument(`timeout must be a positive number of ms, got ${options.timeout}`);
  }
}
