/**
 * Following a console log (`console.follow()`), shared by every driver: the log's lines as they
 * are written, across the instance's restarts. A driver gives a reader of what is new since its
 * previous read; the loop here polls it (a log file is written by liblxc or QEMU, another
 * process, and LXD has no follow at all), splits lines and stops when the signal aborts.
 */
import { open, stat } from 'node:fs/promises';
import { StringDecoder } from 'node:string_decoder';
import { setTimeout as delay } from 'node:timers/promises';

import { InvalidArgument } from '../core/errors';
import { optionKeys, refuseUnknownKeys } from '../core/keys';

/**
 * What `console.follow()` takes: how many of the lines already written to start with, how often
 * to look for new ones, and the signal that ends it.
 *
 * @example
 * ```ts
 * const ac = new AbortController();
 * for await (const line of c.console.follow({ tail: 10, signal: ac.signal })) {
 *   if (line.includes('login:')) ac.abort();
 * }
 * ```
 */
export interface ConsoleFollowOptions extends ConsoleLogOptions {
  /** Ends the iteration (no error): the log is then closed, nothing is left watching it. */
  signal?: AbortSignal;
  /** Milliseconds between looks at the log; default 250 (1000 on an LXD server). */
  interval?: number;
}

export const CONSOLE_FOLLOW_KEYS = optionKeys<ConsoleFollowOptions>({ tail: true, since: true, signal: true, interval: true });

/**
 * What `console.log()` takes (and `follow()` too): the lines written since a time, and of those
 * the last `tail`, as `docker logs --since --tail`.
 *
 * @example
 * ```ts
 * const recent = await c.console.log({ since: '10m' });       // what it printed in the last ten minutes
 * const last = await c.console.log({ since: new Date(t0), tail: 5 });
 * ```
 */
export interface ConsoleLogOptions {
  /** Only the last `tail` lines (of those since `since`; 0: none); default all of them. */
  tail?: number;
  /**
   * Only the lines written at or after this time: a Date, a duration back from now ('10m',
   * '1h30m', '2.5s', '500ms'), an RFC 3339 time or Unix seconds, as `docker logs --since`.
   * A line counts as written when its end was: it is included if its newline was written at or
   * after `since`, and may be included if it was written within one look of the log's stamper
   * before it (see `lxq_stamper`: microseconds on an idle host, more under load). NotSupported
   * where the log has no times there: an LXD server's log, a log written before lxq kept times.
   */
  since?: Date | string;
}

export const CONSOLE_LOG_KEYS = optionKeys<ConsoleLogOptions>({ tail: true, since: true });

/** Checks log()'s options. */
export function checkLog(options: ConsoleLogOptions | undefined): { tail: number; since?: Date | string } {
  const o = options ?? {};
  if (typeof o !== 'object') throw new InvalidArgument('console.log options must be an object');
  refuseUnknownKeys('console.log', o, CONSOLE_LOG_KEYS);
  return { tail: checkTail(o.tail), ...(o.since !== undefined ? { since: o.since } : {}) };
}

function checkTail(value: number | undefined): number {
  const tail = value ?? Infinity;
  if (tail !== Infinity && (!Number.isSafeInteger(tail) || tail < 0)) throw new InvalidArgument(`tail must be a whole number of lines >= 0, got ${tail}`);
  return tail;
}

/** What a driver's reader returns: the text written since its previous call, and whether the log started over (a new start, a rotation). */
export interface LogRead {
  text: string;
  restarted: boolean;
}

/** Checks follow's options; returns them with their defaults. */
export function checkFollow(options: ConsoleFollowOptions | undefined, defaultInterval: number): { tail: number; interval: number; signal?: AbortSignal; since?: Date | string } {
  const o = options ?? {};
  if (typeof o !== 'object') throw new InvalidArgument('console.follow options must be an object');
  refuseUnknownKeys('console.follow', o, CONSOLE_FOLLOW_KEYS);
  const tail = checkTail(o.tail);
  const interval = o.interval ?? defaultInterval;
  if (!Number.isFinite(interval) || interval < 10) throw new InvalidArgument(`interval must be at least 10 ms, got ${interval}`);
  if (o.signal !== undefined && !(o.signal instanceof AbortSignal)) throw new InvalidArgument('signal must be an AbortSignal');
  return { tail, interval, signal: o.signal, ...(o.since !== undefined ? { since: o.since } : {}) };
}

/** The last `n` lines of `text` (a final line without its newline counts). */
export function lastLines(text: string, n: number): string {
  if (n === Infinity) return text;
  if (n === 0) return '';
  let at = text.length - (text.endsWith('\n') ? 1 : 0);
  for (let i = 0; i < n; i++) {
    at = text.lastIndexOf('\n', at - 1);
    if (at < 0) return text;
  }
  return text.slice(at + 1);
}

/**
 * The lines of a log as `read` reports them, `tail` of the existing ones first, until `signal`
 * aborts. A line is yielded once its newline is written, without it (and without a `\r`); a
 * partial line is given as it stands when the log starts over.
 */
export async function* followLines(read: () => Promise<LogRead>, o: { tail: number; interval: number; signal?: AbortSignal }): AsyncGenerator<string, void, undefined> {
  const { signal } = o;
  let pending = lastLines((await read()).text, o.tail);
  for (;;) {
    let nl: number;
    while ((nl = pending.indexOf('\n')) >= 0) {
      if (signal?.aborted) return;
      yield pending.slice(0, nl).replace(/\r$/, '');
      pending = pending.slice(nl + 1);
    }
    if (signal?.aborted) return;
    const aborted = await delay(o.interval, false, { signal }).catch(() => true);
    if (aborted) return;
    const next = await read();
    if (next.restarted && pending) {
      yield pending.replace(/\r$/, '');
      pending = '';
    }
    pending += next.text;
  }
}

/**
 * A reader of a log file on this host: what was appended since the last read; a file replaced
 * (another inode: a VM's log is made anew at each start) or shorter than what was read (liblxc
 * truncates a full log) has started over. No descriptor is held between reads. The first read
 * starts at byte `from` (a line's start).
 */
export function fileLogReader(file: string, from = 0): () => Promise<LogRead> {
  let ino = -1;
  let offset = from;
  let decoder = new StringDecoder('utf8');
  return async () => {
    const st = await stat(file).catch((e: NodeJS.ErrnoException) => (e.code === 'ENOENT' ? undefined : Promise.reject(e)));
    if (!st) return { text: '', restarted: false };
    let restarted = false;
    if ((ino !== -1 && st.ino !== ino) || st.size < offset) {
      restarted = true;
      offset = 0;
      decoder = new StringDecoder('utf8');
    }
    ino = st.ino;
    if (st.size === offset) return { text: '', restarted };
    const fh = await open(file, 'r').catch((e: NodeJS.ErrnoException) => (e.code === 'ENOENT' ? undefined : Promise.reject(e)));
    if (!fh) return { text: '', restarted };
    try {
      const buf = Buffer.alloc(st.size - offset);
      const { bytesRead } = await fh.read(buf, 0, buf.length, offset);
      offset += bytesRead;
      return { text: decoder.write(buf.subarray(0, bytesRead)), restarted };
    } finally {
      await fh.close();
    }
  };
}
