/**
 * LXD's VM resource-limit keys on one real VM (booted once): huge-page memory on NUMA node 0,
 * PCIe root ports, vCPU threads pinned, each checked in the QEMU process it governs (its memory
 * mappings, QMP's query-pci, its threads' affinity). The host's huge page pool is raised for the
 * file and put back after it.
 */
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';

import { InvalidArgument, NotSupported } from '../lib';
import type { VmInstance } from '../lib/drivers/vm/vm';
import { tempHost, TestHost, thrown } from './helpers/host';

const MEMORY_MIB = 128;
const PAGES = MEMORY_MIB / 2; // 2 MiB pages
const NR_HUGEPAGES = '/proc/sys/vm/nr_hugepages';

let t: TestHost;
let savedPool: string | undefined;

function meminfo(field: string): number {
  return Number(new RegExp(`^${field}:\\s+(\\d+)`, 'm').exec(readFileSync('/proc/meminfo', 'utf8'))![1]);
}

beforeAll(async () => {
  t = await tempHost();
  await t.host.images.ensure('vm/default');
  savedPool = readFileSync(NR_HUGEPAGES, 'utf8').trim();
  writeFileSync(NR_HUGEPAGES, String(Number(savedPool) + PAGES));
}, 600_000);
afterAll(async () => {
  await t?.dispose();
  if (savedPool !== undefined) writeFileSync(NR_HUGEPAGES, savedPool);
});

describe('limits.* on a VM', () => {
  let vm: VmInstance;
  let pid: number;

  beforeAll(async () => {
    expect(meminfo('HugePages_Free')).toBeGreaterThanOrEqual(PAGES);
    vm = (await t.host.create(t.name('limvm'), {
      type: 'vm',
      image: 'vm/default',
      config: {
        'limits.cpu': 2,
        'limits.memory': `${MEMORY_MIB}MiB`,
        'limits.memory.hugepages': true,
        'limits.cpu.nodes': '0',
        'limits.cpu.pin_strategy': 'auto',
        'limits.max_bus_ports': 6,
        'limits.cpu.allowance': '50ms/100ms',
        'limits.cpu.priority': 5,
      },
    })) as VmInstance;
    await vm.start();
    pid = (await vm.state()).pid!;
  }, 300_000);
  afterAll(async () => {
    const cgroup = (pid ? readFileSync(`/proc/${pid}/cgroup`, 'utf8') : '').split('\n').find((l) => l.split(':')[1] === 'cpu')?.split(':')[2];
    await vm?.delete({ force: true }).catch(() => undefined);
    // QEMU's cpu cgroup went with it.
    if (cgroup?.startsWith('/lxq.vm.')) expect(existsSync(`/sys/fs/cgroup/cpu${cgroup}`)).toBe(false);
  });

  test('limits.memory.hugepages and limits.cpu.nodes: guest memory is one huge-page mapping bound to node 0', () => {
    // numa_maps: the memfd mapping of the guest's RAM, "bind:0" with huge pages (kernelpagesize_kB=2048).
    const maps = readFileSync(`/proc/${pid}/numa_maps`, 'utf8').split('\n');
    const ram = maps.filter((l) => l.includes('huge') && l.includes('kernelpagesize_kB=2048'));
    expect(ram.length).toBeGreaterThanOrEqual(1);
    expect(ram.some((l) => l.split(' ')[1] === 'bind:0')).toBe(true);
    expect(meminfo('HugePages_Total') - meminfo('HugePages_Free') + meminfo('HugePages_Rsvd')).toBeGreaterThanOrEqual(PAGES);
  });

  test('limits.max_bus_ports: six PCIe root ports on the root bus', async () => {
    const buses = await vm.qmp.execute('query-pci');
    const rootPorts = buses[0].devices.filter((d) => d.qdev_id.startsWith('lxq-port'));
    expect(rootPorts).toHaveLength(6);
  });

  test('limits.cpu.pin_strategy=auto: vCPU i runs only on host CPU i', async () => {
    const cpus = await vm.qmp.execute('query-cpus-fast');
    expect(cpus).toHaveLength(2);
    for (const cpu of cpus) {
      const status = readFileSync(`/proc/${pid}/task/${cpu['thread-id']}/status`, 'utf8');
      expect([cpu['cpu-index'], /^Cpus_allowed_list:\s*(\S+)/m.exec(status)![1]]).toEqual([cpu['cpu-index'], String(cpu['cpu-index'])]);
    }
  });

  test('limits.cpu.allowance and .priority (LXD: containers only): QEMU in a cpu cgroup of its own, changed live', async () => {
    const cpuFile = (file: string) => {
      const rel = readFileSync(`/proc/${pid}/cgroup`, 'utf8').split('\n').find((l) => l.split(':')[1] === 'cpu')!.split(':')[2];
      expect(rel).toMatch(/^\/lxq\.vm\.[0-9a-f]{16}$/);
      return readFileSync(`/sys/fs/cgroup/cpu${rel}/${file}`, 'utf8').trim();
    };
    expect([cpuFile('cpu.cfs_quota_us'), cpuFile('cpu.cfs_period_us'), cpuFile('cpu.shares')]).toEqual(['50000', '100000', '1019']);
    // Every QEMU thread (vCPUs included) is in it.
    for (const tid of readdirSync(`/proc/${pid}/task`)) expect(readFileSync(`/proc/${pid}/task/${tid}/cgroup`, 'utf8')).toMatch(/:cpu:\/lxq\.vm\./);
    await vm.update({ 'limits.cpu.allowance': '25%', 'limits.cpu.priority': null });
    expect([cpuFile('cpu.cfs_quota_us'), cpuFile('cpu.shares')]).toEqual(['-1', '256']);
  });

  test('too few free huge pages: NotSupported saying how many, and nothing runs', async () => {
    const big = await t.host.create(t.name('bigvm'), { type: 'vm', image: 'vm/default', config: { 'limits.memory': '8GiB', 'limits.memory.hugepages': true } });
    const e = await thrown(big.start());
    expect(e).toBeInstanceOf(NotSupported);
    expect(e.message).toMatch(/limits\.memory\.hugepages: .*4096 free 2048 KiB huge pages/);
    expect(await big.status()).toBe('stopped');
    await big.delete();
  });

  test('bad values refused naming the key, nothing changed', async () => {
    for (const [key, value] of [
      ['limits.max_bus_ports', '0'],
      ['limits.cpu.pin_strategy', 'spread'],
      ['limits.memory.hugepages', 'yes'],
      ['limits.cpu.nodes', '3'],
    ]) {
      const e = await thrown(vm.update({ [key]: value }));
      expect(e).toBeInstanceOf(InvalidArgument);
      expect(e.message).toContain(key);
    }
    expect(vm.config['limits.max_bus_ports']).toBe('6');
  });
});
