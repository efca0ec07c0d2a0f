/**
 * A container's state as its cgroups and network namespace tell it.
 */
import type { InstanceState, InstanceStatus, NetworkInterface } from '../../instance/instance';
import { reportedAddresses } from '../../instance/instance';
import type { LxcContainer } from '../../native/lxc';
import { sys } from '../../native/sys';
import type { CgroupLayout } from './host-facts';

/** A v1 memory limit this large means "no limit". */
const UNLIMITED = 2 ** 62;

export async function containerState(h: LxcContainer, layout: CgroupLayout, status: InstanceStatus): Promise<Omit<InstanceState, 'devices'>> {
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
