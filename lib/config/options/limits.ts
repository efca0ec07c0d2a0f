/** LXD's resource-limits group: limits.* options. */
import { readFileSync } from 'node:fs';
import * as os from 'node:os';

import { parseBoolean, parseCpus, parseMemory, parsePositiveInteger, parseSize } from '../../core/units';
import { blkioWeightMissing, hugePageSizesKiB, hugetlbMissing, numaNodes, parseIdList } from './host-probe';
import type { OptionSpec } from './spec';

/** LXD's huge page keys and their sizes in KiB. */
export const HUGEPAGE_KEYS = { '64KB': 64, '1MB': 1024, '2MB': 2048, '1GB': 1024 * 1024 } as const;

/** The rlimits `limits.kernel.*` takes (liblxc's lxc.prlimit names, LXD's older key set). */
export const KERNEL_LIMITS = ['as', 'core', 'cpu', 'data', 'fsize', 'locks', 'memlock', 'msgqueue', 'nice', 'nofile', 'nproc', 'rss', 'rtprio', 'rttime', 'sigpending', 'stack'] as const;

/** LXD's rlimit names as /proc/self/limits titles them. */
const RLIMIT_TITLES: Record<(typeof KERNEL_LIMITS)[number], string> = {
  as: 'Max address space', core: 'Max core file size', cpu: 'Max cpu time', data: 'Max data size', fsize: 'Max file size', locks: 'Max file locks',
  memlock: 'Max locked memory', msgqueue: 'Max msgqueue size', nice: 'Max nice priority', nofile: 'Max open files', nproc: 'Max processes',
  rss: 'Max resident set', rtprio: 'Max realtime priority', rttime: 'Max realtime timeout', sigpending: 'Max pending signals', stack: 'Max stack size',
};

/** This process's hard limit of an rlimit (what the containers it starts inherit); Infinity for unlimited. */
function hardRlimit(name: string): number {
  const title = RLIMIT_TITLES[name as (typeof KERNEL_LIMITS)[number]];
  const line = readFileSync('/proc/self/limits', 'utf8').split('\n').find((l) => l.startsWith(title + ' '));
  const hard = line?.slice(title.length).trim().split(/\s+/)[1];
  return hard === undefined || hard === 'unlimited' ? Infinity : Number(hard);
}

function parseRange(v: string, min: number, max: number): number {
  if (!/^\d+$/.test(v) || Number(v) < min || Number(v) > max) throw new Error(`expected an integer from ${min} to ${max}, got ${JSON.stringify(v)}`);
  return Number(v);
}

function oneOf(v: string, values: string[]): string {
  if (!values.includes(v)) throw new Error(`expected ${values.map((x) => JSON.stringify(x)).join(' or ')}, got ${JSON.stringify(v)}`);
  return v;
}

/**
 * `limits.cpu.allowance` as LXD reads it: "50%" (a share: cpu.shares is 1024 × 50 / 100) or
 * "25ms/100ms" (a quota per period, in microseconds for cpu.cfs_quota_us / cpu.cfs_period_us).
 */
export function parseCpuAllowance(v: string): { percent: number } | { quotaUs: number; periodUs: number } {
  const pct = /^(\d{1,5})%$/.exec(v);
  if (pct) {
    const percent = Number(pct[1]);
    if (percent < 1) throw new Error(`a percentage from 1%, got ${JSON.stringify(v)}`);
    return { percent };
  }
  const t = /^(\d{1,7})ms\/(\d{1,4})ms$/.exec(v);
  if (!t) throw new Error(`expected a percentage ("50%") or a quota per period ("25ms/100ms"), got ${JSON.stringify(v)}`);
  const [quota, period] = [Number(t[1]), Number(t[2])];
  // The kernel's bounds for cfs_period_us (1 ms - 1 s) and cfs_quota_us (at least 1 ms).
  if (period < 1 || period > 1000) throw new Error(`the period must be 1ms to 1000ms, got ${period}ms`);
  if (quota < 1) throw new Error(`the quota must be at least 1ms, got ${quota}ms`);
  return { quotaUs: quota * 1000, periodUs: period * 1000 };
}

/** The smallest memory limit each type can boot with. */
export const MEMORY_FLOOR = { container: 4 * 2 ** 20, vm: 64 * 2 ** 20 };

function memoryValidator(value: string): void {
  parseMemory(value, os.totalmem());
}

/** cpu.shares from limits.cpu.allowance and limits.cpu.priority (LXD's cgroup.ParseCPU); quota and period in µs, -1 for none. */
export function cpuShares(config: Record<string, string>, maxShares: number): { shares: number; quotaUs: number; periodUs: number } {
  const priority = Number(config['limits.cpu.priority'] ?? '10');
  const allowance = config['limits.cpu.allowance'];
  const parsed = allowance ? parseCpuAllowance(allowance) : { percent: 100 };
  let shares = -(10 - priority);
  if ('percent' in parsed) return { shares: Math.max(2, shares + Math.floor((maxShares * parsed.percent) / 100)), quotaUs: -1, periodUs: 100_000 };
  shares += maxShares;
  return { shares: Math.max(2, shares), quotaUs: parsed.quotaUs, periodUs: parsed.periodUs };
}

export const LIMITS_OPTIONS: readonly OptionSpec[] = [
  {
    key: 'limits.cpu',
    type: 'cpus',
    condition: 'both',
    live: 'container',
    description: 'CPUs: a count ("2") or, for containers, a CPU set ("0-1,3"). For VMs, the number of vCPUs.',
    validate: (v) => void parseCpus(v, os.cpus().length),
  },
  {
    key: 'limits.memory',
    type: 'size',
    condition: 'both',
    live: 'container',
    description: 'Memory limit: a size ("256MiB", "1GiB") or a percentage of host memory ("50%").',
    validate: memoryValidator,
  },
  {
    key: 'limits.processes',
    type: 'integer',
    condition: 'container',
    live: true,
    description: 'Maximum number of processes in the container (pids cgroup).',
    validate: (v) => void parsePositiveInteger(v),
  },
  {
    key: 'limits.cpu.allowance',
    type: 'string',
    condition: 'both',
    lxdCondition: 'container',
    live: true,
    default: '100%',
    description:
      'CPU time: a share under load ("50%": cpu.shares relative to 1024) or a hard quota ("25ms/100ms": cpu.cfs_quota_us per cpu.cfs_period_us), as in LXD. ' +
      'A VM\'s QEMU gets them in a cpu cgroup of its own.',
    validate: (v) => void parseCpuAllowance(v),
  },
  {
    key: 'limits.cpu.priority',
    type: 'integer',
    condition: 'both',
    lxdCondition: 'container',
    live: true,
    default: '10',
    description: 'CPU priority against other instances under load, 0-10 (10 the highest): lowers cpu.shares by 10 - priority, as in LXD.',
    validate: (v) => void parseRange(v, 0, 10),
  },
  {
    key: 'limits.cpu.nodes',
    type: 'string',
    condition: 'both',
    live: 'container',
    description:
      'NUMA nodes the instance\'s memory comes from ("0", "0-1"): cpuset.mems for a container; a VM\'s memory backend bound to them (host-nodes, policy=bind).',
    validate: (v) => {
      const online = numaNodes();
      for (const n of parseIdList(v)) if (!online.includes(n)) throw new Error(`NUMA node ${n} is not online on this host (online: ${online.join(',')})`);
    },
  },

  {
    key: 'limits.memory.enforce',
    type: 'enum',
    condition: 'container',
    live: true,
    default: 'hard',
    description: '"hard": limits.memory is memory.limit_in_bytes (and a soft limit 10% below it); "soft": only memory.soft_limit_in_bytes, reclaimed under host pressure.',
    validate: (v) => void oneOf(v, ['hard', 'soft']),
  },
  {
    key: 'limits.memory.swap',
    type: 'boolean',
    condition: 'container',
    live: true,
    default: 'true',
    description:
      'false: no swap (memory.swappiness 0 and, with a hard limits.memory, memory.memsw.limit_in_bytes equal to it); true: swap as much again as limits.memory.',
    validate: (v) => void parseBoolean(v),
  },
  {
    key: 'limits.memory.swap.priority',
    type: 'integer',
    condition: 'container',
    live: true,
    default: '10',
    description: 'How willingly the container\'s memory is swapped, 0-10 (10 the least): memory.swappiness 70 - priority, as in LXD.',
    validate: (v) => void parseRange(v, 0, 10),
  },

  ...Object.entries(HUGEPAGE_KEYS).map(
    ([suffix, kib]): OptionSpec => ({
      key: `limits.hugepages.${suffix}`,
      type: 'size',
      condition: 'container',
      live: true,
      description: `Limit of ${suffix} huge pages the container may use (hugetlb.${suffix}.limit_in_bytes), a size.`,
      notSupported: hugetlbMissing(suffix, kib),
      hostDependent: `containers, where the host has ${suffix} huge pages and a cgroup v1 hugetlb controller (else refused: NotSupported)`,
      validate: (v) => void parseSize(v),
    }),
  ),
  {
    key: 'limits.disk.priority',
    type: 'integer',
    condition: 'both',
    live: true,
    default: '5',
    description: 'Block I/O weight against other instances, 0-10 (blkio.weight priority × 100, as in LXD).',
    notSupported: blkioWeightMissing(),
    hostDependent: 'containers, VMs, where the host has blkio.weight (the BFQ I/O scheduler) or a cgroup v2 io controller (else refused: NotSupported)',
    validate: (v) => void parseRange(v, 0, 10),
  },

  {
    key: 'limits.cpu.pin_strategy',
    type: 'enum',
    condition: 'vm',
    live: false,
    default: 'none',
    description: '"auto": each vCPU thread of QEMU pinned to one host CPU (round robin over limits.cpu\'s count), at start; "none": the host schedules them.',
    validate: (v) => void oneOf(v, ['none', 'auto']),
  },  {
    key: 'limits.memory.hugepages',
    type: 'boolean',
    condition: 'vm',
    live: false,
    default: 'false',
    description: "true: the VM's memory is backed by the host's huge pages (memfd hugetlb=on); the start fails with NotSupported when too few are free (vm.nr_hugepages).",
    notSupported: hugePageSizesKiB().length ? undefined : 'this kernel offers no huge pages (no /sys/kernel/mm/hugepages)',
    hostDependent: 'VMs, where the kernel offers huge pages (else refused: NotSupported)',
    validate: (v) => void parseBoolean(v),
  },  {
    key: 'limits.max_bus_ports',
    type: 'integer',
    condition: 'vm',
    live: false,
    description: "PCIe root ports the VM gets (hot-plug takes the free ones); unset: the devices present at start and 4 more. LXD's default is 8.",
    validate: (v) => void parseRange(v, 1, 32),
  },  {
    key: 'limits.kernel.*',
    type: 'string',
    condition: 'container',
    live: false,
    description:
      `Resource limits (rlimits) of the container's processes, as LXD's older keys: limits.kernel.NAME (${KERNEL_LIMITS.join(', ')}) = "unlimited", a number, or "soft:hard" (liblxc's lxc.prlimit).`,
    validate: (v, key) => {
      const name = (key ?? '').slice('limits.kernel.'.length);
      if (!(KERNEL_LIMITS as readonly string[]).includes(name)) throw new Error(`"${name}" is not a resource limit (${KERNEL_LIMITS.join(', ')})`);
      const parts = v.split(':');
      if (parts.length > 2 || !parts.every((p) => p === 'unlimited' || /^\d{1,19}$/.test(p))) throw new Error(`expected "unlimited", a number or "soft:hard", got ${JSON.stringify(v)}`);
      const [soft, hard = soft] = parts.map((p) => (p === 'unlimited' ? Infinity : Number(p)));
      if (soft > hard) throw new Error(`the soft limit ${parts[0]} is above the hard limit ${parts[1]}`);
      // liblxc sets them inside the container's user namespace, where a hard limit can only be lowered.
      const ceiling = hardRlimit(name);
      if (hard > ceiling) throw new Error(`the hard limit ${parts[1] ?? parts[0]} is above this host's (${ceiling}), which a container cannot raise`);
    },
  },
];
