/**
 * A container's state as its cgroups and network namespace tell it.
 */
import { readlink } from 'node:fs/promises';
import * as path from 'node:path';

import type { DriverState, InstanceState, InstanceStatus, NetworkInterface } from '../../instance/instance';
import type { CpuTime, DiskCounters, UsageDetail } from '../../instance/metrics';
import { reportedAddresses } from '../../instance/instance';
import type { LxcContainer } from '../../native/lxc';
import { sys } from '../../native/sys';
import type { CgroupLayout } from './host-facts';

/** A v1 memory limit this large means "no limit". */
const UNLIMITED = 2 ** 62;

export async function containerState(h: LxcContainer, layout: CgroupLayout, status: InstanceStatus): Promise<DriverState> {
  if (status === 'stopped') {
    return { status, pid: null, cpu: { usageNs: 0 }, memory: { usageBytes: 0, limitBytes: null }, processes: 0, network: { addresses: [], interfaces: [] } };
  }
  const v1 = (c: 'memory' | 'cpu' | 'pids') => layout.version(c) === 1;
  const item = (key: string) => h.getCgroupItem(key).catch(() => '');
  // Addresses are read from the init's network namespace by a thread of the addon: liblxc's
  // getIps() forks this process, which costs in proportion to its memory.
  const pidAndInterfaces = h.initPid().then(async (p) => [p, p > 0 ? await sys().netnsInterfaces(p).catch(() => []) : []] as const);
  const [[pid, raw], cpu, mem, limit, procs] = await Promise.all([
    pidAndInterfaces,
    item(v1('cpu') ? 'cpuacct.usage' : 'cpu.stat'),
    item(v1('memory') ? 'memory.usage_in_bytes' : 'memory.current'),
    item(v1('memory') ? 'memory.limit_in_bytes' : 'memory.max'),
    item('pids.current'),
  ]);
  const interfaces: NetworkInterface[] = raw.map((i) => ({ ...i, addresses: i.addresses.map(({ family, address, prefix }) => ({ family, address, prefix })) }));
  const usageNs = v1('cpu') ? Number(cpu) || 0 : Number(/usage_usec (\d+)/.exec(cpu)?.[1] ?? 0) * 1000;
  const limitBytes = limit === '' || limit === 'max' || Number(limit) >= UNLIMITED ? null : Number(limit);
  return {
    status,
    pid: pid > 0 ? pid : null,
    cpu: { usageNs },
    memory: { usageBytes: Number(mem) || 0, limitBytes },
    processes: Number(procs) || 0,
    network: { addresses: reportedAddresses(interfaces), interfaces },
  };
}

/** memory.stat's keys (v1, and v2's where they differ) by LXD's names for them. */
const MEMORY_KEYS: Record<string, string> = {
  active_anon: 'Active_anon',
  active_file: 'Active_file',
  inactive_anon: 'Inactive_anon',
  inactive_file: 'Inactive_file',
  unevictable: 'Unevictable',
  writeback: 'Writeback',
  dirty: 'Dirty',
  mapped_file: 'Mapped',
  rss: 'RSS',
  shmem: 'Shmem',
  cache: 'Cached',
  swap: 'Swap',
  slab_reclaimable: 'SReclaimable',
  // cgroup v2
  anon: 'RSS',
  file: 'Cached',
  file_mapped: 'Mapped',
  file_dirty: 'Dirty',
  file_writeback: 'Writeback',
};

/** `key value` lines as numbers; v1's `total_` figures (the cgroup and those below it, as LXD reads them) win over its own. */
function keyValues(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    const [k, v] = line.split(' ');
    if (!k || v === undefined) continue;
    if (k.startsWith('total_')) out.set(k.slice(6), Number(v));
    else if (!out.has(k)) out.set(k, Number(v));
  }
  return out;
}

function memoryDetail(stat: string, usage: number, limit: number | null, oom: string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [k, v] of keyValues(stat)) if (MEMORY_KEYS[k] && Number.isFinite(v)) out[MEMORY_KEYS[k]] = v;
  if (out.Active_anon !== undefined && out.Active_file !== undefined) out.Active = out.Active_anon + out.Active_file;
  if (out.Inactive_anon !== undefined && out.Inactive_file !== undefined) out.Inactive = out.Inactive_anon + out.Inactive_file;
  if (limit !== null) {
    // As LXD: MemAvailable is what is free plus the cache and reclaimable slab the kernel can drop.
    out.MemTotal = limit;
    out.MemFree = Math.max(0, limit - usage);
    out.MemAvailable = out.MemFree + (out.Cached ?? 0) + (out.SReclaimable ?? 0);
  }
  out.OOM_kills = keyValues(oom).get('oom_kill') ?? 0;
  return out;
}

/** Per CPU and mode: v1's cpuacct.usage_all (ns), or v2's cpu.stat (µs, all CPUs as cpu 0, as LXD). */
function cpuDetail(text: string, v1: boolean): CpuTime[] {
  if (!v1) {
    const kv = keyValues(text);
    return [
      { cpu: '0', mode: 'user', seconds: (kv.get('user_usec') ?? 0) / 1e6 },
      { cpu: '0', mode: 'system', seconds: (kv.get('system_usec') ?? 0) / 1e6 },
    ];
  }
  return text
    .split('\n')
    .slice(1)
    .map((l) => l.split(' '))
    .filter((f) => f.length === 3 && /^\d+$/.test(f[0]))
    .flatMap(([cpu, user, system]): CpuTime[] => [
      { cpu, mode: 'user', seconds: Number(user) / 1e9 },
      { cpu, mode: 'system', seconds: Number(system) / 1e9 },
    ]);
}

/** The block device's name (`sda`) for `major:minor`, as LXD labels disk figures. */
async function blockName(majmin: string): Promise<string> {
  return path.basename(await readlink(`/sys/dev/block/${majmin}`).catch(() => majmin));
}

/** v1's blkio.throttle.io_service_bytes and io_serviced (`8:0 Read 4096` lines), or v2's io.stat (`8:0 rbytes=… wbytes=… rios=… wios=…`). */
async function diskDetail(bytes: string, ios: string, v1: boolean): Promise<DiskCounters[]> {
  const by = new Map<string, DiskCounters>();
  const get = (majmin: string) => by.get(majmin) ?? by.set(majmin, { device: majmin, readBytes: 0, writtenBytes: 0, reads: 0, writes: 0 }).get(majmin)!;
  if (v1) {
    for (const [text, read, write] of [[bytes, 'readBytes', 'writtenBytes'], [ios, 'reads', 'writes']] as const) {
      for (const [majmin, op, v] of text.split('\n').map((l) => l.split(' '))) {
        if (!/^\d+:\d+$/.test(majmin)) continue;
        if (op === 'Read') get(majmin)[read] = Number(v) || 0;
        if (op === 'Write') get(majmin)[write] = Number(v) || 0;
      }
    }
  } else {
    for (const line of bytes.split('\n')) {
      const [majmin, ...fields] = line.split(' ');
      if (!/^\d+:\d+$/.test(majmin)) continue;
      const kv = new Map(fields.map((f) => f.split('=') as [string, string]));
      Object.assign(get(majmin), { readBytes: Number(kv.get('rbytes')) || 0, writtenBytes: Number(kv.get('wbytes')) || 0, reads: Number(kv.get('rios')) || 0, writes: Number(kv.get('wios')) || 0 });
    }
  }
  return Promise.all([...by].map(async ([majmin, d]) => ({ ...d, device: await blockName(majmin) })));
}

/** What a running container's cgroups say beyond state(): CPU time per CPU and mode, memory.stat, disk I/O. */
export async function containerUsage(h: LxcContainer, layout: CgroupLayout, state: InstanceState): Promise<UsageDetail> {
  const v1 = (c: 'memory' | 'cpuacct' | 'blkio') => layout.version(c) === 1;
  const item = (key: string) => h.getCgroupItem(key).catch(() => '');
  const [cpu, stat, oom, bytes, ios] = await Promise.all([
    item(v1('cpuacct') ? 'cpuacct.usage_all' : 'cpu.stat'),
    item('memory.stat'),
    item(v1('memory') ? 'memory.oom_control' : 'memory.events'),
    item(v1('blkio') ? 'blkio.throttle.io_service_bytes' : 'io.stat'),
    v1('blkio') ? item('blkio.throttle.io_serviced') : '',
  ]);
  return {
    cpu: cpuDetail(cpu, v1('cpuacct')),
    memory: memoryDetail(stat, state.memory.usageBytes ?? 0, state.memory.limitBytes, oom),
    disks: await diskDetail(bytes, ios, v1('blkio')),
    countsProcesses: true,
  };
}
