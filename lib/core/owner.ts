/**
 * Which process owns something left on disk (a freeze, a partial file): its pid and start time,
 * so that a pid reused by a later process is not taken for the owner.
 */
import { processStartedAt } from './proc';

export interface Owner {
  pid: number;
  /** The process's start (ms since the epoch, from /proc), null if unknown. */
  startedAt: number | null;
}

let own: Promise<Owner> | undefined;

function startOf(pid: number): Promise<number | null> {
  return processStartedAt(pid).then((d) => d?.getTime() ?? null);
}

/** This process, as an Owner. */
export function currentOwner(): Promise<Owner> {
  own ??= startOf(process.pid).then((startedAt) => ({ pid: process.pid, startedAt }));
  return own;
}

export async function isCurrentOwner(o: Partial<Owner>): Promise<boolean> {
  const me = await currentOwner();
  return o.pid === me.pid && o.startedAt === me.startedAt;
}

/** Whether the process `o` names has ended (its pid is gone or now another process's). */
export async function ownerGone(o: Partial<Owner>): Promise<boolean> {
  if (!Number.isInteger(o.pid) || (o.pid as number) <= 0) return true;
  if (await isCurrentOwner(o)) return false;
  const started = await startOf(o.pid as number);
  return started === null || started !== o.startedAt;
}
