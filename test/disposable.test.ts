/**
 * Instances that clean up after themselves, on busybox containers: ephemeral instances (LXD's
 * flag: deleted when they stop, by whichever process sees the stop), `Symbol.asyncDispose` on
 * instances and hosts (`await using`), and the reaper of `Host.open({ reap: true })`, which
 * deletes a process's instances when it is SIGKILLed.
 */
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import * as path from 'node:path';

import { Host, InvalidArgument, NotFound } from '../lib';
import { SHARED_IMAGES, tempHost, TestHost, thrown } from './helpers/host';
import { type LxdFixture, startLxdFixture } from './helpers/lxd';

jest.setTimeout(300_000);

const REGISTER = path.join(__dirname, 'helpers', 'ts-register.js');
const LIB = path.resolve(__dirname, '..', 'lib');
const MAIN = path.join(LIB, 'cli', 'main.ts');

let t: TestHost;
beforeAll(async () => {
  t = await tempHost();
});
afterAll(async () => {
  await t?.dispose();
});

/** Resolves once `check` holds; fails after `timeoutMs` (generous: the machine is shared). */
async function until(what: string, check: () => Promise<boolean> | boolean, timeoutMs = 120_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`not within ${timeoutMs} ms: ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

const exists = (name: string) => existsSync(path.join(t.host.instancesDir, name));
const names = async (host: Host = t.host) => (await host.list()).map((i) => i.name);

/** Runs `body` in a child Node process (lxq's sources, `host` opened on the test's directory); resolves with its exit. */
function child(body: string): { proc: ReturnType<typeof spawn>; lines: string[]; exited: Promise<number | null>; line: (re: RegExp) => Promise<string> } {
  const script = `const { Host } = require(${JSON.stringify(LIB)});
    (async () => { ${body} })().catch((e) => { console.error(e); process.exit(1); });`;
  const proc = spawn(process.execPath, ['-r', REGISTER, '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
  const lines: string[] = [];
  const waiters: Array<() => void> = [];
  let partial = '';
  proc.stdout!.on('data', (b: Buffer) => {
    const parts = (partial + b.toString()).split('\n');
    partial = parts.pop() ?? '';
    lines.push(...parts);
    for (const w of waiters.splice(0)) w();
  });
  const exited = new Promise<number | null>((resolve) => proc.once('exit', (code) => resolve(code)));
  const line = async (re: RegExp) => {
    for (;;) {
      const found = lines.find((l) => re.test(l));
      if (found !== undefined) return found;
      if (proc.exitCode !== null || proc.signalCode !== null) throw new Error(`the child exited without printing ${re}`);
      await Promise.race([new Promise<void>((r) => waiters.push(r)), exited]);
    }
  };
  return { proc, lines, exited, line };
}

const openHost = (extra = '') => `await Host.open({ path: ${JSON.stringify(t.dir)}, images: ${JSON.stringify(SHARED_IMAGES)}${extra} })`;

/** The reaper processes whose parent is `pid`. */
function reapersOf(pid: number): number[] {
  return readdirSync('/proc')
    .filter((n) => /^\d+$/.test(n))
    .filter((n) => {
      try {
        const stat = readFileSync(`/proc/${n}/stat`, 'utf8');
        const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
        return ppid === pid && readFileSync(`/proc/${n}/cmdline`, 'utf8').includes('reaper-main');
      } catch {
        return false;
      }
    })
    .map(Number);
}
const alive = (pid: number) => existsSync(`/proc/${pid}`) && !/^\S+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));

describe('ephemeral instances', () => {
  test('created stopped, it stays until it has run (another process opening the host too); stop() deletes it and frees its name', async () => {
    const name = t.name('eph');
    const c = await t.host.create(name, { image: 'busybox', ephemeral: true });
    expect(c.ephemeral).toBe(true);
    expect((await c.state()).ephemeral).toBe(true);
    expect(JSON.parse(readFileSync(path.join(t.host.instancesDir, name, 'lxq.json'), 'utf8')).ephemeral).toBe(true);
    // Never started: a fresh open keeps it (`lxq create -e` then `lxq start` in two processes).
    const other = await Host.open({ path: t.dir, images: SHARED_IMAGES });
    expect(await names(other)).toContain(name);
    await other.close();
    await c.start();
    expect(await c.status()).toBe('running');
    await c.stop();
    expect(exists(name)).toBe(false);
    expect(await names()).not.toContain(name);
    expect((await thrown(t.host.get(name))).constructor).toBe(NotFound);
    // The name is free at once.
    const again = await t.host.create(name, { image: 'busybox' });
    expect(again.ephemeral).toBe(false);
    expect((await again.state()).ephemeral).toBe(false);
    await again.delete();
  });

  test('a poweroff inside is seen by the host that holds it: deleted; restart and a reboot inside keep it', async () => {
    const name = t.name('eph');
    const c = await t.host.launch('busybox', name, { ephemeral: true });
    await c.restart();
    expect(await c.status()).toBe('running');
    const before = (await c.state()).pid;
    await c.exec(['reboot']).catch(() => undefined);
    await until('a new init after the reboot', async () => (await c.state().catch(() => undefined))?.pid !== before && (await c.status()) === 'running');
    expect(await names()).toContain(name);
    // The new init is watched: a poweroff now deletes it.
    await c.exec(['poweroff']).catch(() => undefined);
    await until('the ephemeral instance deleted after its poweroff', () => !exists(name));
    expect(await names()).not.toContain(name);
  });

  test('a VM (vm/default): a poweroff inside ends its QEMU, and the host that holds it deletes it', async () => {
    const name = t.name('ephvm');
    const vm = await t.host.launch('vm/default', name, { type: 'vm', ephemeral: true, config: { 'limits.memory': '256MiB' }, wait: 'agent' });
    expect((await vm.state()).ephemeral).toBe(true);
    const qemu = (await vm.state()).pid!;
    await vm.exec(['poweroff']).catch(() => undefined);
    await until('the ephemeral VM deleted after its poweroff', () => !exists(name));
    await until('its QEMU gone', () => !alive(qemu));
    expect(await names()).not.toContain(name);
  });

  test('stopped while no lxq process held it (its process gone): the next Host.open deletes it before anyone lists it', async () => {
    const name = t.name('eph');
    const c = child(`const host = ${openHost()}; await host.launch('busybox', ${JSON.stringify(name)}, { ephemeral: true }); console.log('launched');`);
    await c.line(/launched/);
    expect(await c.exited).toBe(0);
    // This process's host never held it: an lxc-stop nobody watches.
    execFileSync('lxc-stop', ['-P', t.host.instancesDir, '-n', name, '-k']);
    expect(existsSync(path.join(t.host.instancesDir, name, 'lxq.json'))).toBe(true);
    const fresh = await Host.open({ path: t.dir, images: SHARED_IMAGES });
    expect(exists(name)).toBe(false);
    expect(await names(fresh)).not.toContain(name);
    await fresh.close();
  });

  test('snapshots of an ephemeral instance are allowed; a copy is ephemeral only if asked (as lxc copy); a restore keeps the flag', async () => {
    const name = t.name('eph');
    const c = await t.host.create(name, { image: 'busybox', ephemeral: true });
    await c.snapshots.create('s0');
    const plain = await t.host.copy(name, t.name('copy'));
    expect(plain.ephemeral).toBe(false);
    const fromSnapshot = await t.host.copy(name, t.name('copy'), { snapshot: 's0' });
    expect(fromSnapshot.ephemeral).toBe(false);
    const asked = await t.host.copy(plain.name, t.name('copy'), { ephemeral: true });
    expect(asked.ephemeral).toBe(true);
    await c.snapshots.restore('s0');
    expect(c.ephemeral).toBe(true);
    // A copy that was never started is kept by an open, like any never-started ephemeral instance.
    for (const i of [c, plain, fromSnapshot, asked]) await i.delete();
  });

  test('bad input: ephemeral and reap must be booleans; nothing is made', async () => {
    const name = t.name('bad');
    for (const ephemeral of ['yes', 1, null]) {
      expect(await thrown(t.host.create(name, { image: 'busybox', ephemeral: ephemeral as unknown as boolean }))).toBeInstanceOf(InvalidArgument);
      expect(await thrown(t.host.launch('busybox', name, { ephemeral: ephemeral as unknown as boolean }))).toBeInstanceOf(InvalidArgument);
    }
    const source = await t.host.create(t.name('src'), { image: 'busybox' });
    expect(await thrown(t.host.copy(source.name, name, { ephemeral: 'true' as unknown as boolean }))).toBeInstanceOf(InvalidArgument);
    expect(await thrown(Host.open({ path: t.dir, images: SHARED_IMAGES, reap: 'yes' as unknown as boolean }))).toBeInstanceOf(InvalidArgument);
    expect(exists(name)).toBe(false);
    expect(await names()).toEqual([source.name]);
    await source.delete();
  });

  test('lxq create -e / launch --ephemeral: list shows the type as LXD does, stop deletes it', async () => {
    const lxq = (args: string[]) => execFileSync(process.execPath, ['-r', REGISTER, MAIN, '--host', t.dir, '--images', SHARED_IMAGES, ...args], { encoding: 'utf8' });
    const made = t.name('cli');
    const launched = t.name('cli');
    lxq(['create', 'busybox', made, '-e']);
    lxq(['launch', 'busybox', launched, '--ephemeral']);
    const rows = JSON.parse(lxq(['list', '--format', 'json'])) as { name: string; type: string; status: string }[];
    expect(rows.filter((r) => r.name === made || r.name === launched).map((r) => [r.name, r.type, r.status])).toEqual([
      [made, 'container (ephemeral)', 'stopped'],
      [launched, 'container (ephemeral)', 'running'],
    ].sort((a, b) => (a[0] < b[0] ? -1 : 1)));
    lxq(['stop', launched]);
    expect(exists(launched)).toBe(false);
    lxq(['delete', made]);
  });
});

describe('Symbol.asyncDispose', () => {
  test('await using: the instance is stopped and deleted at the end of its scope, the host closed; no error if already gone', async () => {
    const name = t.name('using');
    const gone = t.name('using');
    {
      await using host = await Host.open({ path: t.dir, images: SHARED_IMAGES });
      await using c = await host.launch('busybox', name);
      expect(await c.status()).toBe('running');
      await using d = await host.create(gone, { image: 'busybox' });
      await d.delete();
    }
    expect(exists(name)).toBe(false);
    expect(exists(gone)).toBe(false);
    expect(await names()).not.toContain(name);
  });
});

describe('the reaper of Host.open({ reap: true })', () => {
  test('a SIGKILLed process: what it made through the reaping host is deleted, what it made without reap stays; the reaper exits', async () => {
    const [running, stopped, copied, kept, vm] = [t.name('reap'), t.name('reap'), t.name('reap'), t.name('keep'), t.name('reapvm')];
    const c = child(`
      const host = ${openHost(', reap: true')};
      const plain = ${openHost()};
      await host.launch('busybox', ${JSON.stringify(running)});
      await host.create(${JSON.stringify(stopped)}, { image: 'busybox' });
      await plain.create(${JSON.stringify(kept)}, { image: 'busybox' });
      await host.copy(${JSON.stringify(kept)}, ${JSON.stringify(copied)});
      await host.launch('vm/default', ${JSON.stringify(vm)}, { type: 'vm', config: { 'limits.memory': '256MiB' } });
      console.log('made');
      setInterval(() => undefined, 1000);`);
    await c.line(/made/);
    const reapers = reapersOf(c.proc.pid!);
    expect(reapers).toHaveLength(1);
    expect(readdirSync(t.host.instancesDir)).toEqual(expect.arrayContaining([running, stopped, copied, kept, vm]));
    // A VM left running by a killed process was the known case (a benchmark's VMs ran on for 50 minutes).
    // Read from its pid file: a Host.get here would hold the VM's QMP monitor, which the reaper needs.
    const qemu = Number(readFileSync(path.join(t.host.instancesDir, vm, 'qemu.pid'), 'utf8'));
    expect(alive(qemu)).toBe(true);
    c.proc.kill('SIGKILL');
    await c.exited;
    await until('the reaped instances gone', () => ![running, stopped, copied, vm].some(exists));
    await until('the VM\'s QEMU gone', () => !alive(qemu));
    await until('the reaper exited', () => !alive(reapers[0]));
    expect(await names()).toContain(kept);
    expect(await names()).not.toEqual(expect.arrayContaining([running]));
    await (await t.host.get(kept)).delete();
  });

  test('host.close(): the reaper exits and deletes nothing; an instance of the same name made later by another process is never its', async () => {
    const [made, replaced] = [t.name('reap'), t.name('reap')];
    const c = child(`
      const host = ${openHost(', reap: true')};
      await host.create(${JSON.stringify(made)}, { image: 'busybox' });
      await host.create(${JSON.stringify(replaced)}, { image: 'busybox' });
      console.log('made');
      setInterval(() => undefined, 1000);`);
    await c.line(/made/);
    const [reaper] = reapersOf(c.proc.pid!);
    expect(reaper).toBeDefined();
    // Another process deletes one and makes another of that name: the reaper must not take it.
    await (await t.host.get(replaced)).delete();
    const newcomer = await t.host.create(replaced, { image: 'busybox' });
    c.proc.kill('SIGKILL');
    await c.exited;
    await until('the reaper exited', () => !alive(reaper));
    await until('the first instance reaped', () => !exists(made));
    expect(exists(replaced)).toBe(true);
    expect((await t.host.get(replaced)).createdAt).toEqual(newcomer.createdAt);
    await newcomer.delete();

    const kept = t.name('keep');
    const d = child(`
      const host = ${openHost(', reap: true')};
      await host.launch('busybox', ${JSON.stringify(kept)});
      const keep = setInterval(() => undefined, 1000);
      // Nothing else keeps this process up while close() waits for the reaper to exit.
      process.once('SIGUSR2', () => { clearInterval(keep); host.close().then(() => console.log('closed')); });
      console.log('made');`);
    await d.line(/made/);
    const [closing] = reapersOf(d.proc.pid!);
    expect(closing).toBeDefined();
    d.proc.kill('SIGUSR2');
    await d.line(/closed/);
    expect(await d.exited).toBe(0);
    await until('the reaper of the closed host exited', () => !alive(closing));
    expect(await (await t.host.get(kept)).status()).toBe('running');
    await (await t.host.get(kept)).delete({ force: true });
  });
});

describe('on a real private LXD 5.0 (test/helpers/lxd.ts): the same options, the server deletes', () => {
  let lxd: LxdFixture | undefined;
  beforeAll(async () => {
    lxd = await startLxdFixture('lxq-disp-lxd-', { pool: 'lxq-disp', profile: 'default', alias: 'busybox' });
  }, 300_000);
  afterAll(async () => {
    await lxd?.stop();
  }, 180_000);

  test('ephemeral: true is LXD\'s flag (stop deletes it, a copy is not ephemeral unless asked); await using stops and deletes; bad input refused', async () => {
    const remote = await Host.connect({ socket: lxd!.daemon.socket });
    try {
      const name = `d-${path.basename(t.dir).slice(-6).toLowerCase().replace(/[^a-z0-9]/g, 'x')}`;
      const gone = async (n: string) => (await remote.get(n).then(() => false, (e) => (e instanceof NotFound ? true : Promise.reject(e))));
      expect(await thrown(remote.create(name, { image: 'busybox', ephemeral: 'yes' as unknown as boolean }))).toBeInstanceOf(InvalidArgument);
      expect(await gone(name)).toBe(true);
      const c = await remote.launch('busybox', name, { ephemeral: true });
      expect(c.ephemeral).toBe(true);
      expect((await c.state()).ephemeral).toBe(true);
      await c.stop({ force: true });
      await until('the server deleted the stopped ephemeral instance', () => gone(name));
      {
        await using d = await remote.create(`${name}-u`, { image: 'busybox' });
        const copy = await remote.copy(d.name, `${name}-c`);
        const asked = await remote.copy(d.name, `${name}-e`, { ephemeral: true });
        expect([d.ephemeral, copy.ephemeral, asked.ephemeral]).toEqual([false, false, true]);
        await copy.delete();
        await asked.delete();
      }
      expect(await gone(`${name}-u`)).toBe(true);
    } finally {
      remote.close();
    }
  });
});
