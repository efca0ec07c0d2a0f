import { promises as fs } from 'node:fs';

/** A process's start in clock ticks since boot (field 22 of /proc/PID/stat); null if it is gone. */
export async function processStartTicks(pid: number): Promise<number | null> {
  const stat = await fs.readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '');
  const ticks = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19]);
  return stat && Number.isFinite(ticks) ? ticks : null;
}

/** The parent of a process (field 4 of /proc/PID/stat); null if it is gone. */
export async function parentPid(pid: number): Promise<number | null> {
  const stat = await fs.readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '');
  const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
  return stat && Number.isSafeInteger(ppid) ? ppid : null;
}

/** When a process started (from /proc: its start in clock ticks since boot, and the boot time). */
export async function processStartedAt(pid: number): Promise<Date | null> {
  const [ticks, system] = await Promise.all([processStartTicks(pid), fs.readFile('/proc/stat', 'utf8').catch(() => '')]);
  const btime = Number(/^btime (\d+)$/m.exec(system)?.[1]);
  return ticks !== null && Number.isFinite(btime) ? new Date((btime + ticks / 100) * 1000) : null; // USER_HZ = 100 on Linux
}
