/**
 * security.syscalls.intercept.mknod/setxattr/sysinfo: the container's policy marks those calls
 * `notify`, liblxc's monitor forwards each notification to lxq's listener (`lxq_intercept`,
 * native/intercept/main.c) at a socket named in the liblxc config (lxc.seccomp.notify.proxy),
 * and the listener answers as LXD's daemon does. One listener per running container, detached
 * from lxq: started before the container (the monitor connects as the container starts) and
 * ending with the monitor; any lxq process that finds it gone (killed) starts another, to which
 * the monitor reconnects at its next notification.
 */
import { createHash } from 'node:crypto';
import { closeSync, mkdirSync, writeSync } from 'node:fs';
import * as path from 'node:path';

import type { InstanceConfig } from '../../config/options';
import { processStartTicks } from '../../core/proc';
import { flockHeld, helperPath, sys } from '../../native/sys';

/** A listener started for a start to come: bound to the container's monitor once it runs, or told the start failed. */
export interface Listener {
  bind(pid: number): Promise<void>;
  cancel(): void;
}

/** The calls lxq answers, each enabled by security.syscalls.intercept.<call>. */
export const INTERCEPTED = ['mknod', 'setxattr', 'sysinfo'] as const;

/** Where the listeners' sockets are: a socket's path is limited to 107 bytes, an instance's directory is not. */
const SOCKET_DIR = '/run/lxq/intercept';

/** The calls `config` intercepts (none: no listener, no notify rule). */
export function interceptedCalls(config: InstanceConfig): string[] {
  return INTERCEPTED.filter((c) => config[`security.syscalls.intercept.${c}`] === 'true');
}

/** The listener's socket for the container in `dir` (the same from every process), and the lock it holds while it runs. */
export function interceptPaths(dir: string): { socket: string; lock: string } {
  const id = createHash('sha256').update(path.resolve(dir)).digest('hex').slice(0, 24);
  return { socket: path.join(SOCKET_DIR, `${id}.sock`), lock: path.join(dir, 'intercept.lock') };
}

/**
 * The policy's rules for the intercepted calls (LXD's, lxd/seccomp): mknod of character and
 * block nodes, setxattr of one-byte values, every sysinfo; and, as LXD, the container may not
 * install a filter that would take the calls from the listener (SECCOMP_RET_TRACE, a listener
 * of its own).
 */
export function notifyRules(config: InstanceConfig): string[] {
  const calls = interceptedCalls(config);
  if (!calls.length) return [];
  const rules = ['seccomp errno 22 [1,2146435072,SCMP_CMP_MASKED_EQ,2146435072]', 'seccomp errno 22 [1,8,SCMP_CMP_MASKED_EQ,8]'];
  if (calls.includes('mknod')) {
    for (const type of [8192, 24576]) rules.push(`mknod notify [1,${type},SCMP_CMP_MASKED_EQ,61440]`, `mknodat notify [2,${type},SCMP_CMP_MASKED_EQ,61440]`);
  }
  if (calls.includes('setxattr')) rules.push('setxattr notify [3,1,SCMP_CMP_EQ]');
  if (calls.includes('sysinfo')) rules.push('sysinfo notify');
  return rules;
}

/** The listener for a start to come, listening when this returns; undefined if nothing is intercepted. */
export function startListener(dir: string, config: InstanceConfig): Listener | undefined {
  const calls = interceptedCalls(config);
  if (!calls.length) return undefined;
  const { socket, lock } = interceptPaths(dir);
  mkdirSync(SOCKET_DIR, { recursive: true, mode: 0o700 });
  // Not child_process.spawn: it forks this process, which blocks the event loop in proportion to the heap. Its first process has bound the socket when this returns.
  let stdin: number | undefined = sys().spawnDetached(helperPath('lxq_intercept'), [socket, lock, calls.join(',')], dir).stdin;
  const end = (line: string): void => {
    if (stdin === undefined) return;
    const fd = stdin;
    stdin = undefined;
    // A few bytes into an empty pipe never block; EPIPE: it ended (another listener holds the lock).
    try {
      if (line) writeSync(fd, line);
    } catch {
      /* ended */
    }
    closeSync(fd);
  };
  return {
    bind: async (pid) => {
      const ticks = await processStartTicks(pid);
      end(ticks !== null ? `${pid} ${ticks}\n` : '');
    },
    cancel: () => end(''),
  };
}


/** A running container's listener, started again if it is gone (killed) and given the monitor at once; `status` passed through. */
export async function ensureListener<S extends string>(status: S, dir: string, config: InstanceConfig, monitor: () => Promise<number | null>): Promise<S> {
  if (status === 'stopped' || !interceptedCalls(config).length || (await flockHeld(interceptPaths(dir).lock))) return status;
  const pid = await monitor();
  if (pid !== null) await startListener(dir, config)?.bind(pid);
  return status;
}
