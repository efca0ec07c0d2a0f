/** Waiting for systemd inside an instance (the Debian images). */
import type { Instance } from '../../lib';

/** `systemctl is-system-running --wait` once systemd's bus answers; the state word. */
export async function systemdState(i: Instance, timeoutMs = 240_000): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const r = await i.exec(['systemctl', 'is-system-running', '--wait'], { timeout: Math.max(1_000, deadline - Date.now()) });
    const state = r.stdout.toString().trim();
    // "offline": PID 1 is not (yet) systemd's manager, e.g. right after a start.
    if (state && !['starting', 'initializing', 'offline'].includes(state)) return state;
    if (Date.now() > deadline) throw new Error(`systemd did not finish booting: ${state || r.stderr.toString()}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}
