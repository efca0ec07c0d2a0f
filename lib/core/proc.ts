import { execFileSync } from 'node:child_process';
import { existsSync, promises as fs, readFileSync } from 'node:fs';

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

/** AppArmor confines containers where it is enabled; elsewhere liblxc's "generated" profile cannot load. */
export function apparmorEnabled(): boolean {
  try {
    return existsSync('/sys/kernel/security/apparmor') && readFileSync('/sys/module/apparmor/parameters/enabled', 'utf8').trim() === 'Y';
  } catch {
    return false;
  }
}

let criu: string | undefined;

/**
 * Why CRIU cannot checkpoint here: the last lines of `criu check`'s complaint, 'criu is not
 * installed', or '' when it passes. Asked once per process (a fifth of a second).
 */
export function criuCheckFailure(): string {
  if (criu !== undefined) return criu;
  try {
    execFileSync('criu', ['check'], { stdio: ['ignore', 'pipe', 'pipe'], timeout: 30_000 });
    criu = '';
  } catch (e) {
    const error = e as NodeJS.ErrnoException & { stdout?: Buffer; stderr?: Buffer };
    criu = error.code === 'ENOENT' ? 'criu is not installed' : `${error.stderr ?? ''}${error.stdout ?? ''}`.trim().split('\n').slice(-3).join('\n') || error.message;
  }
  return criu;
}

/**
 * How to run lxq's Node program `entry` (a path without extension, beside the calling module)
 * in a process of its own: its compiled .js, or, run from the TypeScript sources, its .ts with
 * the module loader this process has (`-r`, `--import`, `--loader`, as child_process.fork passes
 * execArgv on) or else the repository's transpiling loader (test/helpers/ts-register.js: the
 * tests run lib/*.ts inside ts-jest, which a child process does not have).
 */
export function nodeProgramArgs(entry: string): string[] {
  if (existsSync(`${entry}.js`)) return [`${entry}.js`];
  const out: string[] = [];
  const argv = process.execArgv;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (['-r', '--require', '--import', '--loader', '--experimental-loader'].includes(a) && i + 1 < argv.length) out.push(a, argv[++i]);
    else if (/^--(require|import|loader|experimental-loader)=/.test(a)) out.push(a);
  }
  const register = `${__dirname}/../../test/helpers/ts-register.js`;
  if (!out.length && existsSync(register)) out.push('-r', register);
  return [...out, `${entry}.ts`];
}
