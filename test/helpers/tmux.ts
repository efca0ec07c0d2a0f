/**
 * A real terminal for CLI tests: tmux sessions driven with send-keys, read with capture-pane.
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';

const execFileP = promisify(execFile);

export async function tmux(...args: string[]): Promise<string> {
  return (await execFileP('tmux', args)).stdout;
}

/** Waits until the session's screen matches `re`; resolves the screen (trailing blanks trimmed by tmux). */
export async function screenShows(session: string, re: RegExp, timeoutMs = 60_000): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const screen = await tmux('capture-pane', '-p', '-t', session).catch(() => '');
    if (re.test(screen)) return screen;
    if (Date.now() > deadline) throw new Error(`screen never showed ${re}:\n${screen}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
