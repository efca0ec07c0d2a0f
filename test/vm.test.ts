/**
 * VMs on real QEMU (TCG on this machine): lifecycle, status events, a second Node process,
 * a QEMU killed with SIGKILL, the accelerator decision, and bad input. The guest boots fully once
 * (for the ACPI power-down); the other starts only wait for QEMU to run, to keep the suite fast.
 */
import { execFile } from 'node:child_process';
import { existsSync, promises as fs, readdirSync, readFileSync, statSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';

import { Host, InvalidArgument, NotFound, NotSupported, OperationFailed, StatusEvent, Timeout } from '../lib';
import { VmInstance } from '../lib/drivers/vm/vm';
import { ImageStore } from '../lib/images/store';
import { ACCEL_FILE, AccelFacts, decideAccel, hostAccel, probeAccelFacts } from '../lib/drivers/vm/accel';
import { SHARED_IMAGES, tempHost, TestHost } from './helpers/host';

const execFileP = promisify(execFile);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

let t: TestHost;
const hosts: TestHost[] = [];

async function newHost(): Promise<TestHost> {
  const h = await tempHost();
  hosts.push(h);
  return h;
}

/** Kills every QEMU a test host still runs (found by pidfile, as lxq finds them). */
function killQemus(dir: string): void {
  // Every pidfile under the test's directory, the extra hosts of the bad-input cases included.
  for (const e of existsSync(dir) ? readdirSync(dir, { withFileTypes: true }) : []) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) killQemus(p);
    if (e.name !== 'qemu.pid') continue;
    try {
      const pid = Number(readFileSync(p, 'utf8'));
      if (readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').includes(p)) process.kill(pid, 'SIGKILL');
    } catch {
      /* not running */
    }
  }
}

/** Resolves when `check` holds, polling; fails after `ms`. */
async function until(what: string, check: () => Promise<boolean> | boolean, ms = 30_000): Promise<number> {
  const start = Date.now();
  while (!(await check())) {
    if (Date.now() - start > ms) throw new Error(`${what}: not within ${ms} ms`);
    await sleep(20);
  }
  return Date.now() - start;
}

function alive(pid: number): boolean {
  try {
    return readFileSync(`/proc/${pid}/cmdline`).length > 0; // a zombie's is empty
  } catch {
    return false;
  }
}

function recorder(vm: VmInstance): StatusEvent[] {
  const events: StatusEvent[] = [];
  vm.on('status', (e) => events.push(e));
  return events;
}
const transitions = (events: StatusEvent[]) => events.map((e) => `${e.previous}>${e.status}`);

beforeAll(async () => {
  t = await newHost();
  await t.host.images.ensure('vm/default'); // built once, shared with the other test files
}, 600_000);

afterAll(async () => {
  for (const h of hosts) killQemus(h.dir);
  for (const h of hosts) await h.dispose();
});


/** Where the shared store keeps the current vm/default (its directory is named by its recipe). */
async function sharedVmImageDir(): Promise<string> {
  return (await new ImageStore(SHARED_IMAGES).get('vm/default')).dir;
}

describe('VM lifecycle', () => {
  let vm: VmInstance;
  let name: string;
  const figures: string[] = [];
  afterAll(() => console.log(`vm figures (TCG):\n${figures.join('\n')}`));

  test('create: a directory with the record and a qcow2 overlay over the image disk; nothing runs', async () => {
    name = t.name('vm');
    vm = (await t.host.create(name, { type: 'vm', image: 'vm/default', config: { 'limits.cpu': '2', 'limits.memory': '256MiB' } })) as VmInstance;
    expect(vm).toBeInstanceOf(VmInstance);
    expect(vm.type).toBe('vm');
    const dir = path.join(t.host.instancesDir, name);
    // never-started: the disk is still the image's, until the first start (vm.saved_boot loads only then).
    expect(readdirSync(dir).sort()).toEqual(['disk.qcow2', 'lxq.json', 'lxq.lock', 'never-started']);
    const { stdout } = await execFileP('qemu-img', ['info', '-U', '--output=json', path.join(dir, 'disk.qcow2')]);
    const info = JSON.parse(stdout);
    expect(info.format).toBe('qcow2');
    expect(info['backing-filename']).toBe(path.join(await sharedVmImageDir(), 'disk.qcow2'));
    expect(await vm.status()).toBe('stopped');
    expect(await vm.state()).toMatchObject({ status: 'stopped', pid: null, vcpus: 0 });
    expect((await t.host.list()).map((i) => [i.name, i.type])).toContainEqual([name, 'vm']);
  });

  test('start: QEMU runs detached with QMP ready; state reports it; exec and files go through the guest agent', async () => {
    const events = recorder(vm);
    const t0 = Date.now();
    await vm.start();
    const startMs = Date.now() - t0;
    figures.push(`start() to QMP ready: ${startMs} ms`);
    expect(transitions(events)).toEqual(['stopped>starting', 'starting>running']);

    const s = await vm.state();
    expect(s).toMatchObject({ status: 'running', vcpus: 2, processes: 0, network: { addresses: [] } });
    expect(s.memory.limitBytes).toBe(256 * 2 ** 20);
    expect(s.memory.usageBytes).toBeGreaterThan(0);
    // Its own session (setsid): no signal aimed at this process group reaches it.
    const stat = readFileSync(`/proc/${s.pid}/stat`, 'utf8');
    expect(Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[3])).toBe(s.pid);
    expect(readFileSync(path.join(t.host.instancesDir, name, 'qemu.pid'), 'utf8').trim()).toBe(String(s.pid));

    const firstOutput = await until('first console output', async () => (await vm.console.log()).length > 0);
    figures.push(`start() to the first serial output: ${Date.now() - t0} ms`);
    expect(firstOutput).toBeGreaterThanOrEqual(0);
    expect((await vm.state()).cpu.usageNs).toBeGreaterThan(0);

    await vm.waitForAgent(60_000);
    figures.push(`start() to the guest agent answering: ${Date.now() - t0} ms`);
    const r = await vm.exec(['uname', '-r']);
    expect(r.exitCode).toBe(0);
    expect(r.stdout.toString()).toMatch(/^\d+\.\d+/);
    await vm.files.write('/tmp/x', 'y');
    expect((await vm.files.read('/tmp/x')).toString()).toBe('y');
    // Through the lxq agent of the image: another user and a terminal, as in a container.
    expect((await vm.state()).agent).toBe('lxq-agent');
    expect((await vm.exec(['id', '-u'], { user: 1000 })).stdout.toString()).toBe('1000\n');
    expect((await vm.exec(['sh', '-c', '[ -t 0 ] && echo tty'], { pty: true })).stdout.toString()).toBe('tty\r\n');
    const guest = await vm.state();
    expect(guest.os?.kernelRelease).toBe(r.stdout.toString().trim());
    expect(guest.network.addresses).not.toContain('127.0.0.1');
    await expect(vm.start()).rejects.toThrow(/is running/);
  });

  test('freeze and unfreeze pause and resume the guest (QMP stop/cont)', async () => {
    const events = recorder(vm);
    let t0 = Date.now();
    await vm.freeze();
    figures.push(`freeze: ${Date.now() - t0} ms`);
    expect(await vm.status()).toBe('frozen');
    expect(await vm.qmp.execute('query-status')).toMatchObject({ status: 'paused', running: false });
    t0 = Date.now();
    await vm.unfreeze();
    figures.push(`unfreeze: ${Date.now() - t0} ms`);
    expect(await vm.status()).toBe('running');
    expect(transitions(events)).toEqual(['running>frozen', 'frozen>running']);
    await expect(vm.unfreeze()).rejects.toThrow(/needs frozen/);
  });

  test('QMP events reach status events: a pause made through vm.qmp directly', async () => {
    const events = recorder(vm);
    await vm.qmp.execute('stop');
    await until('frozen event', () => events.length === 1, 5_000);
    await vm.qmp.execute('cont');
    await until('running event', () => events.length === 2, 5_000);
    expect(transitions(events)).toEqual(['running>frozen', 'frozen>running']);
  });

  test('another holder of the VM (a second Host, as another process) reads its status while this one holds the monitor', async () => {
    // QEMU serves one client per monitor: the second reads through the query monitor instead.
    const other = await Host.open({ path: t.dir, images: SHARED_IMAGES });
    try {
      const vm2 = (await other.get(vm.name)) as VmInstance;
      expect(vm2).not.toBe(vm);
      expect(await vm2.status()).toBe('running');
      await vm.freeze();
      expect(await vm2.status()).toBe('frozen');
      await vm.unfreeze();
      expect(await vm.status()).toBe('running');
    } finally {
      await other.close();
    }
  }, 60_000);

  test('exec with a timeout in a guest that stopped answering rejects with Timeout, soon', async () => {
    const pending = vm.exec(['sleep', '30'], { timeout: 1_000 });
    pending.catch(() => undefined);
    await sleep(300);
    await vm.qmp.execute('stop'); // the guest (and its agent) is paused: nothing it is asked is answered
    const t0 = Date.now();
    try {
      await expect(pending).rejects.toBeInstanceOf(Timeout);
      // The timeout at 1 s, then the kill's grace: long before the agent's own 30 s timeout.
      expect(Date.now() - t0).toBeLessThan(25_000);
    } finally {
      await vm.qmp.execute('cont');
    }
    expect((await vm.exec(['true'])).exitCode).toBe(0); // the agent answers again
  });

  test('options: limits of a running VM cannot change; next-start options can; CPU sets are refused', async () => {
    await expect(vm.update({ 'limits.memory': '512MiB' })).rejects.toThrow(NotSupported);
    await expect(vm.update({ 'limits.cpu': '0-1' })).rejects.toThrow(/CPU set/);
    await vm.update({ 'user.note': 'kept', 'raw.qemu': '-rtc base=utc' });
    expect(vm.config).toMatchObject({ 'user.note': 'kept', 'limits.memory': '256MiB' });
    await vm.update({ 'raw.qemu': null });
  });

  test('graceful stop: the ACPI power button powers the guest off and QEMU exits', async () => {
    // The boot is over when the guest agent answers; acpid starts with it.
    await vm.waitForAgent(60_000);
    await sleep(500);
    const pid = (await vm.state()).pid!;
    const events = recorder(vm);
    const t0 = Date.now();
    await vm.stop({ timeout: 30_000 });
    figures.push(`graceful stop (system_powerdown to QEMU exit): ${Date.now() - t0} ms`);
    expect(await vm.console.log()).toMatch(/reboot: Power down/); // the guest powered itself off
    expect(alive(pid)).toBe(false);
    expect(await vm.status()).toBe('stopped');
    expect(transitions(events)).toEqual(['running>stopping', 'stopping>stopped']);
    expect(await vm.state()).toMatchObject({ status: 'stopped', pid: null });
  });

  describe('across processes', () => {
    let vm2: VmInstance;
    let childPid: number;

    test('a second Node process starts the VM and exits; QEMU lives on; Host.open + get here reconnect', async () => {
      const script = `
        const { Host } = require(${JSON.stringify(path.join(__dirname, '..', 'lib'))});
        (async () => {
          const host = await Host.open({ path: process.env.LXQ_HOST, images: process.env.LXQ_IMAGES });
          const vm = await host.get(process.env.LXQ_NAME);
          await vm.start();
          console.log(JSON.stringify(await vm.state()));
        })().catch((e) => { console.error(e); process.exit(1); });`;
      const child = await execFileP(process.execPath, ['-r', path.join(__dirname, 'helpers', 'ts-register.js'), '-e', script], {
        env: { ...process.env, LXQ_HOST: t.dir, LXQ_IMAGES: SHARED_IMAGES, LXQ_NAME: name },
        timeout: 60_000, // the child must exit by itself: lxq keeps no handle open on a running VM
      });
      const started = JSON.parse(child.stdout);
      expect(started.status).toBe('running');
      childPid = started.pid;
      expect(alive(childPid)).toBe(true);

      const host2 = await Host.open({ path: t.dir, images: SHARED_IMAGES });
      vm2 = (await host2.get(name)) as VmInstance;
      expect(vm2).not.toBe(vm);
      expect(await vm2.status()).toBe('running');
      expect((await vm2.state()).pid).toBe(childPid);
      expect(await vm2.qmp.execute('query-status')).toMatchObject({ status: 'running' });
    });

    test('QEMU killed with SIGKILL: status becomes stopped and an event fires; the stale pidfile is ignored', async () => {
      const events = recorder(vm2);
      process.kill(childPid, 'SIGKILL');
      const ms = await until('stopped event', () => events.some((e) => e.status === 'stopped'), 5_000);
      figures.push(`SIGKILL to the 'stopped' event: ${ms} ms`);
      expect(transitions(events)).toEqual(['running>stopped']);
      expect(existsSync(path.join(t.host.instancesDir, name, 'qemu.pid'))).toBe(true);
      expect(await vm2.status()).toBe('stopped');
    });

    test('starts again after the crash; stop({ force }) kills at once; delete removes everything', async () => {
      await vm2.start();
      const pid = (await vm2.state()).pid!;
      const t0 = Date.now();
      await vm2.stop({ force: true });
      figures.push(`stop({ force: true }): ${Date.now() - t0} ms`);
      expect(alive(pid)).toBe(false);
      expect(await vm2.status()).toBe('stopped');
      await vm2.delete();
      expect(existsSync(path.join(t.host.instancesDir, name))).toBe(false);
      expect((await t.host.list()).map((i) => i.name)).not.toContain(name);
    });
  });
});

test('raw.qemu.conf: its sections reach QEMU (-readconfig), the file is the VM\'s own, and a VM with it boots no saved boot', async () => {
  const conf = '# an entropy source of the user\'s\n[device "user-rng"]\n  driver = "virtio-rng-pci"\n';
  const v = (await t.host.create(t.name('conf'), { type: 'vm', image: 'vm/default', config: { 'raw.qemu.conf': conf, 'vm.saved_boot': 'true' } })) as VmInstance;
  try {
    await v.start();
    expect((await v.qmp.execute('qom-list', { path: '/machine/peripheral' })).map((p) => p.name)).toContain('user-rng');
    const file = path.join(t.host.instancesDir, v.name, 'qemu.conf');
    expect([readFileSync(file, 'utf8'), statSync(file).mode & 0o777]).toEqual([conf, 0o600]);
    const state = await v.state();
    expect(readFileSync(`/proc/${state.pid}/cmdline`, 'utf8').split('\0')).toEqual(expect.arrayContaining(['-readconfig', file]));
    expect([state.boot, state.bootReason]).toEqual(['cold', expect.stringMatching(/^raw\.qemu\.conf/)]);
  } finally {
    await v.delete({ force: true });
  }
}, 300_000);

describe('accelerator choice', () => {
  const thisHost: AccelFacts = { devKvm: true, cpuFlags: [], kvmPvm: true };

  test.each<[string, AccelFacts, 'kvm' | 'tcg', RegExp]>([
    ['kvm_pvm without vmx/svm (this machine)', thisHost, 'tcg', /kvm_pvm/],
    ['no /dev/kvm', { devKvm: 'ENOENT', cpuFlags: ['vmx'], kvmPvm: false }, 'tcg', /ENOENT/],
    ['/dev/kvm not permitted', { devKvm: 'EACCES', cpuFlags: ['svm'], kvmPvm: false }, 'tcg', /EACCES/],
    ['kvm_pvm even with vmx', { devKvm: true, cpuFlags: ['vmx'], kvmPvm: true }, 'tcg', /kvm_pvm/],
    ['no vmx/svm flag', { devKvm: true, cpuFlags: [], kvmPvm: false }, 'tcg', /no vmx or svm/],
    ['Intel VT-x', { devKvm: true, cpuFlags: ['vmx'], kvmPvm: false }, 'kvm', /vmx/],
    ['AMD-V', { devKvm: true, cpuFlags: ['svm'], kvmPvm: false }, 'kvm', /svm/],
  ])('%s', (_label, facts, accel, reason) => {
    const d = decideAccel(facts);
    expect(d.accel).toBe(accel);
    expect(d.reason).toMatch(reason);
  });

  test('the probe of this host; the verdict is remembered with its evidence in the host dir', async () => {
    const facts = await probeAccelFacts();
    if (existsSync('/sys/module/kvm_pvm')) expect(decideAccel(facts).accel).toBe('tcg');
    const h = await newHost();
    const verdict = await hostAccel(h.dir);
    expect(verdict).toMatchObject({ ...decideAccel(facts), facts, source: 'probe', kernel: os.release() });
    const file = path.join(h.dir, ACCEL_FILE);
    expect(JSON.parse(readFileSync(file, 'utf8'))).toEqual(verdict);
    // Read back, not probed again; a verdict of another kernel is probed again.
    await fs.writeFile(file, JSON.stringify({ ...verdict, reason: 'remembered' }));
    expect((await hostAccel(h.dir)).reason).toBe('remembered');
    await fs.writeFile(file, JSON.stringify({ ...verdict, reason: 'remembered', kernel: 'another' }));
    expect((await hostAccel(h.dir)).reason).toBe(verdict.reason);
  });

  const kvmWorks = () => decideAccel(thisHostFacts!).accel === 'kvm';
  let thisHostFacts: AccelFacts | undefined;
  beforeAll(async () => {
    thisHostFacts = await probeAccelFacts();
  });

  test('vm.accel "kvm" where KVM does not work: NotSupported before anything is launched', async () => {
    if (kvmWorks()) return console.log('skipped: KVM works on this host');
    const h = await newHost();
    const vm = await h.host.create(h.name('kvm'), { type: 'vm', image: 'vm/default', config: { 'vm.accel': 'kvm' } });
    await expect(vm.start()).rejects.toThrow(NotSupported);
    await expect(vm.start()).rejects.toThrow(/vm\.accel is "kvm" but KVM does not work on this host/);
    expect(readdirSync(path.join(h.host.instancesDir, vm.name)).sort()).toEqual(['disk.qcow2', 'lxq.json', 'lxq.lock', 'never-started']);
    expect(await vm.status()).toBe('stopped');
  });

  test('boot watchdog: a remembered "kvm" verdict that cannot boot a guest falls back to TCG and is corrected', async () => {
    // Here, a KVM guest makes QEMU abort (kvm_pvm): the real failure the watchdog is for.
    if (kvmWorks()) return console.log('skipped: KVM works on this host');
    const h = await newHost();
    const probed = await hostAccel(h.dir);
    await fs.writeFile(path.join(h.dir, ACCEL_FILE), JSON.stringify({ ...probed, accel: 'kvm', reason: 'injected by the test' }));
    const vm = (await h.host.create(h.name('wd'), { type: 'vm', image: 'vm/default' })) as VmInstance;
    const t0 = Date.now();
    await vm.start();
    console.log(`boot watchdog: KVM attempt, then TCG, in ${Date.now() - t0} ms`);
    const cmdline = readFileSync(`/proc/${(await vm.state()).pid}/cmdline`, 'utf8');
    expect(cmdline).toContain('accel=tcg');
    const verdict = JSON.parse(readFileSync(path.join(h.dir, ACCEL_FILE), 'utf8'));
    expect(verdict).toMatchObject({ accel: 'tcg', source: 'boot-watchdog' });
    expect(verdict.reason).toMatch(/KVM boot failed/);
    await vm.delete({ force: true });
  });
});

describe('bad input: typed errors, nothing written, no QEMU left running', () => {
  let b: TestHost;
  beforeAll(async () => {
    b = await newHost();
  });

  /** Every path under the host directory with its mtime. */
  function snapshot(dir: string): string[] {
    const out: string[] = [];
    const walk = (d: string) => {
      for (const e of readdirSync(d, { withFileTypes: true })) {
        const p = path.join(d, e.name);
        out.push(`${p}:${statSync(p).mtimeMs}`);
        if (e.isDirectory()) walk(p);
      }
    };
    walk(dir);
    return out.sort();
  }

  async function refused(p: Promise<unknown>, type: new (...a: never[]) => Error, message: RegExp, dir = b.dir): Promise<void> {
    const before = snapshot(dir);
    const err = await p.then(() => undefined, (e) => e);
    expect(err).toBeInstanceOf(type);
    expect((err as Error).message).toMatch(message);
    expect(snapshot(dir)).toEqual(before);
  }
  const vmWith = (config: Record<string, unknown>) => b.host.create(b.name('bad'), { type: 'vm', image: 'vm/default', config: config as never });

  test('options: memory below the floor, a CPU set, unknown keys, container-only options, lxq-owned QEMU arguments', async () => {
    await refused(vmWith({ 'limits.memory': '32MiB' }), InvalidArgument, /below the floor of 64 MiB for a vm/);
    await refused(vmWith({ 'limits.cpu': '0-1' }), InvalidArgument, /a CPU set .* applies to containers only/);
    await refused(vmWith({ 'limits.cpu': '999' }), InvalidArgument, /CPU count/);
    await refused(vmWith({ 'limits.memroy': '1GiB' }), InvalidArgument, /unknown option "limits.memroy"/);
    await refused(vmWith({ 'limits.processes': '10' }), InvalidArgument, /applies to container instances only, not to a vm/);
    await refused(vmWith({ 'security.privileged': 'true' }), InvalidArgument, /container instances only/);
    await refused(vmWith({ 'raw.lxc': 'lxc.arch = x86_64' }), InvalidArgument, /container instances only/);
    await refused(vmWith({ 'raw.qemu': '-qmp stdio' }), InvalidArgument, /-qmp is managed by lxq/);
    await refused(vmWith({ 'raw.qemu.conf': '[chardev "c"]\n  backend = "socket"\n' }), InvalidArgument, /\[chardev\] sections are managed by lxq/);
    await refused(vmWith({ 'raw.qemu.conf': '[device "d"]\n  driver virtio-rng-pci\n' }), InvalidArgument, /key = "value"/);
    await refused(vmWith({ 'raw.qemu.conf': 'driver = "virtio-rng-pci"\n' }), InvalidArgument, /before any \[group\] header/);
    await refused(vmWith({ 'vm.accel': 'hvf' }), InvalidArgument, /"auto", "kvm" or "tcg"/);
    await refused(b.host.create(b.name('bad'), { image: 'busybox', config: { 'vm.accel': 'tcg' } }), InvalidArgument, /applies to vm instances only, not to a container/);
  });

  test('a VM image for a container, and a container image for a VM', async () => {
    await refused(b.host.create(b.name('bad'), { image: 'vm/default' }), InvalidArgument, /"vm\/default" is a vm image, not a container image/);
    await refused(b.host.create(b.name('bad'), { type: 'vm', image: 'busybox' }), InvalidArgument, /"busybox" is a container image, not a vm image/);
  });

  test('a host path too long for the VM sockets', async () => {
    const deep = path.join(b.dir, 'x'.repeat(60));
    const h = await Host.open({ path: deep, images: SHARED_IMAGES });
    await refused(h.create('v'.repeat(40), { type: 'vm', image: 'vm/default' }), InvalidArgument, /longer than a unix socket path/, deep);
  });

  describe('an incomplete image', () => {
    /** A store holding a copy of vm/default's manifest, its files linked, but for `omit`. */
    async function storeWithout(omit: string | undefined): Promise<{ host: Host; images: string }> {
      const images = path.join(b.dir, `images-${omit ?? 'all'}`);
      const src = await sharedVmImageDir();
      const dst = path.join(images, path.relative(SHARED_IMAGES, src)); // same layout, same recipe
      await fs.mkdir(dst, { recursive: true });
      for (const f of readdirSync(src)) {
        if (f === omit) continue;
        if (f === 'image.json') await fs.copyFile(path.join(src, f), path.join(dst, f));
        else await fs.symlink(path.join(src, f), path.join(dst, f));
      }
      return { host: await Host.open({ path: path.join(b.dir, `host-${omit ?? 'all'}`), images }), images };
    }
    const kernelFile = async () => JSON.parse(readFileSync(path.join(await sharedVmImageDir(), 'image.json'), 'utf8')).meta.files.kernel as string;

    test('create with an image that has no kernel: NotFound naming it, no instance directory', async () => {
      const { host } = await storeWithout(await kernelFile());
      await refused(host.create('nokernel', { type: 'vm', image: 'vm/default' }), NotFound, /incomplete: it has no kernel/, host.path);
      expect(readdirSync(host.instancesDir)).toEqual([]);
    });

    test('start after the kernel went: NotFound, QEMU never launched', async () => {
      const { host, images } = await storeWithout(undefined);
      const vm = await host.create('lostkernel', { type: 'vm', image: 'vm/default' });
      await fs.rm(path.join(images, path.relative(SHARED_IMAGES, await sharedVmImageDir()), await kernelFile()));
      await expect(vm.start()).rejects.toThrow(NotFound);
      expect(await vm.status()).toBe('stopped');
      expect(readdirSync(path.join(host.instancesDir, 'lostkernel')).sort()).toEqual(['disk.qcow2', 'lxq.json', 'lxq.lock', 'never-started']);
      await vm.delete();
    });
  });

  test('raw.qemu that QEMU rejects: OperationFailed with its message, nothing left running', async () => {
    const vm = (await vmWith({ 'raw.qemu': '-no-such-option', 'vm.accel': 'tcg' })) as VmInstance;
    const err = await vm.start().then(() => undefined, (e) => e);
    expect(err).toBeInstanceOf(OperationFailed);
    expect(err.message).toMatch(/QEMU exited \(exit code 1\)[\s\S]*-no-such-option/);
    expect(await vm.status()).toBe('stopped');
    expect(readFileSync(vm.qemuLogPath, 'utf8')).toMatch(/invalid option/);
    await vm.delete();
  });
});
