/**
 * A long command's progress and Ctrl-C: a bar on a terminal (cli-progress; lines on stderr if
 * `lines` and not a terminal), and SIGINT/SIGTERM abort the operation through its signal, so
 * that it leaves nothing half-made; the command then exits 130 saying so.
 */
import { CommanderError } from 'commander';

import type { LongOptions, Progress } from '../core/abort';
import { Aborted } from '../core/errors';

/** A bar of `label` on stderr if it is a terminal; else lines if `lines`, or nothing. */
export function progressBar(label: string, lines = false): { update: (p: Progress) => void; done: () => void; stop: () => void } {
  if (!process.stderr.isTTY) {
    return { update: (p) => void (lines && process.stderr.write(`${p.percent}% ${p.phase}\n`)), done: () => undefined, stop: () => undefined };
  }
  // eslint-disable-next-line @typescript-eslint/no-require-imports -- loaded only for a long command on a terminal
  const { SingleBar } = require('cli-progress') as typeof import('cli-progress');
  const bar = new SingleBar({ format: `${label} [{bar}] {percentage}% {phase}`, stream: process.stderr });
  bar.start(100, 0, { phase: '' });
  return {
    update: (p) => bar.update(p.percent, { phase: p.total ? `${p.phase} (${mib(p.bytes ?? 0)}/${mib(p.total)} MiB)` : p.phase }),
    done: () => {
      bar.update(100, { phase: 'done' });
      bar.stop();
    },
    stop: () => bar.stop(),
  };
}

const mib = (n: number) => (n / 2 ** 20).toFixed(0);

/**
 * Runs `op` with a signal that Ctrl-C (SIGINT) or SIGTERM aborts, and a progress bar of `label`
 * (`progress: false` for operations that report none). Aborted by a signal: exit status 130.
 */
export async function longCommand<T>(label: string, op: (options: Required<LongOptions>) => Promise<T>): Promise<T> {
  const ac = new AbortController();
  const bar = progressBar(label);
  const onSignal = () => {
    bar.stop();
    ac.abort();
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    const result = await op({ signal: ac.signal, onProgress: bar.update });
    bar.done();
    return result;
  } catch (e) {
    bar.stop();
    // A terminal's Ctrl-C reaches the helpers too: whatever they failed with, the command was aborted.
    if (!ac.signal.aborted) throw e;
    const message = e instanceof Aborted ? e.message : `${label}: aborted`;
    process.stderr.write(`\nlxq: ${message}; nothing was left behind\n`);
    throw new CommanderError(130, 'lxq.aborted', message);
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}
