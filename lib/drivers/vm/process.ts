/**
 * The QEMU process of a VM: started detached (its own session, its output in qemu.log), found
 * again from its pidfile by any process, watched until it exits, killed when it will not quit.
 */
import { spawn } from 'node:child_process';
import { promises as fs } from 'node:fs';
import * as path from 'node:path';

import { OperationFailed } from '../../core/errors';
import { vmFile } from './paths';

export const QEMU = 'qemu-system-x86_64';
/** Under KVM the first console line comes well within this; nothing means a hung or dead guest. */
const BOOT_WATCHDOG_MS = 5_000;
/** How long QEMU may take to exit after `quit` (and after SIGKILL) before it is given up on. */
export const QUIT_GRACE_MS = 2_000;
const EXIT_POLL_MS = 20;

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The pid in `pidfile` if that process is a live QEMU started with this pidfile (not a reused pid, not a zombie). */
export async function livePid(pidfile: string): Promise<number | null> {
  const pid = Number((await fs.readFile(pidfile, 'utf8').catch(() => '')).trim());
  return Number.isInteger(pid) && pid > 0 && (await isQemuOf(pid, pidfile)) ? pid : null;
}

/** A VM's QEMU pid, read from its pidfile the way any process can (for host-wide events). */
export function vmMainPid(instancesDir: string, name: string): Promise<number | null> {
  return livePid(vmFile(path.join(instancesDir, name), 'pid'));
}

export async function isQemuOf(pid: number, pidfile: string): Promise<boolean> {
  // A zombie's (or an exiting process's) cmdline is empty.
  const argv = await fs.readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
  return argv.split('\0').includes(pidfile);
}

/** Resolves true once the process is gone, false if it still runs after `timeoutMs`. */
export async function waitForExit(pid: number, pidfile: string, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (!(await isQemuOf(pid, pidfile))) return true;
    if (Date.now() >= deadline) return false;
    await sleep(EXIT_POLL_MS);
  }
}

/** The last `lines` lines of a log ('' when there is none). */
export async function logTail(file: string, lines = 20): Promise<string> {
  const text = await fs.readFile(file, 'utf8').catch(() => '');
  return text.trimEnd().split('\n').slice(-lines).join('\n');
}

/**
 * Starts QEMU detached with `args`, its output into `logFile`, and `fds` as its descriptors 3, 4, ….
 * Returns why it exited, read at any later time: undefined while it runs (or once this process
 * no longer watches it).
 */
export async function spawnQemu(args: string[], logFile: string, fds: number[] = []): Promise<() => string | undefined> {
  const log = await fs.open(logFile, 'w');
  let exitReason: string | undefined;
  try {
    const child = spawn(QEMU, args, { detached: true, stdio: ['ignore', log.fd, log.fd, ...fds] });
    child.unref();
    child.once('exit', (code, signal) => (exitReason = signal ?? `exit code ${code}`));
    child.once('error', (e) => (exitReason = e.message));
  } finally {
    await log.close();
  }
  return () => exitReason;
}

/**
 * Ends the QEMU of a VM in `dir`: `quit` (asked by the caller, who holds the monitor), then
 * SIGKILL if it has not exited within QUIT_GRACE_MS. OperationFailed if it survives even that.
 */
export async function endQemu(dir: string, quit: () => Promise<void>, vmName: string): Promise<void> {
  const pidfile = vmFile(dir, 'pid');
  const pid = await livePid(pidfile);
  if (pid === null) return;
  await quit();
  if (await waitForExit(pid, pidfile, QUIT_GRACE_MS)) return;
  try {
    process.kill(pid, 'SIGKILL');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ESRCH') throw e;
  }
  if (!(await waitForExit(pid, pidfile, QUIT_GRACE_MS))) throw new OperationFailed(`QEMU (pid ${pid}) of ${vmName} survived SIGKILL`);
}

/** Resolves once the guest of the VM in `dir` printed on its console; rejects if it stays silent or QEMU dies. */
export async function watchBoot(dir: string): Promise<void> {
  const deadline = Date.now() + BOOT_WATCHDOG_MS;
  const pidfile = vmFile(dir, 'pid');
  const pid = await livePid(pidfile);
  while (Date.now() < deadline) {
    if ((await fs.stat(vmFile(dir, 'console')).catch(() => undefined))?.size) return;
    if (pid === null || !(await isQemuOf(pid, pidfile))) throw new Error(`QEMU exited during boot: ${await logTail(vmFile(dir, 'qemuLog'), 3)}`);
    await sleep(50);
  }
  throw new Error(`no console output within ${BOOT_WATCHDOG_MS} ms`);
}

/** CPU time and resident memory of a QEMU process, from /proc (0 for what cannot be read). */
export async function qemuUsage(pid: number): Promise<{ cpuNs: number; rssBytes: number }> {
  const [stat, status] = await Promise.all([
    fs.readFile(`/proc/${pid}/stat`, 'utf8').catch(() => ''),
    fs.readFile(`/proc/${pid}/status`, 'utf8').catch(() => ''),
  ]);
  // utime and stime are fields 14 and 15, in clock ticks (USER_HZ, 100 on Linux); the name
  // (field 2) may hold spaces, so count from its closing parenthesis.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const ticks = Number(fields[11] ?? 0) + Number(fields[12] ?? 0);
  const rssKiB = Number(/^VmRSS:\s+(\d+) kB/m.exec(status)?.[1] ?? 0);
  return { cpuNs: (ticks || 0) * 10_000_000, rssBytes: rssKiB * 1024 };
}
