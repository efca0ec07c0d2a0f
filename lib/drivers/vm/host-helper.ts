/**
 * The host-side helpers a VM's devices have beside QEMU (a share's virtiofsd, a TPM's swtpm):
 * started detached (they outlive Node as QEMU does, and end when QEMU disconnects from them),
 * waited on until their socket listens, and stopped by their pidfile when QEMU never came.
 */
import { spawn } from 'node:child_process';
import { promises as fs } from 'node:fs';

import { OperationFailed } from '../../core/errors';

/** How long a helper has to listen on its socket. */
const LISTEN_MS = 5_000;

export interface HostHelper {
  /** The program run (named in errors) and its full argv (program first). */
  what: string;
  argv: string[];
  socket: string;
  log: string;
  pidfile: string;
  /** An argument only this helper's command line holds: the pidfile's pid is checked against it (never a reused pid). */
  marker: string;
}

/** Starts `h` detached, its output in its log; resolves once its socket listens, else OperationFailed with its log. */
export async function startHostHelper(h: HostHelper): Promise<void> {
  await fs.rm(h.socket, { force: true });
  const log = await fs.open(h.log, 'w');
  try {
    const child = spawn(h.argv[0], h.argv.slice(1), { detached: true, stdio: ['ignore', log.fd, log.fd] });
    child.unref();
    if (child.pid !== undefined) await fs.writeFile(h.pidfile, String(child.pid));
    let exited: string | undefined;
    child.once('exit', (code, signal) => (exited = signal ?? `exit code ${code}`));
    child.once('error', (e) => (exited = e.message));
    const deadline = Date.now() + LISTEN_MS;
    // Listening, not just bound: a connection made between its bind and listen is refused (and a
    // probe connection would be taken by the helper as QEMU's), so /proc/net/unix is what tells.
    while (!(await listening(h.socket))) {
      if (exited !== undefined || Date.now() > deadline) {
        const text = (await fs.readFile(h.log, 'utf8').catch(() => '')).trim();
        await stopHostHelper(h);
        throw new OperationFailed(`${h.what} did not start (${exited ?? `no socket within ${LISTEN_MS / 1000} s`})${text ? `: ${text}` : ''}`, { call: h.argv[0] });
      }
      await new Promise((r) => setTimeout(r, 10));
    }
  } finally {
    await log.close();
  }
}

/** Stops a helper if it still runs (QEMU never started, or was killed); its pidfile goes. */
export async function stopHostHelper(h: Pick<HostHelper, 'pidfile' | 'marker'>): Promise<void> {
  const pid = Number(await fs.readFile(h.pidfile, 'utf8').catch(() => ''));
  const argv = pid > 0 ? await fs.readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '') : '';
  if (argv.split('\0').includes(h.marker)) {
    try {
      process.kill(pid, 'SIGTERM');
    } catch {
      /* gone meanwhile */
    }
  }
  await fs.rm(h.pidfile, { force: true });
}

/** Whether the helper runs now: its pidfile's process, its command line holding the marker (never a reused pid). */
export async function helperAlive(h: Pick<HostHelper, 'pidfile' | 'marker'>): Promise<boolean> {
  const pid = Number(await fs.readFile(h.pidfile, 'utf8').catch(() => ''));
  return pid > 0 && (await fs.readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '')).split('\0').includes(h.marker);
}

/** True once a unix socket at `path` listens (`__SO_ACCEPTCON` in /proc/net/unix). */
async function listening(socketPath: string): Promise<boolean> {
  const table = await fs.readFile('/proc/net/unix', 'utf8').catch(() => '');
  for (const line of table.split('\n')) {
    const f = line.trim().split(/\s+/);
    if (f[7] === socketPath && (parseInt(f[3], 16) & 0x10000) !== 0) return true;
  }
  return false;
}
