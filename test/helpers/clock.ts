/**
 * A wall clock moved for child processes (clock-shift.js): `minuteIn(ms)` gives the environment
 * under which a minute begins `ms` from now, every process spawned with it sharing one clock (the
 * schedulers' claims on a minute must agree). A process that starts later than that only waits for
 * the next minute, as with the real clock.
 */
import * as path from 'node:path';

export interface ShiftedClock {
  /** How far the children's clock is ahead of this process's. */
  shift: number;
  env: NodeJS.ProcessEnv;
}

export function minuteIn(ms: number): ShiftedClock {
  const now = Date.now();
  const shift = (((60_000 - ((now + ms) % 60_000)) % 60_000) + 60_000) % 60_000;
  const preload = `--require ${path.join(__dirname, 'clock-shift.js')}`;
  return { shift, env: { ...process.env, LXQ_TEST_CLOCK_SHIFT_MS: String(shift), NODE_OPTIONS: [process.env.NODE_OPTIONS, preload].filter(Boolean).join(' ') } };
}
