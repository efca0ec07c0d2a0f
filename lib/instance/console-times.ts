/**
 * When a console log's lines were written, for `console.log({ since })` (Docker's `logs
 * --since`). liblxc's monitor and QEMU write the log without times; `lxq_stamper`
 * (native/stamper/main.c), started with the instance, appends marks to `<log>.times`: the log's
 * size, then the time. Every byte before a mark's offset was written before its time, so a
 * line's time here is that of the first mark after its last byte: at most one inotify wake-up
 * of the stamper late (microseconds on an idle host, more under load), never early. `since`
 * gives the lines whose end is stamped at or after it: every line written since, and at most
 * those finished within one wake-up before it.
 */
import { closeSync, writeSync } from 'node:fs';
import { open } from 'node:fs/promises';
import * as path from 'node:path';

import { InvalidArgument, NotSupported } from '../core/errors';
import { processStartTicks } from '../core/proc';
import { flockHeld, helperPath, sys } from '../native/sys';
import type { ConsoleHub } from './console';
import type { InstanceConsole } from './instance';
import { checkFollow, checkLog, type ConsoleFollowOptions, type ConsoleLogOptions, fileLogReader, followLines, lastLines } from './console-log';

const MAGIC = Buffer.from('lxqstmp1');
const GAP = 1n << 63n; // the first mark of a run that found bytes nobody stamped
const END = 1n << 62n; // a run's last mark, its writer gone

/** The times index kept beside a console log. */
export function timesPath(log: string): string {
  return `${log}.times`;
}

const UNIT_NS: Record<string, bigint> = { ns: 1n, us: 1_000n, µs: 1_000n, ms: 1_000_000n, s: 1_000_000_000n, m: 60_000_000_000n, h: 3_600_000_000_000n };

/**
 * `since` as nanoseconds since the epoch: a Date, a duration back from now as Docker and Go
 * write them ('10m', '1h30m', '2.5s', '500ms'), an RFC 3339 time ('2026-12-05T06:00:00Z') or
 * Unix seconds ('1764914400.5').
 */
export function parseSince(since: unknown, nowMs = Date.now()): bigint {
  if (since instanceof Date) {
    if (Number.isNaN(since.getTime())) throw new InvalidArgument('since must be a valid Date');
    return BigInt(since.getTime()) * 1_000_000n;
  }
  if (typeof since !== 'string') throw new InvalidArgument(`since must be a Date or a string ('10m', an RFC 3339 time), got ${typeof since}`);
  const text = since.trim();
  if (/^(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+$/.test(text)) {
    let ns = 0;
    for (const [, n, unit] of text.matchAll(/(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)/g)) ns += Number(n) * Number(UNIT_NS[unit]);
    return BigInt(nowMs) * 1_000_000n - BigInt(Math.round(ns));
  }
  if (/^\d+(\.\d+)?$/.test(text)) return BigInt(Math.round(Number(text) * 1e9));
  const ms = /^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?)?$/.test(text) ? Date.parse(text) : NaN;
  if (Number.isNaN(ms)) throw new InvalidArgument(`since must be a duration ('10m', '1h30m'), an RFC 3339 time or Unix seconds, got ${JSON.stringify(since)}`);
  return BigInt(ms) * 1_000_000n;
}

interface Marks {
  offsets: bigint[];
  times: bigint[];
  gaps: boolean[];
}

/** The index's marks if it is about the log with inode `ino`; undefined if there is none for it. */
async function readMarks(index: string, ino: number): Promise<Marks | undefined> {
  const fh = await open(index, 'r').catch((e: NodeJS.ErrnoException) => (e.code === 'ENOENT' ? undefined : Promise.reject(e)));
  if (!fh) return undefined;
  let buf: Buffer;
  try {
    buf = await fh.readFile();
  } finally {
    await fh.close();
  }
  if (buf.length < 16 || !buf.subarray(0, 8).equals(MAGIC) || buf.readBigUInt64LE(8) !== BigInt(ino)) return undefined;
  const marks: Marks = { offsets: [], times: [], gaps: [] };
  for (let at = 16; at + 16 <= buf.length; at += 16) {
    const raw = buf.readBigUInt64LE(at);
    marks.offsets.push(raw & ~(GAP | END));
    marks.gaps.push((raw & GAP) !== 0n);
    marks.times.push(buf.readBigInt64LE(at + 8));
  }
  return marks;
}

/**
 * The byte offset in `log` of the first line stamped at or after `sinceNs` (see the top).
 * NotSupported where the log has bytes whose times were never known around `since`: a log
 * written before lxq stamped logs, or while no stamper ran (it was killed).
 */
export async function sinceOffset(log: string, sinceNs: bigint, what: string): Promise<number> {
  const fh = await open(log, 'r').catch((e: NodeJS.ErrnoException) => (e.code === 'ENOENT' ? undefined : Promise.reject(e)));
  if (!fh) return 0;
  try {
    const st = await fh.stat();
    if (st.size === 0) return 0;
    if (sinceNs > BigInt(Date.now()) * 1_000_000n) return st.size; // a time to come: nothing written yet
    const marks = await readMarks(timesPath(log), st.ino);
    if (!marks) throw new NotSupported(`the console log of ${what} has no times: it was written before lxq stamped console logs, so since cannot be applied; it will have them from its next start on`);
    const k = marks.times.findIndex((t) => t >= sinceNs);
    const before = k <= 0 ? 0n : marks.offsets[k - 1];
    if (k >= 0 && marks.gaps[k] && marks.offsets[k] > before) {
      const at = k === 0 ? 'its start' : new Date(Number(marks.times[k - 1] / 1_000_000n)).toISOString();
      throw new NotSupported(`the console log of ${what} has lines of unknown time between ${at} and ${new Date(Number(marks.times[k] / 1_000_000n)).toISOString()} (written while nothing stamped it): since cannot be applied there`);
    }
    // Bytes past the last mark are newer than it: kept while a stamper runs (it has not looked
    // yet); with none (killed), whether they came before `since` is unknown.
    const last = marks.offsets.at(-1) ?? 0n;
    if (k < 0 && st.size > Number(last) && !(await flockHeld(timesPath(log)))) {
      const at = new Date(Number((marks.times.at(-1) ?? 0n) / 1_000_000n)).toISOString();
      throw new NotSupported(`the console log of ${what} has lines of unknown time after ${at} (its stamper is not running: killed?): since cannot be applied there; it is stamped again from its next start on`);
    }
    const boundary = Number(k >= 0 ? before : last);
    return await lineStart(fh, Math.min(boundary, st.size));
  } finally {
    await fh.close();
  }
}


/** The start of the line holding byte `at` (the byte after the last newline before it). */
async function lineStart(fh: import('node:fs/promises').FileHandle, at: number): Promise<number> {
  const chunk = Buffer.alloc(64 * 1024);
  let end = at;
  while (end > 0) {
    const from = Math.max(0, end - chunk.length);
    const { bytesRead } = await fh.read(chunk, 0, end - from, from);
    const nl = chunk.subarray(0, bytesRead).lastIndexOf(0x0a);
    if (nl >= 0) return from + nl + 1;
    end = from;
  }
  return 0;
}

/** A stamper started for a start to come: bound to the log's writer once it runs, or told the start failed. */
export interface Stamper {
  /** The log's writer runs (the container's monitor, QEMU): the stamper lives as long as it. */
  bind(pid: number): Promise<void>;
  /**
   * The start failed: the stamper ends, having left the index as it found it if the start
   * wrote nothing to the log. Resolves once it has ended (at most a few seconds' wait).
   */
  cancel(): Promise<void>;
}

/** How long a cancelled stamper is waited for, and how often its pipe is looked at meanwhile. */
const CANCEL_WAIT_MS = 3000;
const CANCEL_POLL_MS = 5;

/**
 * Starts `lxq_stamper` for `log`, detached (its own session, no fd of ours but the pipe that
 * names the writer): it outlives this process and ends with the writer. Started before the
 * instance so that its first lines are stamped.
 */
export function startStamper(log: string): Stamper {
  // Not child_process.spawn: it forks this process, which blocks the event loop in proportion to the heap (a start of a container must not).
  let stdin: number | undefined;
  try {
    stdin = sys().spawnDetached(helperPath('lxq_stamper'), [log, timesPath(log)], path.dirname(log)).stdin;
  } catch {
    // a missing helper: the log keeps no times (since says so)
  }
  const take = (): number | undefined => {
    const fd = stdin;
    stdin = undefined;
    return fd;
  };
  return {
    bind: async (pid) => {
      const ticks = await processStartTicks(pid);
      const fd = take();
      if (fd === undefined) return;
      // A few bytes into an empty pipe never block; EPIPE: it ended (another stamper holds the log).
      tryWrite(fd, ticks !== null ? `${pid} ${ticks}\n` : 'cancel\n');
      closeSync(fd);
    },
    cancel: async () => {
      const fd = take();
      if (fd === undefined) return;
      // Its end is seen as the pipe losing its reader (EPIPE): the pipe stays ours until then.
      let open = tryWrite(fd, 'cancel\n');
      for (const deadline = Date.now() + CANCEL_WAIT_MS; open && Date.now() < deadline; ) {
        await new Promise((r) => setTimeout(r, CANCEL_POLL_MS));
        open = tryWrite(fd, '\n');
      }
      closeSync(fd);
    },
  };
}

/** Writes `text` to the stamper's pipe; false once it has no reader (the stamper ended). */
function tryWrite(fd: number, text: string): boolean {
  try {
    writeSync(fd, text);
    return true;
  } catch {
    return false;
  }
}

/** `console.log(options)` of a log file on this host: from `since`, then the last `tail` lines. */
export async function readLog(log: string, options: ConsoleLogOptions | undefined, what: string): Promise<string> {
  const o = checkLog(options);
  const since = o.since === undefined ? undefined : parseSince(o.since);
  const from = since === undefined ? 0 : await sinceOffset(log, since, what);
  const fh = await open(log, 'r').catch((e: NodeJS.ErrnoException) => (e.code === 'ENOENT' ? undefined : Promise.reject(e)));
  if (!fh) return '';
  try {
    const size = (await fh.stat()).size;
    const buf = Buffer.alloc(Math.max(0, size - from));
    const { bytesRead } = await fh.read(buf, 0, buf.length, from);
    return lastLines(buf.subarray(0, bytesRead).toString('utf8'), o.tail);
  } finally {
    await fh.close();
  }
}

/** `console.follow(options)` of a log file on this host: options checked at once, `since` resolved at the first line. */
export function followLog(log: string, options: ConsoleFollowOptions | undefined, what: string): AsyncIterable<string> {
  const o = checkFollow(options, 250);
  const since = o.since === undefined ? undefined : parseSince(o.since);
  return {
    async *[Symbol.asyncIterator]() {
      const from = since === undefined ? 0 : await sinceOffset(log, since, what);
      yield* followLines(fileLogReader(log, from), o);
    },
  };
}

/** An instance's `console`: its log file (read and followed with its times) and the hub its streams attach through. */
export function instanceConsole(file: string, name: string, hub: ConsoleHub): InstanceConsole {
  return { path: file, log: (options) => readLog(file, options, name), follow: (options) => followLog(file, options, name), attach: () => hub.attach() };
}
