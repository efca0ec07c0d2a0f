/** How a command ends, the same on the full path (program.ts) and the quick one (quick.ts). */

/** Exit status when lxq itself failed (a command run by `exec` passes its own through). */
export const FAILED = 1;

/** An error as the one line lxq prints on stderr. */
export const failureLine = (e: unknown): string => `lxq: ${e instanceof Error ? e.message.split('\n')[0] : String(e)}\n`;

/**
 * Exits with `process.exitCode` once what was written to stdout and stderr is flushed (a pipe):
 * open handles (a VM's monitor connection) must not keep a finished command alive.
 */
export function exitFlushed(): void {
  const code = Number(process.exitCode ?? 0);
  process.stdout.write('', () => process.stderr.write('', () => process.exit(code)));
}
