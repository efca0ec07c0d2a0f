import { promises as fs } from 'node:fs';

/** When a process started (from /proc: its start in clock ticks since boot, and the boot time). */
export async function processStartedAt(pid: number): Promise<Date | null> {
  const [stat, system] = await Promise.all([fs.readFile(`/proc/${pid}/stat`, 'utf8').catch(() => ''), fs.readFile('/proc/stat', 'utf8').catch(() => '')]);
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const ticks = Number(fields[19]); // field 22, starttime (USER_HZ = 100 on Linux)
  const btime = Number(/^btime (\d+)$/m.exec(system)?.[1]);
  return Number.isFinite(ticks) && Number.isFinite(btime) && stat ? new Date((btime + ticks / 100) * 1000) : null;
}
