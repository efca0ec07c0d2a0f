/**
 * LXD's resource-limit and linux.* keys on a real container: each checked in the cgroup files of
 * the container's init (read from the host's cgroup hierarchies), its rlimits (/proc/PID/limits)
 * or its own namespaces (sysctls read from inside); live changes read back the same way; keys
 * this host cannot honour refused with NotSupported and nothing made.
 */
import { readFileSync } from 'node:fs';
import * as path from 'node:path';

import { Instance, InvalidArgument, NotSupported } from '../lib';
import { cpuShares } from '../lib/config/options/limits';
import { execText, hostPerFile, thrown } from './helpers/host';

const t = hostPerFile();

/** A cgroup v1 file of process `pid`: its own cgroup in the hierarchy of `controller`. */
function cgroupFile(pid: number, controller: string, file: string): string {
  const line = readFileSync(`/proc/${pid}/cgroup`, 'utf8')
    .split('\n')
    .find((l) => l.split(':')[1]?.split(',').includes(controller));
  if (!line) throw new Error(`process ${pid} has no ${controller} cgroup`);
  const mount = readFileSync('/proc/self/mounts', 'utf8')
    .split('\n')
    .map((l) => l.split(' '))
    .find((f) => f[2] === 'cgroup' && f[3].split(',').includes(controller))![1];
  return readFileSync(path.join(mount, line.split(':')[2], file), 'utf8').trim();
}

/** One rlimit line of /proc/PID/limits: [soft, hard]. */
function rlimit(pid: number, title: string): [string, string] {
  const line = readFileSync(`/proc/${pid}/limits`, 'utf8')
    .split('\n')
    .find((l) => l.startsWith(title))!;
  const [soft, hard] = line.slice(26).trim().split(/\s+/);
  return [soft, hard];
}

describe('limits.* and linux.* on a container', () => {
  let c: Instance;
  let pid: number;

  beforeAll(async () => {
    c = await t.host.create(t.name('lim'), {
      image: 'busybox',
      config: {
        'limits.memory': '64MiB',
        'limits.memory.swap': false,
        'limits.cpu.allowance': '25ms/100ms',
        'limits.cpu.priority': 5,
        'limits.cpu.nodes': '0',
        'limits.kernel.nofile': '200:300',
        'limits.kernel.nproc': '500:1000',
        'limits.kernel.core': 'unlimited',
        'linux.sysctl.net.ipv4.ip_forward': 1,
        'linux.sysctl.kernel.shmmni': 1000,
        'linux.sysctl.fs.mqueue.queues_max': 77,
        'linux.kernel_modules': 'overlay,bridge',
        'linux.kernel_modules.load': 'boot',
      },
    });
    await c.start();
    pid = (await c.state()).pid!;
  }, 120_000);
  afterAll(async () => {
    await c?.delete({ force: true }).catch(() => undefined);
  });

  test('memory: a hard limit, a soft limit 10% below, no swap (memsw = the limit, swappiness 0)', () => {
    expect(cgroupFile(pid, 'memory', 'memory.limit_in_bytes')).toBe(String(64 * 2 ** 20));
    // The kernel rounds it down to pages.
    expect(cgroupFile(pid, 'memory', 'memory.soft_limit_in_bytes')).toBe(String(Math.floor((64 * 2 ** 20 * 0.9) / 4096) * 4096));
    expect(cgroupFile(pid, 'memory', 'memory.memsw.limit_in_bytes')).toBe(String(64 * 2 ** 20));
    expect(cgroupFile(pid, 'memory', 'memory.swappiness')).toBe('0');
  });

  test('cpu: a 25ms/100ms quota and shares lowered by the priority (1024 - 5)', () => {
    expect(cgroupFile(pid, 'cpu', 'cpu.cfs_quota_us')).toBe('25000');
    expect(cgroupFile(pid, 'cpu', 'cpu.cfs_period_us')).toBe('100000');
    expect(cgroupFile(pid, 'cpu', 'cpu.shares')).toBe('1019');
    expect(cgroupFile(pid, 'cpuset', 'cpuset.mems')).toBe('0');
  });

  test('limits.kernel.*: the rlimits of init and of a process run inside', async () => {
    expect(rlimit(pid, 'Max open files')).toEqual(['200', '300']);
    expect(rlimit(pid, 'Max processes')).toEqual(['500', '1000']);
    expect(rlimit(pid, 'Max core file size')).toEqual(['unlimited', 'unlimited']);
    expect(execText(await c.exec(['sh', '-c', 'ulimit -n; ulimit -Hn'])).stdout.split('\n').slice(0, 2)).toEqual(['200', '300']);
  });

  test('linux.sysctl.*: set in the container\'s own namespaces, not on the host', async () => {
    const inside = execText(await c.exec(['cat', '/proc/sys/net/ipv4/ip_forward', '/proc/sys/kernel/shmmni', '/proc/sys/fs/mqueue/queues_max'])).stdout;
    expect(inside.trim().split('\n')).toEqual(['1', '1000', '77']);
    expect(readFileSync('/proc/sys/kernel/shmmni', 'utf8').trim()).not.toBe('1000');
  });

  test('linux.kernel_modules: built-in modules are there; the container started; changed live, a missing one refused', async () => {
    expect(await c.status()).toBe('running');
    await c.update({ 'linux.kernel_modules': 'vxlan' });
    expect(c.config['linux.kernel_modules']).toBe('vxlan');
    const e = await thrown(c.update({ 'linux.kernel_modules': 'vxlan,no_such_module' }));
    expect(e).toBeInstanceOf(NotSupported);
    expect(e.message).toContain('no_such_module');
    expect(c.config['linux.kernel_modules']).toBe('vxlan');
  });

  test('live: allowance as a share, priority, swap back on with a priority, a soft limit', async () => {
    await c.update({ 'limits.cpu.allowance': '50%', 'limits.cpu.priority': 10, 'limits.memory.swap': null, 'limits.memory.swap.priority': 4 });
    expect(cgroupFile(pid, 'cpu', 'cpu.shares')).toBe(String(cpuShares({ 'limits.cpu.allowance': '50%' }, 1024).shares));
    expect(cgroupFile(pid, 'cpu', 'cpu.shares')).toBe('512');
    expect(cgroupFile(pid, 'cpu', 'cpu.cfs_quota_us')).toBe('-1');
    expect(cgroupFile(pid, 'memory', 'memory.memsw.limit_in_bytes')).toBe(String(2 * 64 * 2 ** 20));
    expect(cgroupFile(pid, 'memory', 'memory.swappiness')).toBe('66');
    await c.update({ 'limits.memory.enforce': 'soft', 'limits.memory': '48MiB' });
    expect(cgroupFile(pid, 'memory', 'memory.soft_limit_in_bytes')).toBe(String(48 * 2 ** 20));
    expect(Number(cgroupFile(pid, 'memory', 'memory.limit_in_bytes'))).toBeGreaterThan(2 ** 40);
    await c.update({ 'limits.memory.enforce': null, 'limits.memory': '32MiB' });
    expect(cgroupFile(pid, 'memory', 'memory.limit_in_bytes')).toBe(String(32 * 2 ** 20));
    expect(cgroupFile(pid, 'memory', 'memory.memsw.limit_in_bytes')).toBe(String(64 * 2 ** 20));
  });

  test('bad values are refused naming the key, and change nothing', async () => {
    const bad: Record<string, string> = {
      'limits.cpu.allowance': '150ms',
      'limits.cpu.priority': '11',
      'limits.memory.enforce': 'medium',
      'limits.memory.swap.priority': '-1',
      'limits.cpu.nodes': '7',
      'limits.kernel.nofile': '300:200',
      'limits.kernel.bogus': '1',
      'limits.kernel.nproc': '1:99999999999',
      'linux.sysctl.kernel.hostname': 'x',
      'linux.sysctl.vm.swappiness': '1',
      'linux.kernel_modules': 'a b',
    };
    for (const [key, value] of Object.entries(bad)) {
      const e = await thrown(c.update({ [key]: value }));
      expect(e).toBeInstanceOf(InvalidArgument);
      expect(e.message).toContain(key);
    }
    expect(c.config['limits.cpu.priority']).toBe('10');
    expect(cgroupFile(pid, 'cpu', 'cpu.shares')).toBe('512');
  });
});

describe('keys this host cannot honour', () => {
  test('NotSupported naming what is missing, and no container made', async () => {
    const cases: Array<[string, string, RegExp]> = [
      ['limits.disk.priority', '3', /blkio\.weight/],
      ['limits.hugepages.2MB', '64MiB', /hugetlb/],
      ['limits.hugepages.1GB', '1GiB', /1GB huge pages/],
      ['linux.kernel_modules', 'nosuchmodule', /nosuchmodule/],
      ['linux.kernel_modules.load', 'ondemand', /finit_module/],
    ];
    for (const [key, value, why] of cases) {
      const name = t.name('ns');
      const e = await thrown(t.host.create(name, { image: 'busybox', config: { [key]: value } }));
      expect(e).toBeInstanceOf(NotSupported);
      expect(e.message).toContain(key);
      expect(e.message).toMatch(why);
      expect((await t.host.list()).map((i) => i.name)).not.toContain(name);
    }
  });

  test('container-only keys are refused for a VM before anything is made', async () => {
    const e = await thrown(t.host.create(t.name('v'), { type: 'vm', image: 'vm/default', config: { 'limits.memory.swap': 'false' } }));
    expect(e).toBeInstanceOf(InvalidArgument);
    expect(e.message).toContain('limits.memory.swap');
  });
});
