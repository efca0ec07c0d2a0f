/**
 * Readiness waits (`instance.wait`, `start({ wait })`, `host.launch(…, { wait })`): what Incus's
 * `incus wait` and testcontainers' wait strategies give, written once against the Instance
 * interface so that containers, VMs and remote instances wait the same way. Each condition is
 * polled from what the instance itself says (its status, a command run inside it, its console
 * log, its own socket table), never from a probe sent by the host.
 */
import { Aborted, InvalidArgument, InvalidState, LxqError, Timeout } from '../core/errors';
import { optionKeys, refuseUnknownKeys } from '../core/keys';
import type { Instance, InstanceStatus } from './instance';

/**
 * What to wait for:
 * - `running`: the status reads running (whoever starts it);
 * - `agent`: commands can run inside (a VM's guest agent answers; a container: once running);
 * - `systemd`: `systemctl is-system-running` says running or degraded (the boot has ended);
 * - `address` / `ipv4`, `ipv6`: the instance has an address of that family (see waitForAddress);
 * - `port`: a TCP socket listens on `port` inside the instance;
 * - `log`: the console log matches `pattern`;
 * - `exec`: `command` exits 0 inside the instance.
 *
 * @example
 * ```ts
 * const condition: WaitFor = 'systemd';
 * await c.wait(condition);
 * ```
 */
export type WaitFor = 'running' | 'agent' | 'systemd' | 'address' | 'ipv4' | 'ipv6' | 'port' | 'log' | 'exec';

/**
 * What `instance.wait` takes: the condition, its argument, a timeout and an AbortSignal.
 *
 * @example
 * ```ts
 * await c.wait({ for: 'port', port: 5432, timeout: 30_000 });
 * await c.wait({ for: 'log', pattern: /ready to accept connections/ });
 * await c.wait({ for: 'exec', command: ['pg_isready'] });
 * await c.wait('systemd');
 * ```
 */
export interface WaitOptions {
  for: WaitFor;
  /** `port`: the TCP port (1–65535) that must be listening inside. */
  port?: number;
  /** `log`: a RegExp (or the source of one) the console log must match. */
  pattern?: RegExp | string;
  /** `exec`: the command that must exit 0. */
  command?: string[];
  /** Milliseconds; default 60 000. */
  timeout?: number;
  /** How often the condition is checked, in ms; default 250. */
  interval?: number;
  signal?: AbortSignal;
}
export const WAIT_OPTION_KEYS = optionKeys<WaitOptions>({ for: true, port: true, pattern: true, command: true, timeout: true, interval: true, signal: true });
const WAIT_FOR: readonly WaitFor[] = ['running', 'agent', 'systemd', 'address', 'ipv4', 'ipv6', 'port', 'log', 'exec'];

/**
 * What `start({ wait })` and `launch`'s `wait` take: a condition, or wait()'s options.
 *
 * @example
 * ```ts
 * const spec: WaitSpec = { for: 'exec', command: ['pg_isready'] };
 * await c.start({ wait: spec });
 * ```
 */
export type WaitSpec = WaitFor | WaitOptions;

interface Checked {
  for: WaitFor;
  port?: number;
  pattern?: RegExp;
  command?: string[];
  timeout: number;
  interval: number;
  signal?: AbortSignal;
}

/** wait()'s options checked (InvalidArgument naming what is wrong), with their defaults. */
export function checkWait(spec: unknown): Checked {
  const o = (typeof spec === 'string' ? { for: spec } : spec) as WaitOptions;
  if (o === null || typeof o !== 'object' || Array.isArray(o)) throw new InvalidArgument(`wait takes a condition (${WAIT_FOR.map((f) => `"${f}"`).join(', ')}) or { for, … }`);
  refuseUnknownKeys('wait', o, WAIT_OPTION_KEYS);
  if (!WAIT_FOR.includes(o.for)) throw new InvalidArgument(`unknown wait condition ${JSON.stringify(o.for)}; known: ${WAIT_FOR.map((f) => `"${f}"`).join(', ')}`);
  const timeout = o.timeout ?? 60_000;
  const interval = o.interval ?? 250;
  if (!Number.isFinite(timeout) || timeout <= 0) throw new InvalidArgument(`wait timeout must be a positive number of ms, got ${o.timeout}`);
  if (!Number.isFinite(interval) || interval < 10) throw new InvalidArgument(`wait interval must be at least 10 ms, got ${o.interval}`);
  const only = (key: 'port' | 'pattern' | 'command', condition: WaitFor) => {
    if (o[key] !== undefined && o.for !== condition) throw new InvalidArgument(`"${key}" goes with { for: "${condition}" }, not "${o.for}"`);
    if (o[key] === undefined && o.for === condition) throw new InvalidArgument(`{ for: "${condition}" } needs "${key}"`);
  };
  only('port', 'port');
  only('pattern', 'log');
  only('command', 'exec');
  if (o.port !== undefined && (!Number.isInteger(o.port) || o.port < 1 || o.port > 65535)) throw new InvalidArgument(`port must be an integer from 1 to 65535, got ${JSON.stringify(o.port)}`);
  let pattern: RegExp | undefined;
  if (o.pattern !== undefined) {
    if (o.pattern instanceof RegExp) pattern = new RegExp(o.pattern.source, o.pattern.flags.replace(/[gy]/g, ''));
    else if (typeof o.pattern === 'string') {
      try {
        pattern = new RegExp(o.pattern);
      } catch (e) {
        throw new InvalidArgument(`pattern is not a regular expression: ${(e as Error).message}`);
      }
    } else throw new InvalidArgument('pattern must be a RegExp or a string');
  }
  if (o.command !== undefined && (!Array.isArray(o.command) || o.command.length === 0 || o.command.some((a) => typeof a !== 'string'))) {
    throw new InvalidArgument('command must be a non-empty array of strings');
  }
  if (o.signal !== undefined && !(o.signal instanceof AbortSignal)) throw new InvalidArgument('signal must be an AbortSignal');
  return { for: o.for, port: o.port, pattern, command: o.command, timeout, interval, signal: o.signal };
}

/** `/proc/net/tcp{,6}` lines: is `port` in LISTEN (0A) state? */
export function listening(table: string, port: number): boolean {
  const hex = port.toString(16).toUpperCase().padStart(4, '0');
  return table.split('\n').some((line) => {
    const f = line.trim().split(/\s+/);
    return f.length > 3 && f[1].endsWith(`:${hex}`) && f[3] === '0A';
  });
}

/** One check of the condition: true when met; a string says why not yet (for the Timeout's message). */
async function check(instance: Instance, c: Checked, remaining: () => number): Promise<true | string> {
  const quick = Math.max(1, Math.min(remaining(), 10_000));
  switch (c.for) {
    case 'running':
      return true;
    case 'agent': {
      const r = await instance.exec(['true'], { timeout: quick, signal: c.signal });
      return r.exitCode === 0 || `a command exited ${r.exitCode}`;
    }
    case 'systemd': {
      const r = await instance.exec(['systemctl', 'is-system-running'], { timeout: quick, signal: c.signal });
      const state = r.stdout.toString().trim();
      if (state === 'running' || state === 'degraded') return true;
      // 127: no such command (before boot ends, systemctl fails otherwise: "Failed to connect to bus").
      if (r.exitCode === 127) throw new InvalidArgument(`${instance.name} has no systemctl: wait for "systemd" needs a systemd image (debian/12), not ${instance.image}`);
      return `systemd says ${JSON.stringify(state || r.stderr.toString().trim().split('\n')[0])}`;
    }
    case 'address':
    case 'ipv4':
    case 'ipv6':
      await instance.waitForAddress({ family: c.for === 'ipv6' ? 'inet6' : 'inet', timeout: Math.max(1, remaining()), signal: c.signal });
      return true;
    case 'port': {
      const r = await instance.exec(['cat', '/proc/net/tcp', '/proc/net/tcp6'], { timeout: quick, signal: c.signal });
      return listening(r.stdout.toString(), c.port!) || `nothing listens on TCP port ${c.port}`;
    }
    case 'log':
      return c.pattern!.test(await instance.console.log()) || `the console log does not match ${c.pattern}`;
    case 'exec': {
      const r = await instance.exec(c.command!, { timeout: Math.max(1, remaining()), signal: c.signal });
      return r.exitCode === 0 || `${c.command!.join(' ')} exited ${r.exitCode}: ${r.stderr.toString().trim().split('\n').slice(-1)[0] ?? ''}`;
    }
  }
}

/** A check is not begun with less time than this left: it could not finish, and would say nothing. */
const MIN_CHECK_MS = 20;

/** Errors that end a wait at once; any other failure of one check is retried until the timeout. */
function final(e: unknown): boolean {
  return e instanceof Aborted || e instanceof InvalidArgument || (e instanceof LxqError && e.code === 'NOT_FOUND');
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const t = setTimeout(done, ms);
    function done() {
      clearTimeout(t);
      signal?.removeEventListener('abort', done);
      resolve();
    }
    signal?.addEventListener('abort', done, { once: true });
  });
}

/**
 * Waits until `instance` meets the condition, checking every `interval` ms. Rejects with Timeout
 * (saying what it saw last), Aborted, or InvalidState when the instance is, or becomes, stopped
 * while waiting for anything but `running` (nothing could then make the condition true).
 */
export async function waitFor(instance: Instance, spec: WaitSpec): Promise<void> {
  const c = checkWait(spec);
  const deadline = Date.now() + c.timeout;
  const remaining = () => deadline - Date.now();
  let last = 'not checked yet';
  for (;;) {
    if (c.signal?.aborted) throw new Aborted(`waiting for ${c.for} of ${instance.name} was aborted`);
    const status: InstanceStatus = await instance.status();
    if (status === 'running' || (status === 'starting' && c.for === 'address')) {
      try {
        const r = await check(instance, c, remaining);
        if (r === true) return;
        last = r;
      } catch (e) {
        if (final(e)) throw e;
        // A check cut short by the deadline says less than the one before it.
        if (!(e instanceof Timeout) || last === 'not checked yet') last = (e as Error).message.split('\n')[0];
      }
    } else if (c.for !== 'running' && (status === 'stopped' || status === 'error')) {
      throw new InvalidState(`cannot wait for ${c.for} of ${instance.name}: it is ${status}; start it first`, status);
    } else {
      last = `it is ${status}`;
    }
    if (remaining() < MIN_CHECK_MS) throw new Timeout(`${instance.name} did not become ready (${c.for}) within ${c.timeout} ms: ${last}`);
    await sleep(Math.min(c.interval, Math.max(0, remaining())), c.signal);
  }
}
