/**
 * What the container driver needs of liblxc beside one container's handle: its states as lxq's
 * statuses, its errors as lxq's, the files it reads at start, a scratch parse of config items,
 * and the monitor cgroups a failed start leaves behind.
 */
import { createHash, randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import * as path from 'node:path';

import type { InstanceConfig } from '../../config/options';
import type { Devices } from '../../devices/declarations';
import { InvalidArgument, OperationFailed } from '../../core/errors';
import { writeFileAtomic } from '../../core/fs';
import { lxc, type LxcError } from '../../native/lxc';
import type { LxcItem } from './lxc-config';

/** The config renderer, loaded on first use: finding a container's status never needs it. */
// eslint-disable-next-line @typescript-eslint/no-require-imports -- see above
const lxcConfig = (): typeof import('./lxc-config') => require('./lxc-config');

/** The errno of a call refused for the container's state (the runner's attach, Expect in the addon). */
export const ESRCH = 3;
export const EBADF = 9;
export const ETIMEDOUT = 110;

export function failed(e: unknown, what: string): OperationFailed {
  const err = e as Partial<LxcError>;
  const log = err.log?.trim();
  return new OperationFailed(`${what}: ${err.message ?? String(e)}${log ? `\n${log}` : ''}`, { call: err.call, errno: err.errno, log }, { cause: e });
}

/**
 * liblxc 5.0.2 leaves the monitor's cgroups behind when a start fails (a successful run removes
 * them when the container stops). Only empty ones can go: rmdir refuses the rest. The failure is
 * reported while the runner's start handler (which liblxc moved into them) and the failed
 * monitor may still be exiting, so this tries again for a while until none is left.
 */
export async function removeMonitorCgroups(name: string): Promise<void> {
  const root = '/sys/fs/cgroup';
  const pattern = new RegExp(`^lxc\\.monitor\\.${name}(-\\d+)?$`);
  const deadline = Date.now() + 3_000;
  for (;;) {
    let left = 0;
    for (const hierarchy of await fs.readdir(root).catch(() => [] as string[])) {
      const dirs = await fs.readdir(path.join(root, hierarchy)).catch(() => [] as string[]);
      for (const d of dirs) {
        if (pattern.test(d)) await fs.rmdir(path.join(root, hierarchy, d)).catch(() => left++);
      }
    }
    if (left === 0 || Date.now() > deadline) return;
    await new Promise((r) => setTimeout(r, 20));
  }
}

/**
 * Whether a monitor of the container `name` still has processes: between the two inits of a
 * reboot inside, liblxc reports the container STOPPED while its monitor lives on to start it
 * again; the stop is final once the monitor is gone. (The cgroup's name does not carry the
 * lxcpath: another host's container of the same name counts too, which errs on keeping.)
 */
export async function monitorAlive(name: string): Promise<boolean> {
  const root = '/sys/fs/cgroup';
  const pattern = new RegExp(`^lxc\\.monitor\\.${name}(-\\d+)?$`);
  for (const hierarchy of await fs.readdir(root).catch(() => [] as string[])) {
    for (const d of await fs.readdir(path.join(root, hierarchy)).catch(() => [] as string[])) {
      if (!pattern.test(d)) continue;
      const procs = await fs.readFile(path.join(root, hierarchy, d, 'cgroup.procs'), 'utf8').catch(() => '');
      if (procs.trim()) return true;
    }
  }
  return false;
}

/** The liblxc files of a container, rendered (and so checked) before anything is written. */
export interface LxcFiles {
  config: string;
  seccomp: string;
}

export function lxcFiles(config: InstanceConfig, items: LxcItem[]): LxcFiles {
  return { config: lxcConfig().lxcConfigText(items), seccomp: lxcConfig().seccompPolicy(config) };
}

/** The container's seccomp policy, then the liblxc config that names it (liblxc reads both at start). */
export async function saveLxcFiles(dir: string, files: LxcFiles, source: { config: InstanceConfig; devices: Devices }): Promise<void> {
  await writeFileAtomic(path.join(dir, lxcConfig().SECCOMP_POLICY_FILE), files.seccomp);
  await writeFileAtomic(path.join(dir, 'config'), files.config);
  await writeFileAtomic(path.join(dir, SOURCE_SUM_FILE), sourceSum(source.config, source.devices));
}

/** Beside liblxc's config: a digest of the options and devices it was made from (see lxcFilesCurrent). */
const SOURCE_SUM_FILE = 'config.source';

function sourceSum(config: InstanceConfig, devices: Devices): string {
  return createHash('sha256').update(JSON.stringify({ config, devices })).digest('hex');
}

/**
 * Whether liblxc's config in `dir` was made from these options and devices: not after a profile
 * changed (by any process) while the container was stopped or in a way only partly live, nor
 * for a container made before this digest (or the default syscall filter) existed.
 */
export async function lxcFilesCurrent(dir: string, config: InstanceConfig, devices: Devices): Promise<boolean> {
  // The policy the config names must be there too: a missing one would start the container unfiltered.
  const policy = await fs.stat(path.join(dir, lxcConfig().SECCOMP_POLICY_FILE)).then(() => true, () => false);
  return policy && (await fs.readFile(path.join(dir, SOURCE_SUM_FILE), 'utf8').catch(() => '')) === sourceSum(config, devices);
}

/**
 * Lets liblxc parse every item in memory (a scratch handle, nothing on disk). lxc.log.file is
 * lxq's own and is skipped: setting it makes liblxc create the log's directory at once.
 */
export async function checkWithLiblxc(lxcpath: string, items: LxcItem[]): Promise<void> {
  const scratch = new (lxc().Container)(`.lxq-check-${randomBytes(6).toString('hex')}`, lxcpath);
  try {
    for (const [key, value] of items) {
      if (key === 'lxc.log.file') continue;
      await scratch.setConfigItem(key, value).catch(() => {
        throw new InvalidArgument(`liblxc rejects "${key} = ${value}" (from raw.lxc or an option)`);
      });
    }
  } finally {
    scratch.release();
  }
}
