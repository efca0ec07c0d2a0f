/**
 * What the container driver needs to know about this host, read once: the cgroup layout (per
 * controller: a v1 hierarchy, or the v2 unified tree), the id range for unprivileged
 * containers, and whether AppArmor is there to confine them.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';

import type { RawIdmapEntry } from '../../config/options';
import { OperationFailed } from '../../core/errors';

export type CgroupVersion = 1 | 2;
export type CgroupController = 'memory' | 'cpuset' | 'pids' | 'cpu' | 'cpuacct' | 'freezer' | 'devices' | 'blkio' | 'hugetlb';

export interface CgroupLayout {
  /** Where each controller lives. On a hybrid host `lxc.cgroup2.*` keys are silently ignored for v1 controllers. */
  version(controller: CgroupController): CgroupVersion;
  /** Where a v1 controller's hierarchy is mounted (undefined for v2 ones). */
  v1Mount(controller: CgroupController): string | undefined;
}

export function detectCgroupLayout(mounts = readFileSync('/proc/self/mounts', 'utf8')): CgroupLayout {
  const v1 = new Map<string, string>();
  for (const line of mounts.split('\n')) {
    const [, mountpoint, fstype, options] = line.split(' ');
    if (fstype === 'cgroup') for (const opt of options.split(',')) if (!v1.has(opt)) v1.set(opt, mountpoint);
  }
  return {
    version(controller) {
      // cpuacct is cpu's v1 twin; freezer in v2 is a core file, not a controller.
      return v1.has(controller) ? 1 : 2;
    },
    v1Mount: (controller) => v1.get(controller),
  };
}

export interface IdMap {
  /** First host uid/gid of the container's range; container root is this id on the host. */
  base: number;
  size: number;
  /** raw.idmap's lines, punched into the range (lib/drivers/container/idmap.ts). */
  raw?: readonly RawIdmapEntry[];
}

export const IDMAP_SIZE = 65536;
const DEFAULT_BASE = 1_000_000;

/** Root's ranges in /etc/subuid or /etc/subgid (every line naming root), in file order. */
export function rootSubRanges(file: string): Array<{ start: number; count: number }> {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    return [];
  }
  const out: Array<{ start: number; count: number }> = [];
  for (const line of text.split('\n')) {
    const [owner, start, count] = line.trim().split(':');
    if ((owner === 'root' || owner === '0') && /^\d+$/.test(start ?? '') && /^\d+$/.test(count ?? '')) out.push({ start: Number(start), count: Number(count) });
  }
  return out;
}

/** Root's first range big enough for a container. */
const rangeFor = (file: string): { start: number; count: number } | undefined => rootSubRanges(file).find((r) => r.count >= IDMAP_SIZE);

function onPath(cmd: string): boolean {
  try {
    execFileSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/**
 * The id map for unprivileged containers. liblxc insists that root, too, owns its range in
 * /etc/subuid and /etc/subgid whenever newuidmap is installed (it then maps through it).
 */
export function detectIdMap(): IdMap {
  const uid = rangeFor('/etc/subuid');
  const gid = rangeFor('/etc/subgid');
  if (uid && gid && uid.start === gid.start) return { base: uid.start, size: IDMAP_SIZE };
  if (!onPath('newuidmap') && !onPath('newgidmap')) return { base: DEFAULT_BASE, size: IDMAP_SIZE };
  throw new OperationFailed(
    'unprivileged containers need an id range for root: add "root:1000000:1000000000" to both /etc/subuid and ' +
      '/etc/subgid (scripts/setup-host.sh does it), or create the container with security.privileged=true',
  );
}

export { apparmorEnabled } from '../../core/proc';

/**
 * Where root's ids may go: the intersection of root's /etc/subuid and /etc/subgid ranges, or
 * (neither there, and no newuidmap) any id from the default base up, as liblxc then writes the
 * maps itself.
 */
export function rootIdRange(): { start: number; end: number } {
  const uid = rangeFor('/etc/subuid');
  const gid = rangeFor('/etc/subgid');
  if (uid && gid) return { start: Math.max(uid.start, gid.start), end: Math.min(uid.start + uid.count, gid.start + gid.count) };
  return { start: DEFAULT_BASE, end: 2 ** 32 - 1 };
}
