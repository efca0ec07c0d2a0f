/**
 * The cgroup files a container's limits.* options set, per controller, for the liblxc config at
 * start (`lxc.cgroup.*` on a v1 controller, `lxc.cgroup2.*` on v2) and for live updates through
 * liblxc's command socket. LXD's arithmetic: lxd/instance/drivers/driver_lxc.go, lxd/cgroup.
 */
import { existsSync, readFileSync } from 'node:fs';
import * as os from 'node:os';

import type { InstanceConfig } from '../../config/options';
import { cpuShares, HUGEPAGE_KEYS } from '../../config/options/limits';
import { numaNodes, requireKernelModule } from '../../config/options/host-probe';
import { kernelModules } from '../../config/options/linux';
import { OperationFailed } from '../../core/errors';
import { run } from '../../core/run';
import { parseCpus, parseMemory, parseSize } from '../../core/units';
import type { CgroupController, CgroupLayout } from './host-facts';

export interface CgroupLimit {
  controller: CgroupController;
  key: string;
  value: string;
  /** The option asks for it (unset: `value` lifts the limit, for live updates). */
  set: boolean;
}

function hostSwappiness(): string {
  try {
    return readFileSync('/proc/sys/vm/swappiness', 'utf8').trim();
  } catch {
    return '60';
  }
}

function memoryLimits(config: InstanceConfig, layout: CgroupLayout): CgroupLimit[] {
  const mem = config['limits.memory'];
  const bytes = mem ? parseMemory(mem, os.totalmem()) : undefined;
  const soft = config['limits.memory.enforce'] === 'soft';
  const noSwap = config['limits.memory.swap'] === 'false';
  const priority = config['limits.memory.swap.priority'];
  if (layout.version('memory') === 2) {
    return [
      { controller: 'memory', key: 'memory.max', value: bytes !== undefined && !soft ? String(bytes) : 'max', set: bytes !== undefined && !soft },
      { controller: 'memory', key: 'memory.high', value: bytes !== undefined && soft ? String(bytes) : 'max', set: bytes !== undefined && soft },
      { controller: 'memory', key: 'memory.swap.max', value: noSwap ? '0' : 'max', set: noSwap },
    ];
  }
  const hard = bytes !== undefined && !soft;
  const out: CgroupLimit[] = [
    { controller: 'memory', key: 'memory.limit_in_bytes', value: hard ? String(bytes) : '-1', set: hard },
    // Hard: a soft limit 10% below, as LXD on v1; soft: the limit itself, reclaimed under pressure.
    { controller: 'memory', key: 'memory.soft_limit_in_bytes', value: bytes === undefined ? '-1' : String(soft ? bytes : Math.floor(bytes * 0.9)), set: bytes !== undefined },
  ];
  // memory.memsw.* exists only with swap accounting; it counts memory + swap, so it follows the limit (and must not be below it).
  const mount = layout.v1Mount('memory');
  if (mount && existsSync(`${mount}/memory.memsw.limit_in_bytes`)) {
    out.push({ controller: 'memory', key: 'memory.memsw.limit_in_bytes', value: hard ? String(noSwap ? bytes! : 2 * bytes!) : '-1', set: hard });
  }
  const swappiness = noSwap ? '0' : priority !== undefined ? String(70 - Number(priority)) : hostSwappiness();
  out.push({ controller: 'memory', key: 'memory.swappiness', value: swappiness, set: noSwap || priority !== undefined });
  return out;
}

function cpuLimits(config: InstanceConfig, layout: CgroupLayout): CgroupLimit[] {
  const set = config['limits.cpu.allowance'] !== undefined || config['limits.cpu.priority'] !== undefined;
  if (layout.version('cpu') === 2) {
    const { shares, quotaUs, periodUs } = cpuShares(config, 100);
    return [
      { controller: 'cpu', key: 'cpu.weight', value: String(Math.max(1, shares)), set },
      { controller: 'cpu', key: 'cpu.max', value: quotaUs === -1 ? 'max' : `${quotaUs} ${periodUs}`, set: set && quotaUs !== -1 },
    ];
  }
  const { shares, quotaUs, periodUs } = cpuShares(config, 1024);
  return [
    { controller: 'cpu', key: 'cpu.shares', value: String(shares), set },
    // The period first: a quota is checked against the period in place.
    { controller: 'cpu', key: 'cpu.cfs_period_us', value: String(periodUs), set: set && quotaUs !== -1 },
    { controller: 'cpu', key: 'cpu.cfs_quota_us', value: String(quotaUs), set: set && quotaUs !== -1 },
  ];
}

/** A v1 blkio.weight file (limits.disk.priority is refused where there is none). */
function blkioWeight(layout: CgroupLayout): boolean {
  const mount = layout.v1Mount('blkio');
  return mount !== undefined && existsSync(`${mount}/blkio.weight`);
}

/**
 * The cgroup limits the options ask for, in the order they can be written: per controller, the
 * file, its value, and whether the option is set at all.
 */
export function cgroupLimits(config: InstanceConfig, layout: CgroupLayout): CgroupLimit[] {
  const cpu = config['limits.cpu'];
  const pids = config['limits.processes'];
  const nodes = config['limits.cpu.nodes'];
  const hugetlb = Object.entries(HUGEPAGE_KEYS).map(([suffix]): CgroupLimit => {
    const v = config[`limits.hugepages.${suffix}`];
    const v1 = layout.version('hugetlb') === 1;
    return { controller: 'hugetlb', key: v1 ? `hugetlb.${suffix}.limit_in_bytes` : `hugetlb.${suffix}.max`, value: v ? String(parseSize(v)) : v1 ? '-1' : 'max', set: v !== undefined };
  });
  const weight = config['limits.disk.priority'];
  return [
    ...memoryLimits(config, layout),
    { controller: 'cpuset', key: 'cpuset.cpus', value: cpu ? parseCpus(cpu, os.cpus().length).join(',') : `0-${os.cpus().length - 1}`, set: cpu !== undefined },
    { controller: 'cpuset', key: 'cpuset.mems', value: (nodes ? nodes : numaNodes().join(',')).trim(), set: nodes !== undefined },
    ...cpuLimits(config, layout),
    { controller: 'pids', key: 'pids.max', value: pids ?? 'max', set: pids !== undefined },
    // Only with a weight controller (limits.disk.priority is refused where there is none).
    ...(blkioWeight(layout) ? [{ controller: 'blkio' as const, key: 'blkio.weight', value: String(Math.max(10, Number(weight ?? '5') * 100)), set: weight !== undefined }] : []),
    ...(layout.v1Mount('hugetlb') !== undefined ? hugetlb : []),
  ];
}

/**
 * Loads linux.kernel_modules on the host (modprobe), as LXD does before a start and when the key
 * changes on a running container. A module already there (built in, loaded) needs nothing;
 * one that cannot be had is NotSupported (requireKernelModule).
 */
export async function loadKernelModules(config: InstanceConfig): Promise<void> {
  const value = config['linux.kernel_modules'];
  if (!value) return;
  for (const m of kernelModules(value)) {
    if (requireKernelModule('linux.kernel_modules', m) === 'loadable') {
      await run('modprobe', ['-b', m]).catch((e) => {
        throw new OperationFailed(`linux.kernel_modules: modprobe ${m} failed: ${(e as Error).message}`);
      });
    }
  }
}

/**
 * The writes that take a running container from `previous` to `next`: the changed files, in
 * order. On v1 memory, memsw (memory + swap) must never be below the limit: it is lifted first
 * and set again after the limit.
 */
export function liveCgroupWrites(next: InstanceConfig, previous: InstanceConfig, layout: CgroupLayout): Array<[key: string, value: string]> {
  const before = new Map(cgroupLimits(previous, layout).map((l) => [l.key, l.value]));
  const changed = cgroupLimits(next, layout).filter((l) => before.get(l.key) !== l.value);
  const writes: Array<[string, string]> = [];
  const memsw = 'memory.memsw.limit_in_bytes';
  if (before.has(memsw) && changed.some((l) => l.key === 'memory.limit_in_bytes' || l.key === memsw)) {
    writes.push([memsw, '-1']);
    const target = cgroupLimits(next, layout).find((l) => l.key === memsw)!;
    if (!changed.includes(target)) changed.push(target);
  }
  for (const l of changed) writes.push([l.key, l.value]);
  return writes;
}
