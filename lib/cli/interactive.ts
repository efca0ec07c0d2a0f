/** The terminal joined to a command in an instance: `exec` and `shell`, on the full path and the quick one (quick.ts). */
import * as os from 'node:os';

import { InvalidArgument } from '../core/errors';
import type { Instance } from '../instance/instance';
import { keyValues } from './args';

/** `exec`'s options, as commander gives them. */
export interface ExecFlags {
  tty?: boolean;
  env: string[];
  cwd?: string;
}

/** What `exec … -- command` with `o` asks: the spawn's options, and a terminal or not (undefined: as stdin is one or not). */
export interface ExecRequest {
  options: { env: Record<string, string>; cwd?: string };
  tty?: boolean;
}

/** `exec … -- command` with `o`, checked now. */
export function execRequest(command: string[], o: ExecFlags): ExecRequest {
  // Without "--" commander would take the command's own options for lxq's.
  if (!process.argv.slice(2).includes('--') || command.length === 0) throw new InvalidArgument('exec needs the command after "--": lxq exec NAME -- CMD [ARGS...]');
  return { options: { env: keyValues(o.env), ...(o.cwd ? { cwd: o.cwd } : {}) }, ...(o.tty === undefined ? {} : { tty: o.tty }) };
}

/** `exec … -- command` as checked by execRequest: what runs it in an instance and resolves its exit code. */
export function execution(command: string[], { options, tty }: ExecRequest): (i: Pick<Instance, 'spawn'>) => Promise<number> {
  // process.stdin only now: the quick path may hand the command over before any stream is made (quick.ts).
  return (i) => interactive(i, command, tty ?? Boolean(process.stdin.isTTY), options);
}

/** Runs a command with the terminal's stdin/stdout, forwarding signals and window size; resolves the exit code. */
export async function interactive(i: Pick<Instance, 'spawn'>, argv: string[], tty: boolean, options: { env?: Record<string, string>; cwd?: string }): Promise<number> {
  const size = { cols: process.stdout.columns ?? 80, rows: process.stdout.rows ?? 24 };
  const p = await i.spawn(argv, { ...options, ...(tty ? { pty: size } : {}) });
  const forward = (sig: NodeJS.Signals) => () => p.kill(sig);
  const handlers = (['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGQUIT'] as const).map((s) => [s, forward(s)] as const);
  // On a terminal, Ctrl-C and Ctrl-\ are keys the pty passes on; only the others come as signals.
  if (!tty) for (const [s, h] of handlers) process.on(s, h);
  else process.on('SIGTERM', handlers[1][1]).on('SIGHUP', handlers[2][1]);
  const onResize = () => p.resize(process.stdout.columns, process.stdout.rows);
  if (tty && process.stdin.isTTY) {
    process.stdin.setRawMode(true);
    process.stdout.on('resize', onResize);
  }
  process.stdin.pipe(p.stdin);
  p.stdout.pipe(process.stdout, { end: false });
  p.stderr.pipe(process.stderr, { end: false });
  try {
    const status = await p.exit;
    // The last output is still in the pipes: let it through before the caller exits.
    await new Promise((r) => setImmediate(r));
    return status.exitCode ?? 128 + (os.constants.signals[status.signal as NodeJS.Signals] ?? 0);
  } finally {
    process.stdin.unpipe(p.stdin);
    process.stdin.pause();
    if (tty && process.stdin.isTTY) process.stdin.setRawMode(false);
    process.stdout.off('resize', onResize);
    for (const [s, h] of handlers) process.off(s, h);
  }
}
