/**
 * Instances' usage as OpenMetrics text (https://openmetrics.io), with the metric names, help
 * texts and labels of LXD's GET /1.0/metrics (lxd/metrics/types.go), so dashboards and alerts
 * made for LXD read lxq's figures. Strict OpenMetrics where LXD is loose: a counter family's TYPE
 * line names it without `_total` (its samples carry the suffix), and the text ends with `# EOF`.
 */
import { NotFound } from '../core/errors';
import type { InstanceType } from './instance';
import type { InstanceUsage } from './metrics';

/** One sample: labels besides the instance's, and the value. */
type Sample = [Record<string, string>, number];

interface Family {
  /** LXD's name, `_total` included for counters. */
  name: string;
  type: 'counter' | 'gauge';
  help: string;
  samples(u: InstanceUsage): Sample[];
}

const MEMORY: Array<[string, string]> = [
  ['Active_anon', 'The amount of anonymous memory on active LRU list.'],
  ['Active_file', 'The amount of file-backed memory on active LRU list.'],
  ['Active', 'The amount of memory on active LRU list.'],
  ['Cached', 'The amount of cached memory.'],
  ['Dirty', 'The amount of memory waiting to get written back to the disk.'],
  ['Inactive_anon', 'The amount of anonymous memory on inactive LRU list.'],
  ['Inactive_file', 'The amount of file-backed memory on inactive LRU list.'],
  ['Inactive', 'The amount of memory on inactive LRU list.'],
  ['Mapped', 'The amount of mapped memory.'],
  ['MemAvailable', 'The amount of available memory.'],
  ['MemFree', 'The amount of free memory.'],
  ['MemTotal', 'The total amount of memory or configured memory limit.'],
  ['RSS', 'The amount of anonymous and swap cache memory.'],
  ['Shmem', 'The amount of cached filesystem data that is swap-backed.'],
  ['SReclaimable', 'The amount of reclaimable slab memory.'],
  ['Swap', 'The amount of used swap memory.'],
  ['Unevictable', 'The amount of unevictable memory.'],
  ['Writeback', 'The amount of memory queued for syncing to disk.'],
];

type Counter = 'bytesReceived' | 'bytesSent' | 'packetsReceived' | 'packetsSent';
const network = (name: string, counter: Counter, help: string): Family => ({
  name,
  type: 'counter',
  help,
  samples: (u) => u.state.network.interfaces.map((i) => [{ device: i.name }, i.counters[counter]]),
});
type DiskCounter = 'readBytes' | 'reads' | 'writtenBytes' | 'writes';
const disk = (name: string, counter: DiskCounter, help: string): Family => ({
  name,
  type: 'counter',
  help,
  samples: (u) => u.detail.disks.map((d) => [{ device: d.device }, d[counter]]),
});

/** In LXD's order (its MetricType enumeration). */
const FAMILIES: Family[] = [
  { name: 'lxd_cpu_seconds_total', type: 'counter', help: 'The total number of CPU time used in seconds.', samples: (u) => u.detail.cpu.map((c) => [{ cpu: c.cpu, mode: c.mode }, c.seconds]) },
  disk('lxd_disk_read_bytes_total', 'readBytes', 'The total number of bytes read.'),
  disk('lxd_disk_reads_completed_total', 'reads', 'The total number of completed reads.'),
  disk('lxd_disk_written_bytes_total', 'writtenBytes', 'The total number of bytes written.'),
  disk('lxd_disk_writes_completed_total', 'writes', 'The total number of completed writes.'),
  ...MEMORY.map(([key, help]): Family => ({ name: `lxd_memory_${key}_bytes`, type: 'gauge', help, samples: (u) => (key in u.detail.memory ? [[{}, u.detail.memory[key]]] : []) })),
  { name: 'lxd_memory_OOM_kills_total', type: 'counter', help: 'The number of out of memory kills.', samples: (u) => ('OOM_kills' in u.detail.memory ? [[{}, u.detail.memory.OOM_kills]] : []) },
  network('lxd_network_receive_bytes_total', 'bytesReceived', 'The amount of received bytes on a given interface.'),
  network('lxd_network_receive_packets_total', 'packetsReceived', 'The amount of received packets on a given interface.'),
  network('lxd_network_transmit_bytes_total', 'bytesSent', 'The amount of transmitted bytes on a given interface.'),
  network('lxd_network_transmit_packets_total', 'packetsSent', 'The amount of transmitted packets on a given interface.'),
  // A VM with qemu-ga alone does not count its processes: no figure rather than a false 0.
  { name: 'lxd_procs_total', type: 'gauge', help: 'The number of running processes.', samples: (u) => (u.detail.countsProcesses ? [[{}, u.state.processes]] : []) },
];

/** A label value as OpenMetrics quotes it. */
function escape(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
}

/** The instances' usage as OpenMetrics text; each instance's samples are labelled name, project and type as LXD's. */
export function openMetrics(instances: Array<{ name: string; project: string; type: InstanceType; usage: InstanceUsage }>): string {
  let out = '';
  for (const f of FAMILIES) {
    const family = f.type === 'counter' ? f.name.replace(/_total$/, '') : f.name;
    let lines = '';
    for (const i of instances) {
      const own = { name: i.name, project: i.project, type: i.type === 'vm' ? 'virtual-machine' : 'container' };
      for (const [labels, value] of f.samples(i.usage)) {
        const all = Object.entries({ ...labels, ...own }).sort(([a], [b]) => (a < b ? -1 : 1));
        lines += `${f.name}{${all.map(([k, v]) => `${k}="${escape(v)}"`).join(',')}} ${Number.isFinite(value) ? value : 0}\n`;
      }
    }
    if (lines) out += `# HELP ${family} ${f.help}\n# TYPE ${family} ${f.type}\n${lines}`;
  }
  return out + '# EOF\n';
}

/** The OpenMetrics text of those of `instances` that run (or are frozen); one deleted meanwhile is left out. */
export async function instancesMetrics(instances: Array<{ name: string; type: InstanceType; usage(): Promise<InstanceUsage> }>, project = 'default'): Promise<string> {
  const read = await Promise.all(
    instances.map(async (i) => {
      const usage = await i.usage().catch((e) => (e instanceof NotFound ? undefined : Promise.reject(e)));
      return usage && usage.state.pid !== null ? { name: i.name, project, type: i.type, usage } : undefined;
    }),
  );
  return openMetrics(read.filter((r) => r !== undefined));
}
