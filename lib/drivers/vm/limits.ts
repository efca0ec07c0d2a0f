/**
 * A VM's resource-limit keys as QEMU takes them: its memory backend (huge pages, NUMA nodes),
 * its PCIe root ports, and its vCPU threads pinned to host CPUs once QEMU runs.
 */
import { readFileSync } from 'node:fs';
import * as os from 'node:os';

import type { InstanceConfig } from '../../config/options';
import { parseIdList } from '../../config/options/host-probe';
import { NotSupported, OperationFailed } from '../../core/errors';
import { run } from '../../core/run';

/** The memory backend's options beyond its id and size, from the VM's options. */
export interface VmMemory {
  mib: number;
  /** limits.memory.hugepages: backed by the host's huge pages (the default size). */
  hugepages: boolean;
  /** limits.cpu.nodes: the host NUMA nodes its memory is bound to. */
  nodes?: number[];
}

/** Free huge pages of the default size and that size in KiB, from /proc/meminfo. */
function freeHugePages(): { free: number; sizeKiB: number } {
  const info = readFileSync('/proc/meminfo', 'utf8');
  const field = (name: string) => Number(new RegExp(`^${name}:\\s+(\\d+)`, 'm').exec(info)?.[1] ?? 0);
  return { free: field('HugePages_Free'), sizeKiB: field('Hugepagesize') };
}

/**
 * QEMU's memory-backend-memfd options: `hugetlb=on` takes the host's huge pages (no hugetlbfs
 * mount needed), `host-nodes` with `policy=bind` keeps the memory on those NUMA nodes. Huge pages
 * are checked before QEMU runs: too few free is NotSupported naming how many are needed.
 */
export function memoryBackendOptions(m: VmMemory): string {
  let opts = '';
  if (m.hugepages) {
    const { free, sizeKiB } = freeHugePages();
    const needed = Math.ceil((m.mib * 1024) / (sizeKiB || 2048));
    if (!sizeKiB || free < needed) {
      throw new NotSupported(
        `limits.memory.hugepages: the VM's ${m.mib} MiB need ${needed} free ${sizeKiB || 2048} KiB huge pages; the host has ${free} (raise vm.nr_hugepages)`,
      );
    }
    opts += `,hugetlb=on,hugetlbsize=${sizeKiB * 1024}`;
  }
  if (m.nodes?.length) opts += `,host-nodes=${m.nodes.join('-')},policy=bind`;
  return opts;
}

/** The VM's memory settings from its options (memory size already known). */
export function vmMemory(config: InstanceConfig, mib: number): VmMemory {
  const nodes = config['limits.cpu.nodes'];
  return { mib, hugepages: config['limits.memory.hugepages'] === 'true', ...(nodes ? { nodes: parseIdList(nodes) } : {}) };
}

/**
 * limits.cpu.pin_strategy=auto: each vCPU thread (QMP's query-cpus-fast thread-id) pinned to one
 * host CPU, vCPU i to CPU i modulo the host's count, as LXD's auto strategy spreads them.
 */
export async function pinVcpus(cpus: () => Promise<Array<{ 'cpu-index': number; 'thread-id': number }>>): Promise<Map<number, number>> {
  const host = os.cpus().length;
  const pins = new Map<number, number>();
  for (const cpu of await cpus()) {
    const target = cpu['cpu-index'] % host;
    await run('taskset', ['-p', '-c', String(target), String(cpu['thread-id'])]).catch((e) => {
      throw new OperationFailed(`limits.cpu.pin_strategy=auto: cannot pin vCPU ${cpu['cpu-index']} (thread ${cpu['thread-id']}) to CPU ${target}: ${(e as Error).message}`);
    });
    pins.set(cpu['thread-id'], target);
  }
  return pins;
}
