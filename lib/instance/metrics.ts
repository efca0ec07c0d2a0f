/**
 * Usage figures of instances: `instance.stats()` (typed samples with rates, one per interval) and
 * `host.metrics()` (the OpenMetrics text LXD's GET /1.0/metrics serves, with its metric names and
 * labels). Both are made from `state()` (CPU time, memory, processes, network counters) and what
 * a driver adds beyond it (CPU time per CPU and mode, memory.stat's breakdown, disk I/O).
 */
import { setTimeout as delay } from 'node:timers/promises';

import { InvalidArgument } from '../core/errors';
import { optionKeys, refuseUnknownKeys } from '../core/keys';
import type { InstanceState } from './state';

/** CPU time of one CPU (a container's host CPU, a VM's vCPU) in one mode. */
export interface CpuTime {
  cpu: string;
  mode: 'user' | 'system';
  seconds: number;
}

/** I/O counters of one disk since the instance started. */
export interface DiskCounters {
  /** The block device (a container: the host's, e.g. `sda`) or the VM's disk device name (`root`). */
  device: string;
  readBytes: number;
  writtenBytes: number;
  reads: number;
  writes: number;
}

/** What a driver reads beyond state(); empty where it has nothing more. */
export interface UsageDetail {
  cpu: CpuTime[];
  /** Memory figures in bytes by LXD's name for them (`RSS`, `Cached`, `Active_anon`, `MemTotal` …), and `OOM_kills`. */
  memory: Record<string, number>;
  disks: DiskCounters[];
  /** Whether `state().processes` is a count (a VM's is only where its lxq agent counts them). */
  countsProcesses: boolean;
}

export const NO_DETAIL: UsageDetail = { cpu: [], memory: {}, disks: [], countsProcesses: false };

/** An instance's state and its driver's detail, read once. */
export interface InstanceUsage {
  state: InstanceState;
  detail: UsageDetail;
}

/**
 * What `instance.stats()` takes: the time between samples and the signal that ends them.
 *
 * @example
 * ```ts
 * for await (const s of c.stats({ interval: 2000, signal: AbortSignal.timeout(10_000) })) console.log(s.cpu.percent);
 * ```
 */
export interface StatsOptions {
  /** Milliseconds between samples; default 1000. */
  interval?: number;
  /** Ends the samples (the iteration ends, no error). */
  signal?: AbortSignal;
}

export const STATS_KEYS = optionKeys<StatsOptions>({ interval: true, signal: true });

/**
 * A counter and its rate per second since the previous sample (null in the first sample, and
 * when the counter went back: the instance restarted).
 *
 * @example
 * ```ts
 * const r: Rated = s.network.eth0.receivedBytes;
 * console.log(r.total, r.perSecond ?? '-');
 * ```
 */
export interface Rated {
  total: number;
  perSecond: number | null;
}

/**
 * One sample of `instance.stats()`: CPU time and the CPU it used since the previous sample,
 * memory, processes, and each disk's and network interface's counters with their rates.
 *
 * @example
 * ```ts
 * for await (const s of c.stats({ signal })) console.log(s.cpu.percent, s.memory.usageBytes, s.network.eth0?.receivedBytes.perSecond);
 * ```
 */
export interface InstanceStats {
  at: Date;
  status: InstanceState['status'];
  /** `usageNs`: CPU time since the start; `percent`: of one CPU since the previous sample (200: two CPUs busy), null in the first sample. */
  cpu: { usageNs: number; percent: number | null };
  /** As `state().memory`. */
  memory: InstanceState['memory'];
  /** As `state().processes` (0 for a VM whose image has no lxq agent: qemu-ga does not count them). */
  processes: number;
  /** By device name (see DiskCounters.device). */
  disk: Record<string, { readBytes: Rated; writtenBytes: Rated; reads: Rated; writes: Rated }>;
  /** By interface name, as the instance sees them. */
  network: Record<string, { receivedBytes: Rated; sentBytes: Rated; receivedPackets: Rated; sentPackets: Rated }>;
}

/** Checks stats's options; returns them with their defaults. */
export function checkStats(options: StatsOptions | undefined): { interval: number; signal?: AbortSignal } {
  const o = options ?? {};
  if (typeof o !== 'object') throw new InvalidArgument('stats options must be an object');
  refuseUnknownKeys('stats', o, STATS_KEYS);
  const interval = o.interval ?? 1000;
  if (!Number.isFinite(interval) || interval < 10) throw new InvalidArgument(`interval must be at least 10 ms, got ${interval}`);
  if (o.signal !== undefined && !(o.signal instanceof AbortSignal)) throw new InvalidArgument('signal must be an AbortSignal');
  return { interval, signal: o.signal };
}

function rated(now: number, before: number | undefined, seconds: number | null): Rated {
  return { total: now, perSecond: before === undefined || !seconds || now < before ? null : (now - before) / seconds };
}

/** The sample of `u`, with rates against the previous usage read `seconds` before. */
export function statsSample(u: InstanceUsage, at: Date, previous?: InstanceUsage, seconds: number | null = null): InstanceStats {
  const { state, detail } = u;
  const prevCpu = previous?.state.cpu.usageNs;
  const cpuPercent = prevCpu === undefined || !seconds || state.cpu.usageNs < prevCpu ? null : ((state.cpu.usageNs - prevCpu) / 1e9 / seconds) * 100;
  const disk: InstanceStats['disk'] = {};
  for (const d of detail.disks) {
    const p = previous?.detail.disks.find((x) => x.device === d.device);
    disk[d.device] = { readBytes: rated(d.readBytes, p?.readBytes, seconds), writtenBytes: rated(d.writtenBytes, p?.writtenBytes, seconds), reads: rated(d.reads, p?.reads, seconds), writes: rated(d.writes, p?.writes, seconds) };
  }
  const network: InstanceStats['network'] = {};
  for (const i of state.network.interfaces) {
    const p = previous?.state.network.interfaces.find((x) => x.name === i.name)?.counters;
    const c = i.counters;
    network[i.name] = {
      receivedBytes: rated(c.bytesReceived, p?.bytesReceived, seconds),
      sentBytes: rated(c.bytesSent, p?.bytesSent, seconds),
      receivedPackets: rated(c.packetsReceived, p?.packetsReceived, seconds),
      sentPackets: rated(c.packetsSent, p?.packetsSent, seconds),
    };
  }
  return { at, status: state.status, cpu: { usageNs: state.cpu.usageNs, percent: cpuPercent }, memory: state.memory, processes: state.processes, disk, network };
}

/** Samples of `read` every `interval` ms (the first at once) until `signal` aborts. */
export async function* statsLoop(read: () => Promise<InstanceUsage>, o: { interval: number; signal?: AbortSignal }): AsyncGenerator<InstanceStats, void, undefined> {
  let previous: { usage: InstanceUsage; at: number } | undefined;
  while (!o.signal?.aborted) {
    const at = performance.now();
    const usage = await read();
    if (o.signal?.aborted) return;
    yield statsSample(usage, new Date(), previous?.usage, previous ? (at - previous.at) / 1000 : null);
    previous = { usage, at };
    if (await delay(o.interval, false, { signal: o.signal }).catch(() => true)) return;
  }
}
