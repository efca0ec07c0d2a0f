/**
 * LXD's `volatile.last_state.power`: whether an instance was last left running or stopped, so
 * that `lxq autostart start` restores an instance whose `boot.autostart` is unset to its state
 * when the host last stopped. Written at each start (RUNNING) and at a stop by lxq (STOPPED);
 * `lxq autostart stop` writes RUNNING back after stopping an instance for the host's shutdown, as
 * LXD does. An instance that powers itself off is not seen by any process, so it stays RUNNING.
 */
import { promises as fs } from 'node:fs';
import * as path from 'node:path';

import { POWER_MARK } from './names';


export type PowerState = 'RUNNING' | 'STOPPED';

export async function markPower(dir: string, state: PowerState): Promise<void> {
  await fs.writeFile(path.join(dir, POWER_MARK), state, { mode: 0o600 });
}

/** The state last written, or undefined (never started, or made before lxq kept it). */
export async function lastPower(dir: string): Promise<PowerState | undefined> {
  const text = await fs.readFile(path.join(dir, POWER_MARK), 'utf8').catch(() => '');
  return text === 'RUNNING' || text === 'STOPPED' ? text : undefined;
}

/** Marks a start (RUNNING); gives what puts the mark back as it was if the start fails (none: it goes). */
export async function markStarting(dir: string): Promise<() => Promise<void>> {
  const before = await lastPower(dir);
  await markPower(dir, 'RUNNING');
  return () => (before ? markPower(dir, before) : fs.rm(path.join(dir, POWER_MARK), { force: true }));
}
