/**
 * Cancellation and progress of long operations, in one place. An operation given `signal` or
 * `onProgress` runs in a scope (AsyncLocalStorage) that every helper process it starts through
 * lib/core/run.ts joins: an abort kills those helpers (their process group for grouped ones) at
 * once, so the operation fails fast through its own error path, which already removes its
 * staging (the crash-safety code: there is no second cleanup path), and the failure is then
 * reported as `Aborted`. Between steps that start no helper, operations call `checkAborted()`.
 * Progress is measured where it can be: the bytes the scope's helpers have read or written
 * (`/proc/<pid>/io`) against a total the operation states, mapped into the phase's range
 * of percent; the callback sees a monotonic percent that ends at 100.
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import type { ChildProcess } from 'node:child_process';
import { promises as fs } from 'node:fs';

import { Aborted, InvalidArgument } from './errors';

/**
 * Where a long operation is: a phase name, a percent that never decreases and ends at 100, and
 * bytes done and in all where the operation counts them.
 *
 * @example
 * ```ts
 * await host.copy('web1', 'web2', { onProgress: (p: Progress) => console.log(`${p.percent}% ${p.phase}`, p.bytes, p.total) });
 * ```
 */
export interface Progress {
  /** What the operation does now ("copying", "writing the archive", LXD's "unpack"…). */
  phase: string;
  /** 0 to 100, never decreasing; 100 once the operation is done. */
  percent: number;
  /** Bytes done so far, where counted. */
  bytes?: number;
  /** Bytes in all, where known. */
  total?: number;
}

/**
 * What every long operation takes besides its own options: an AbortSignal and a progress callback.
 *
 * @example
 * ```ts
 * const ac = new AbortController();
 * const options: LongOptions = { signal: ac.signal, onProgress: (p) => console.log(p.percent) };
 * await c.export('/tmp/web.tar.zst', options);
 * ```
 */
export interface LongOptions {
  /** Aborting rejects the operation with Aborted and leaves nothing half-made. */
  signal?: AbortSignal;
  /** Called as the operation advances (see Progress). */
  onProgress?: (progress: Progress) => void;
}
/** The option keys of LongOptions, for optionKeys lists. */
export const LONG_OPTION_KEYS = { signal: true, onProgress: true } as const;

/** InvalidArgument unless `signal` and `onProgress` are absent or of their type. */
export function checkLongOptions(options: { signal?: unknown; onProgress?: unknown } | undefined, progress = true): void {
  if (options === null || typeof options !== 'object') return;
  if (options.signal !== undefined && !(options.signal instanceof AbortSignal)) throw new InvalidArgument('signal must be an AbortSignal');
  if (options.onProgress !== undefined) {
    if (!progress) throw new InvalidArgument('this operation takes no onProgress');
    if (typeof options.onProgress !== 'function') throw new InvalidArgument('onProgress must be a function');
  }
}

interface Meter {
  phase: string;
  from: number;
  to: number;
  total?: number;
  /** Bytes read by this phase's helpers that have exited, and the last count of each live one. */
  done: number;
  live: Map<number, number>;
  timer?: NodeJS.Timeout;
}

class Scope {
  active = true;
  private percent = 0;
  private lastPhase = '';
  meter: Meter | undefined;
  constructor(
    readonly what: string,
    readonly signal: AbortSignal | undefined,
    private readonly onProgress: ((p: Progress) => void) | undefined,
  ) {}

  report(phase: string, percent: number, bytes?: number, total?: number): void {
    if (!this.onProgress || !this.active) return;
    const p = Math.max(this.percent, Math.min(100, Math.floor(percent)));
    if (p === this.percent && phase === this.lastPhase && bytes === undefined) return;
    this.percent = p;
    this.lastPhase = phase;
    const event: Progress = { phase, percent: p, ...(bytes !== undefined ? { bytes } : {}), ...(total !== undefined ? { total } : {}) };
    // A throwing callback is the caller's bug; it must not leave an operation half-made.
    try {
      this.onProgress(event);
    } catch {
      /* ignored */
    }
  }

  get wantsProgress(): boolean {
    return this.onProgress !== undefined;
  }
}

const scopes = new AsyncLocalStorage<Scope>();

function abortedError(what: string, signal: AbortSignal, cause?: unknown): Aborted {
  const reason = signal.reason instanceof Error && signal.reason.name !== 'AbortError' ? `: ${signal.reason.message}` : '';
  const e = new Aborted(`${what} was aborted${reason}`);
  if (cause !== undefined) Object.defineProperty(e, 'cause', { value: cause, enumerable: false });
  return e;
}

/**
 * Runs a long operation `what` with the caller's signal and progress callback: Aborted at once
 * if the signal has already fired (nothing done); helpers killed on abort and the operation's
 * failure then reported as Aborted; progress ends at 100 on success. Without either option the
 * operation joins the scope it is called in (a copy inside a launch), if any.
 */
export async function longOperation<T>(what: string, options: LongOptions | undefined, op: () => Promise<T>): Promise<T> {
  const signal = options?.signal;
  if (signal?.aborted) throw abortedError(what, signal);
  if (!signal && !options?.onProgress) return op();
  // An operation inside another keeps the outer signal too (a create inside a launch).
  const outer = scopes.getStore();
  const joined = outer?.signal && signal && outer.signal !== signal ? AbortSignal.any([outer.signal, signal]) : (signal ?? outer?.signal);
  const scope = new Scope(what, joined, options?.onProgress);
  scope.report('starting', 0);
  try {
    const result = await scopes.run(scope, op);
    endPhase(scope);
    scope.report('done', 100);
    return result;
  } catch (e) {
    if (joined?.aborted) throw e instanceof Aborted ? e : abortedError(what, joined, e);
    throw e;
  } finally {
    endPhase(scope);
    scope.active = false;
  }
}

/** Aborted if `signal` has fired already: for operations that check it before they begin. */
export function refuseAborted(what: string, signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw abortedError(what, signal);
}

/** Whether the operation running here has a progress callback (a remote wait then polls LXD's progress). */
export function wantsProgress(): boolean {
  const scope = scopes.getStore();
  return scope?.active === true && scope.wantsProgress;
}

/** Reports progress measured elsewhere (LXD's operation metadata) to the operation running here. */
export function reportProgress(phaseName: string, percent: number, bytes?: number): void {
  const scope = scopes.getStore();
  if (scope?.active) scope.report(phaseName, Math.min(percent, 99), bytes);
}

/**
 * Makes methods of `proto` long operations (longOperation): `options` is the index of the
 * argument holding their options, `progress` whether they take onProgress, `what` names them in
 * an Aborted message. For classes near their size limit (the hosts), which wrap their methods here.
 */
export function longMethods(proto: object, methods: Record<string, { options: number; progress: boolean; what: (args: unknown[]) => string }>): void {
  const target = proto as Record<string, (...args: unknown[]) => Promise<unknown>>;
  for (const [name, op] of Object.entries(methods)) {
    const inner = target[name];
    target[name] = async function (this: unknown, ...args: unknown[]) {
      const options = args[op.options] as LongOptions | undefined;
      checkLongOptions(options, op.progress);
      return longOperation(op.what(args), options, () => inner.apply(this, args));
    };
  }
}

/** Runs `op` outside any operation's scope: work shared by several callers (an image build) that one caller's abort must not kill. */
export function detached<T>(op: () => T): T {
  return scopes.exit(op);
}

/** The signal of the operation running here, if any. */
export function currentSignal(): AbortSignal | undefined {
  const scope = scopes.getStore();
  return scope?.active ? scope.signal : undefined;
}

/** Aborted if the operation running here was aborted: called between steps that start no helper. */
export function checkAborted(): void {
  const scope = scopes.getStore();
  if (scope?.active && scope.signal?.aborted) throw abortedError(scope.what, scope.signal);
}

/**
 * Resolves as `promise` does, or calls `onAbort` (and resolves with what it gives) as soon as the
 * operation running here is aborted: for a wait lxq can cut short (a graceful stop, a queue).
 */
export function unlessAborted<T>(promise: Promise<T>, onAbort: () => T | Promise<T>): Promise<T> {
  const signal = currentSignal();
  if (!signal) return promise;
  if (signal.aborted) return Promise.resolve(onAbort());
  return new Promise<T>((resolve, reject) => {
    const abort = () => Promise.resolve().then(onAbort).then(resolve, reject);
    signal.addEventListener('abort', abort, { once: true });
    promise.then(resolve, reject).finally(() => signal.removeEventListener('abort', abort));
  });
}

/**
 * A helper process started by the operation running here (lib/core/run.ts calls this for each):
 * killed (its process group if `group`) when the operation is aborted, and counted by the
 * progress meter of the current phase.
 */
export function joinOperation(child: ChildProcess, group = false): void {
  const scope = scopes.getStore();
  if (!scope?.active || child.pid === undefined) return;
  const pid = child.pid;
  const signal = scope.signal;
  if (signal) {
    const kill = () => {
      try {
        if (group) process.kill(-pid, 'SIGKILL');
        else child.kill('SIGKILL');
      } catch {
        /* gone already */
      }
    };
    if (signal.aborted) kill();
    else {
      signal.addEventListener('abort', kill, { once: true });
      child.once('exit', () => signal.removeEventListener('abort', kill));
    }
  }
  const meter = scope.meter;
  if (meter) {
    meter.live.set(pid, 0);
    child.once('exit', () => {
      meter.done += meter.live.get(pid) ?? 0;
      meter.live.delete(pid);
    });
  }
}

/**
 * Enters a phase of the operation running here: progress goes from `from` to `to` percent as the
 * helpers started from now on read `total` bytes (or jumps to `to` when the next phase begins, if
 * no total is known). `total` is only computed (outside the operation: its own helper is not
 * counted) when the caller wants progress; nothing happens otherwise.
 */
export async function phase(name: string, from: number, to: number, total?: () => Promise<number>): Promise<void> {
  const scope = scopes.getStore();
  if (!scope?.active || !scope.wantsProgress) return;
  endPhase(scope);
  const bytes = total ? await detached(total).catch(() => 0) : 0;
  const meter: Meter = { phase: name, from, to, total: bytes > 0 ? bytes : undefined, done: 0, live: new Map() };
  scope.meter = meter;
  scope.report(name, from, meter.total !== undefined ? 0 : undefined, meter.total);
  if (meter.total === undefined) return;
  meter.timer = setInterval(() => void poll(scope, meter), 250);
  meter.timer.unref();
}

/** The scope's phase, if any, reported at its end percent. */
function endPhase(scope: Scope): void {
  const meter = scope.meter;
  if (!meter) return;
  scope.meter = undefined;
  if (meter.timer) clearInterval(meter.timer);
  scope.report(meter.phase, meter.to, meter.total, meter.total);
}

function counted(meter: Meter): number {
  let n = meter.done;
  for (const v of meter.live.values()) n += v;
  return n;
}

async function poll(scope: Scope, meter: Meter): Promise<void> {
  await Promise.all(
    [...meter.live.keys()].map(async (pid) => {
      const text = await fs.readFile(`/proc/${pid}/io`, 'utf8').catch(() => '');
      // Bytes read through read(2) (tar), or written to storage (cp, whose copy_file_range reads nothing through read(2)).
      const field = (name: string) => Number(new RegExp(`^${name}:\\s*(\\d+)`, 'm').exec(text)?.[1] ?? 0);
      const n = Math.max(field('rchar'), field('write_bytes'));
      if (meter.live.has(pid)) meter.live.set(pid, Math.max(meter.live.get(pid) ?? 0, n));
    }),
  );
  if (scope.meter !== meter || meter.total === undefined) return;
  const bytes = Math.min(counted(meter), meter.total);
  // Short of the phase's end until the phase ends: the total is an estimate (sizes on disk).
  const percent = meter.from + ((meter.to - meter.from) * bytes) / meter.total;
  scope.report(meter.phase, Math.min(percent, meter.to - 1), bytes, meter.total);
}

/**
 * Work several callers wait for (an image build): each caller's abort ends its own wait at once;
 * the work itself is aborted (its helpers killed, its staging removed) once every caller waiting
 * for it has aborted, and the last one's rejection waits for that cleanup.
 */
export class SharedWork<T> {
  private waiting = 0;
  private readonly controller = new AbortController();
  readonly promise: Promise<T>;

  constructor(what: string, work: () => Promise<T>) {
    this.promise = detached(() => longOperation(what, { signal: this.controller.signal }, work));
    this.promise.catch(() => undefined);
  }

  /** Resolves as the work does; Aborted once `signal` fires. */
  wait(what: string, signal: AbortSignal | undefined): Promise<T> {
    if (signal?.aborted) return Promise.reject(abortedError(what, signal));
    this.waiting++;
    // A caller without a signal waits to the end: the work is never aborted while it waits.
    if (!signal) return this.promise;
    return new Promise<T>((resolve, reject) => {
      const onAbort = () => {
        if (--this.waiting > 0) return reject(abortedError(what, signal));
        this.controller.abort(signal.reason);
        this.promise.then(
          () => reject(abortedError(what, signal)),
          () => reject(abortedError(what, signal)),
        );
      };
      signal.addEventListener('abort', onAbort, { once: true });
      this.promise.then(resolve, reject).finally(() => signal.removeEventListener('abort', onAbort));
    });
  }
}
