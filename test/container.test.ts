/**
 * Container lifecycle through Host and Instance, on real liblxc containers (run as root).
 */
import { execFileSync } from 'node:child_process';
import { readFileSync, existsSync, readdirSync } from 'node:fs';
import * as path from 'node:path';

import { Instance, InvalidState, NotFound, StatusEvent, Host } from '../lib';
import { ContainerInstance } from '../lib/drivers/container/container';
import { lxc } from '../lib/native/lxc';
import { monitorCgroups, tempHost, TestHost } from './helpers/host';

let t: TestHost;

beforeAll(async () => {
  t = await tempHost();
  await t.host.images.ensure('busybox');
});
afterAll(async () => {
  await t?.dispose();
});

/** What a process inside the container sees, read through its own root and /proc. */
function insideView(pid: number, file: string): string {
  return readFileSync(path.join(`/proc/${pid}/root`, file), 'utf8').trim();
}

describe('container lifecycle', () => {
  let c: Instance;
  const events: StatusEvent[] = [];

  beforeAll(async () => {
    c = await t.host.create(t.name('life'), {
      image: 'busybox',
      config: {
        'limits.memory': '64MiB',
        'limits.cpu': '1',
        'limits.processes': 50,
        'environment.GREETING': 'hi there',
        'user.owner': 'tests',
      },
    });
    c.on('status', (e) => events.push(e));
  });

  test('create makes a stopped container of the busybox image with the options stored as strings', async () => {
    expect(c).toBeInstanceOf(ContainerInstance);
    expect(c.type).toBe('container');
    expect(c.image).toBe('busybox');
    expect(c.config['limits.processes']).toBe('50');
    expect(await c.status()).toBe('stopped');
    const s = await c.state();
    expect(s).toMatchObject({ status: 'stopped', pid: null, processes: 0 });
  });

  test('start runs init, with status events', async () => {
    await c.start();
    expect(await c.status()).toBe('running');
    expect(events.map((e) => e.status)).toEqual(['starting', 'running']);
    expect(events[1]).toMatchObject({ name: c.name, previous: 'starting' });
  });

  test('state reports pid, cpu, memory, processes and addresses of the running container', async () => {
    const s = await c.state();
    expect(s.status).toBe('running');
    expect(s.pid).toBeGreaterThan(1);
    expect(readFileSync(`/proc/${s.pid}/comm`, 'utf8').trim()).toBe('init');
    expect(s.cpu.usageNs).toBeGreaterThan(0);
    expect(s.memory.usageBytes).toBeGreaterThan(0);
    expect(s.memory.limitBytes).toBe(64 * 2 ** 20);
    expect(s.processes).toBeGreaterThanOrEqual(1);
    expect(Array.isArray(s.network.addresses)).toBe(true);
  });

  test("state's addresses are the container's, as liblxc's getIps() reports them", async () => {
    const { pid } = await c.state();
    expect((await c.state()).network.addresses).toEqual([]); // loopback only, which is never reported
    // A veth pair with one end in the container's network namespace, addressed from inside.
    const [host, inside] = [`lxq${process.pid % 100000}h`, `lxq${process.pid % 100000}c`];
    execFileSync('ip', ['link', 'add', host, 'type', 'veth', 'peer', 'name', inside, 'netns', String(pid)]);
    try {
      const r = await c.exec(['sh', '-c', `ip addr add 10.213.0.2/24 dev ${inside} && ip addr add 2001:db8::2/64 dev ${inside} && ip link set ${inside} up`]);
      expect(r.stderr.toString()).toBe('');
      const addresses = (await c.state()).network.addresses;
      expect(addresses).toEqual(expect.arrayContaining(['10.213.0.2', '2001:db8::2']));
      expect(addresses.some((a) => a.startsWith('fe80:'))).toBe(false); // link-local is left out
      const liblxc = new (lxc().Container)(c.name, t.host.instancesDir);
      try {
        expect([...addresses].sort()).toEqual((await liblxc.getIps()).sort());
      } finally {
        liblxc.release();
      }
    } finally {
      execFileSync('ip', ['link', 'del', host]);
    }
  });

  test('limits and environment apply, as seen from inside the container', async () => {
    const { pid } = await c.state();
    // cgroup:mixed shows the container its own cgroup at /sys/fs/cgroup/<controller>.
    expect(insideView(pid!, 'sys/fs/cgroup/memory/memory.limit_in_bytes')).toBe(String(64 * 2 ** 20));
    expect(insideView(pid!, 'sys/fs/cgroup/pids/pids.max')).toBe('50');
    expect(insideView(pid!, 'sys/fs/cgroup/cpuset/cpuset.cpus')).toBe('0');
    expect(readFileSync(`/proc/${pid}/status`, 'utf8')).toMatch(/Cpus_allowed_list:\s+0\n/);
    expect(readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0')).toContain('GREETING=hi there');
  });

  test('the container is unprivileged: its root is a high uid on the host', async () => {
    const { pid } = await c.state();
    const uidMap = readFileSync(`/proc/${pid}/uid_map`, 'utf8').trim().split(/\s+/).map(Number);
    expect(uidMap[0]).toBe(0);
    expect(uidMap[1]).toBeGreaterThanOrEqual(100_000);
    const hostUid = Number(/Uid:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]);
    expect(hostUid).toBe(uidMap[1]);
  });

  test('update applies live limits to the running container and persists them', async () => {
    await c.update({ 'limits.memory': '96MiB', 'limits.processes': null });
    const { pid } = await c.state();
    expect(insideView(pid!, 'sys/fs/cgroup/memory/memory.limit_in_bytes')).toBe(String(96 * 2 ** 20));
    expect(insideView(pid!, 'sys/fs/cgroup/pids/pids.max')).toBe('max');
    expect(c.config['limits.memory']).toBe('96MiB');
    expect(c.config['limits.processes']).toBeUndefined();
    const again = await (await Host.open({ path: t.dir, images: t.host.images.dir })).get(c.name);
    expect(again.config['limits.memory']).toBe('96MiB');
  });

  test('freeze and unfreeze', async () => {
    await c.freeze();
    expect(await c.status()).toBe('frozen');
    await expect(c.freeze()).rejects.toBeInstanceOf(InvalidState);
    await c.unfreeze();
    expect(await c.status()).toBe('running');
    await expect(c.unfreeze()).rejects.toBeInstanceOf(InvalidState);
  });

  test('start on a running container is refused', async () => {
    await expect(c.start()).rejects.toThrow(InvalidState);
  });

  test('graceful stop lets init halt; events follow', async () => {
    events.length = 0;
    await c.stop({ timeout: 10_000 });
    expect(await c.status()).toBe('stopped');
    expect(events.map((e) => e.status)).toEqual(['stopping', 'stopped']);
    const log = readFileSync(path.join(t.dir, 'instances', c.name, 'console.log'), 'utf8');
    expect(log).toContain('lxq busybox: up');
  });

  test('stop with a timeout forces an init that ignores the halt signal', async () => {
    await c.update({ 'raw.lxc': 'lxc.signal.halt = SIGCONT' }); // init ignores SIGCONT
    await c.start();
    const t0 = Date.now();
    await c.stop({ timeout: 1_000 });
    const took = Date.now() - t0;
    expect(await c.status()).toBe('stopped');
    expect(took).toBeGreaterThanOrEqual(900);
    expect(took).toBeLessThan(60_000); // forced, not waited out (a loaded machine's kill takes seconds)
    await c.update({ 'raw.lxc': null });
  });

  test('stop({ force }) kills at once; stop on a stopped container is a no-op', async () => {
    await c.start();
    const t0 = Date.now();
    await c.stop({ force: true });
    expect(Date.now() - t0).toBeLessThan(30_000); // not the halt's wait (no bound on a loaded machine's speed)
    expect(await c.status()).toBe('stopped');
    await c.stop();
    expect(await c.status()).toBe('stopped');
  });

  test('restart stops and starts again with a new init', async () => {
    await c.start();
    const before = (await c.state()).pid;
    await c.restart({ force: true });
    const after = await c.state();
    expect(after.status).toBe('running');
    expect(after.pid).not.toBe(before);
  });

  test('freeze a stopped container is refused, and nothing changes', async () => {
    await c.stop({ force: true });
    await expect(c.freeze()).rejects.toMatchObject({ code: 'INVALID_STATE', status: 'stopped' });
    expect(await c.status()).toBe('stopped');
  });

  test('delete of a running container needs force; then everything is gone', async () => {
    await c.start();
    await expect(c.delete()).rejects.toBeInstanceOf(InvalidState);
    expect(await c.status()).toBe('running');
    await c.delete({ force: true });
    expect(existsSync(path.join(t.dir, 'instances', c.name))).toBe(false);
    await expect(t.host.get(c.name)).rejects.toBeInstanceOf(NotFound);
    expect(monitorCgroups().filter((d) => d.includes(c.name))).toEqual([]);
  });
});

describe('host registry', () => {
  test('a new Host on the same path finds instances made earlier, running or not', async () => {
    const a = await t.host.create(t.name('reg'), { image: 'busybox' });
    const b = await t.host.create(t.name('reg'), { image: 'busybox' });
    await b.start();
    try {
      const other = await Host.open({ path: t.dir, images: t.host.images.dir });
      const names = (await other.list()).map((i) => i.name);
      expect(names).toEqual(expect.arrayContaining([a.name, b.name]));
      const b2 = await other.get(b.name);
      expect(await b2.status()).toBe('running');
      await b2.stop({ force: true });
      expect(await b.status()).toBe('stopped');
    } finally {
      await a.delete({ force: true });
      await b.delete({ force: true });
    }
  });

  test('get returns the same object for the same instance within a host', async () => {
    const a = await t.host.create(t.name('same'), { image: 'busybox' });
    expect(await t.host.get(a.name)).toBe(a);
    await a.delete();
  });

  test('an interrupted create (directory without a record) is invisible to list', async () => {
    const before = (await t.host.list()).length;
    const { mkdirSync } = await import('node:fs');
    mkdirSync(path.join(t.dir, 'instances', 'halfmade'));
    expect((await t.host.list()).length).toBe(before);
    await expect(t.host.get('halfmade')).rejects.toBeInstanceOf(NotFound);
  });

  test('containers live under the host path, never in /var/lib/lxc', async () => {
    const a = await t.host.create(t.name('where'), { image: 'busybox' });
    expect(existsSync(path.join(t.dir, 'instances', a.name, 'config'))).toBe(true);
    expect(existsSync(path.join('/var/lib/lxc', a.name))).toBe(false);
    expect(readdirSync(path.join(t.dir, 'instances', a.name, 'rootfs', 'bin'))).toContain('busybox');
    await a.delete();
  });
});
