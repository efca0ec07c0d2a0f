/**
 * What a running VM's QEMU says beyond state(): each vCPU thread's CPU time (a vCPU is a thread
 * of QEMU's, query-cpus-fast names it), each disk's I/O (query-blockstats), and from state()
 * the guest's memory as lxq's agent sees it inside (total and available; else the memory QEMU
 * gives the guest). QEMU's resident memory is not reported as the guest's RSS.
 */
import { promises as fs } from 'node:fs';

import { type CpuTime, type DiskCounters, NO_DETAIL, type UsageDetail } from '../../instance/metrics';
import type { InstanceState } from '../../instance/instance';
import type { VmState } from './vm';
import type { QmpCommands } from '../../qmp';

/** Clock ticks per second of /proc's utime and stime (USER_HZ). */
const USER_HZ = 100;

/** The monitor's queries this needs. */
export interface UsageQueries {
  cpus(): Promise<QmpCommands['query-cpus-fast']['returns']>;
  blocks(): Promise<QmpCommands['query-blockstats']['returns']>;
}

async function vcpuTimes(pid: number, cpus: QmpCommands['query-cpus-fast']['returns']): Promise<CpuTime[]> {
  const times = await Promise.all(
    cpus.map(async (c) => {
      const stat = await fs.readFile(`/proc/${pid}/task/${c['thread-id']}/stat`, 'utf8').catch(() => '');
      // utime and stime are fields 14 and 15; the name (field 2) may hold spaces.
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      const cpu = String(c['cpu-index']);
      return stat
        ? [
            { cpu, mode: 'user', seconds: Number(f[11]) / USER_HZ },
            { cpu, mode: 'system', seconds: Number(f[12]) / USER_HZ },
          ]
        : [];
    }),
  );
  return times.flat() as CpuTime[];
}

/** lxq's name of a block device QEMU reports: the root disk's -drive, or a disk device's node or device id. */
function diskName(b: QmpCommands['query-blockstats']['returns'][number], state: InstanceState): string {
  const named = state.devices.find((d) => (d.qemuNode && d.qemuNode === b['node-name']) || (d.qemuDevice && (d.qemuDevice === b.qdev || b.qdev?.includes(`/${d.qemuDevice}/`))));
  if (named) return named.name;
  if (b.device === 'virtio0') return 'root';
  return b.device || b['node-name'] || b.qdev || 'unknown';
}

export async function vmUsage(q: UsageQueries, state: VmState): Promise<UsageDetail> {
  const pid = state.pid;
  if (pid === null) return NO_DETAIL;
  const [cpus, blocks] = await Promise.all([q.cpus().catch(() => []), q.blocks().catch(() => [])]);
  const disks: DiskCounters[] = blocks
    .filter((b) => b.device || b.qdev)
    .map((b) => ({ device: diskName(b, state), readBytes: b.stats.rd_bytes, writtenBytes: b.stats.wr_bytes, reads: b.stats.rd_operations, writes: b.stats.wr_operations }));
  const memory: Record<string, number> = {};
  const guest = state.guest;
  if (guest?.memory.totalBytes) {
    // The guest's own view, as LXD's agent reports it (/proc/meminfo inside).
    memory.MemTotal = guest.memory.totalBytes;
    memory.MemAvailable = guest.memory.availableBytes;
  } else if (state.memory.limitBytes !== null) memory.MemTotal = state.memory.limitBytes;
  return { cpu: await vcpuTimes(pid, cpus), memory, disks, countsProcesses: guest !== undefined };
}
