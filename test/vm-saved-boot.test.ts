/**
 * vm.saved_boot on vm/default under QEMU: the first such start makes the image's saved boot (one
 * boot, saved), two VMs load it, and the lxq agent renews each one's identity, checked from
 * inside the guests; a corrupt state boots cold; a later start boots cold. The image is a private
 * copy of the shared one (its saved boots live in its directory, and this file corrupts one).
 */
import { promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import { type CreateOptions, Host, InvalidArgument, NotSupported, type VirtualMachine } from '../lib';
import { run } from '../lib/core/run';
import { SHARED_IMAGES, thrown } from './helpers/host';

jest.setTimeout(900_000);

let dir: string;
let host: Host;
let imageDir: string;
/** The saved boot of a VM whose only device is its root disk (the first test makes it). */
let diskOnlyKey: string;
const made: VirtualMachine[] = [];
const networks: string[] = [];

/** A copy of the shared vm/default build in a store of this file's own (without its saved boots). */
async function privateImages(): Promise<string> {
  const shared = await Host.open({ path: path.join(dir, 'shared-host'), images: SHARED_IMAGES });
  const img = await shared.images.ensure('vm/default');
  const images = path.join(dir, 'images');
  const to = path.join(images, path.relative(SHARED_IMAGES, img.dir));
  await fs.mkdir(to, { recursive: true });
  for (const f of await fs.readdir(img.dir)) if (f !== 'boot') await fs.copyFile(path.join(img.dir, f), path.join(to, f));
  return images;
}

async function vm(config: Record<string, string> = { 'vm.saved_boot': 'true' }, devices?: CreateOptions['devices']): Promise<VirtualMachine> {
  const v = (await host.create(`sb-${process.pid}-${made.length}`, { type: 'vm', image: 'vm/default', config, ...(devices ? { devices } : {}) })) as VirtualMachine;
  made.push(v);
  return v;
}

/** What the guest says of its identity, and the host's clock around the question. */
async function identity(v: VirtualMachine): Promise<{ hostname: string; clock: number; before: number; after: number; random: string }> {
  const before = Date.now() / 1000;
  const r = await v.exec(['/bin/sh', '-c', 'hostname; date +%s; head -c 32 /dev/urandom | od -An -tx1 | tr -d " \\n"']);
  const after = Date.now() / 1000;
  expect(r.exitCode).toBe(0);
  const [hostname, clock, random] = r.stdout.toString().trim().split('\n');
  return { hostname, clock: Number(clock), before, after, random };
}

beforeAll(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), 'lxq-sbt-'));
  const images = await privateImages();
  host = await Host.open({ path: path.join(dir, 'host'), images });
  imageDir = (await host.images.ensure('vm/default')).dir;
});

afterAll(async () => {
  for (const v of made) await v.delete({ force: true }).catch(() => undefined);
  for (const n of networks) await host.networks.delete(n).catch(() => undefined);
  await fs.rm(dir, { recursive: true, force: true });
});

test('a bad vm.saved_boot is refused at create, nothing made', async () => {
  const e = await thrown(host.create(`sb-bad-${process.pid}`, { type: 'vm', image: 'vm/default', config: { 'vm.saved_boot': 'maybe' } }));
  expect(e).toBeInstanceOf(InvalidArgument);
  expect(await host.list()).toEqual([]);
});

test('two VMs loaded from one saved boot each get their own identity, renewed inside the guest', async () => {
  const a = await vm();
  const b = await vm();
  await a.start(); // makes the saved boot (a boot, saved), then loads it
  expect(await a.state()).toMatchObject({ boot: 'saved-state' });
  const saved = await fs.readdir(path.join(imageDir, 'boot'));
  expect(saved).toHaveLength(1);
  diskOnlyKey = saved[0];
  expect((await fs.readdir(path.join(imageDir, 'boot', saved[0]))).sort()).toEqual(['disk.qcow2', 'meta.json', 'state']);
  await b.start();
  for (const v of [a, b]) {
    const s = await v.state();
    expect([s.status, s.boot, s.bootReason]).toEqual(['running', 'saved-state', undefined]);
  }
  const [ia, ib] = [await identity(a), await identity(b)];
  expect([ia.hostname, ib.hostname]).toEqual([a.name, b.name]);
  for (const i of [ia, ib]) {
    // The guest's clock is the host's (date +%s truncates: a second either side of the exec).
    expect(i.clock).toBeGreaterThanOrEqual(Math.floor(i.before) - 1);
    expect(i.clock).toBeLessThanOrEqual(Math.ceil(i.after) + 1);
  }
  // Reseeded: the two clones of one saved random state draw different bytes.
  expect(ia.random).toMatch(/^[0-9a-f]{64}$/);
  expect(ia.random).not.toBe(ib.random);
  // The boot id and kernel command line are each VM's own, as its programs read them (the
  // kernel's are the saving VM's: see the README), in the agent's mount namespace and PID 1's.
  const proc = async (v: VirtualMachine) => (await v.exec(['/bin/sh', '-c', 'for f in /proc/sys/kernel/random/boot_id /proc/1/root/proc/sys/kernel/random/boot_id /proc/cmdline /proc/1/root/proc/cmdline; do cat $f; done'])).stdout.toString().trim().split('\n');
  const [pa, pb] = [await proc(a), await proc(b)];
  for (const [v, p] of [[a, pa], [b, pb]] as const) {
    expect(p).toHaveLength(4);
    expect(p[0]).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    expect([p[1], p[3]]).toEqual([p[0], p[2]]);
    expect(p[2]).toContain(`lxq.hostname=${v.name}`);
    expect(p[2]).not.toContain('lxq-saved-boot');
  }
  expect(pa[0]).not.toBe(pb[0]);

  // A second start is not a first start: the disk is the VM's own now, so it boots cold.
  await a.stop({ force: true });
  await a.start();
  expect(await a.state()).toMatchObject({ boot: 'cold', bootReason: expect.stringMatching(/first start/) });
  expect((await a.exec(['hostname'])).stdout.toString().trim()).toBe(a.name);
  // The command line the saved start showed is the one a's own boot has.
  expect((await a.exec(['cat', '/proc/cmdline'])).stdout.toString().trim()).toBe(pa[2]);
  // Why the boot id is bound over and not written: the kernel refuses the write, even root's.
  expect((await a.exec(['/bin/sh', '-c', 'echo 00000000-0000-4000-8000-000000000000 > /proc/sys/kernel/random/boot_id'])).exitCode).not.toBe(0);
  await a.stop({ force: true });
});

test("an export of a VM resting on a saved boot holds its disk on the image's own (the import reads the same disk); with snapshots it is refused", async () => {
  const [a, b] = made;
  await b.stop({ force: true });
  const disk = (v: VirtualMachine) => path.join(host.instancesDir, v.name, 'disk.qcow2');
  // Both rest on the saved boot's layer (a's second start booted cold on the same disk).
  expect((await run('qemu-img', ['info', '--output=json', disk(a)]))).toContain(path.join(imageDir, 'boot'));
  await b.snapshots.create('s0');
  const refused = path.join(dir, 'refused.tar.zst');
  expect(await thrown(b.export(refused))).toBeInstanceOf(NotSupported);
  await expect(fs.access(refused)).rejects.toThrow();
  const file = path.join(dir, 'a.tar.zst');
  await a.export(file);
  const back = (await host.import(file, { name: `sb-back-${process.pid}` })) as VirtualMachine;
  made.push(back);
  const info = JSON.parse(await run('qemu-img', ['info', '--output=json', disk(back)])) as { 'backing-filename'?: string };
  expect(await fs.realpath(String(info['backing-filename']))).toBe(await fs.realpath(path.join(imageDir, 'disk.qcow2')));
  // What the guest would read: the same bytes through either chain.
  await run('qemu-img', ['compare', '-q', disk(a), disk(back)]);
});

test("a VM with a bridged NIC loads a saved boot: the guest takes the VM's MAC and the address lxq's network leases it, and the host reaches it there", async () => {
  const net = (await host.networks.create(`lxqsb${Math.random().toString(16).slice(2, 8)}`, { 'ipv4.nat': 'false', 'ipv6.address': 'none' })).name;
  networks.push(net);
  const v = await vm(undefined, { eth0: { type: 'nic', network: net } });
  await v.start(); // makes the saved boot of this shape (its NIC on a tap of its own, on no bridge), then loads it
  expect(await v.state()).toMatchObject({ status: 'running', boot: 'saved-state' });
  const key = (await fs.readdir(path.join(imageDir, 'boot'))).find((k) => k !== diskOnlyKey)!;
  const meta = await fs.readFile(path.join(imageDir, 'boot', key, 'meta.json'), 'utf8');
  expect(meta).toContain('mac=@MAC');
  expect(meta).toContain('ifname=@TAP');
  expect((await fs.readdir(path.join(imageDir, 'boot', key))).sort()).toEqual(['disk.qcow2', 'meta.json', 'state']);

  const mac = v.devices.eth0.hwaddr!.toLowerCase();
  expect((await v.exec(['cat', '/sys/class/net/eth0/address'])).stdout.toString().trim()).toBe(mac);
  const address = await v.waitForAddress({ family: 'inet', timeout: 180_000 });
  // The lease lxq's dnsmasq gave for the VM's own MAC (the saving VM's got none: it was on no bridge).
  const leases = await (await host.networks.get(net)).leases();
  expect(leases.filter((l) => l.hwaddr.toLowerCase() === mac).map((l) => l.address)).toEqual([address]);
  expect(leases.filter((l) => l.hwaddr.toLowerCase().startsWith('02:6c:78:71'))).toEqual([]);
  // In the guest too (the lease is dnsmasq's as soon as it answers; the guest applies it a moment later).
  const onEth0 = async () => (await v.exec(['ip', '-4', 'addr', 'show', 'dev', 'eth0'])).stdout.toString().includes(`inet ${address}/`);
  for (const end = Date.now() + 60_000; !(await onEth0()) && Date.now() < end; ) await new Promise((r) => setTimeout(r, 500));
  expect(await onEth0()).toBe(true);
  // The host reaches the guest at that address (busybox httpd in the guest), retried while ARP settles.
  expect((await v.exec(['/bin/sh', '-c', `mkdir -p /www && echo "hello from $(hostname)" > /www/index.html && httpd -p 8080 -h /www`])).exitCode).toBe(0);
  const deadline = Date.now() + 60_000;
  for (;;) {
    const body = await fetch(`http://${address}:8080/`, { signal: AbortSignal.timeout(5_000) }).then((r) => r.text(), (e: Error) => (Date.now() > deadline ? Promise.reject(e) : undefined));
    if (body === undefined) {
      await new Promise((r) => setTimeout(r, 500));
      continue;
    }
    expect(body.trim()).toBe(`hello from ${v.name}`);
    break;
  }
  await v.stop({ force: true });
});

test('a VM without vm.saved_boot boots cold and says nothing more', async () => {
  const c = await vm({});
  await c.start();
  const s = await c.state();
  expect([s.boot, s.bootReason]).toEqual(['cold', undefined]);
  await c.stop({ force: true });
});

test('a corrupt saved state: the start boots cold (one QEMU, the agent answers) and says why', async () => {
  const state = path.join(imageDir, 'boot', diskOnlyKey, 'state');
  await fs.truncate(state, Math.floor((await fs.stat(state)).size / 2));
  const d = await vm();
  await d.start();
  const s = await d.state();
  expect(s).toMatchObject({ status: 'running', boot: 'cold', bootReason: expect.stringMatching(/did not load/) });
  expect((await d.exec(['hostname'])).stdout.toString().trim()).toBe(d.name);
  // The QEMU that failed to load is gone: the VM's pid is the cold boot's, the only QEMU of its directory.
  const pids = (await fs.readdir('/proc')).filter((p) => /^\d+$/.test(p));
  const mine: number[] = [];
  for (const p of pids) {
    const argv = await fs.readFile(`/proc/${p}/cmdline`, 'utf8').catch(() => '');
    if (argv.split('\0').includes(path.join(host.instancesDir, d.name, 'qemu.pid'))) mine.push(Number(p));
  }
  expect(mine).toEqual([s.pid]);
  await d.stop({ force: true });
});
