/**
 * boot.autostart and snapshots.schedule on a VM, booted once: `lxq autostart start` boots the VM
 * marked for it (and not the other), `lxq system serve` (the scheduler unit's command) snapshots
 * it while it runs as snapshots.schedule/.pattern/.expiry say, and `lxq autostart stop` shuts it
 * down. The containers' cases (order, delays, the rule, two schedulers) are test/autostart and
 * test/snapshot-schedule.
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import * as path from 'node:path';
import { promisify } from 'node:util';

import { minuteIn } from './helpers/clock';
import { lxqArgv, tempHost, type TestHost } from './helpers/host';
import { until } from './helpers/wait';

const execFileP = promisify(execFile);

let t: TestHost;
let serve: ChildProcess | undefined;
beforeAll(async () => {
  t = await tempHost();
});
afterAll(async () => {
  serve?.kill('SIGKILL');
  await t?.dispose();
});

test('lxq autostart start boots the VM with boot.autostart, the scheduler snapshots it by snapshots.schedule, lxq autostart stop shuts it down', async () => {
  const lxq = (...args: string[]) => execFileP(process.execPath, [...lxqArgv(t.dir), ...args], { timeout: 900_000 });
  const config = { 'limits.memory': '512MiB', 'boot.autostart': true, 'boot.host_shutdown_timeout': 300, 'snapshots.schedule': '* * * * *', 'snapshots.pattern': 'auto%d', 'snapshots.expiry': '1d' };
  const vm = await t.host.create(t.name('vmas'), { type: 'vm', image: 'vm/default', config });
  const other = await t.host.create(t.name('vmno'), { type: 'vm', image: 'vm/default', config: { 'boot.autostart': false } });

  expect((await lxq('autostart', 'start')).stdout).toBe(`started ${vm.name}\n`);
  expect([await vm.status(), await other.status()]).toEqual(['running', 'stopped']);

  // The scheduler's process, as its unit runs it; the test reads the snapshots' directories only while it runs.
  // Its clock begins a minute 15 s from now (lxq's start-up under load), not up to a minute away.
  serve = spawn(process.execPath, [...lxqArgv(t.dir), 'system', 'serve'], { stdio: ['ignore', 'pipe', 'inherit'], env: minuteIn(15_000).env });
  const exited = new Promise<number | null>((resolve) => serve!.once('exit', (code) => resolve(code)));
  await new Promise((resolve) => serve!.stdout!.once('data', resolve));
  const snapDir = path.join(t.dir, 'instances', vm.name, 'snapshots');
  const auto = () => (existsSync(snapDir) ? readdirSync(snapDir).filter((n) => /^auto\d+$/.test(n) && existsSync(path.join(snapDir, n, 'snapshot.json'))) : []);
  await until('a scheduled snapshot of the running VM', () => auto().length > 0, 420_000, 500);
  serve.kill('SIGTERM');
  expect(await exited).toBe(0);
  serve = undefined;

  const snaps = await vm.snapshots.list();
  const first = snaps.find((s) => s.name === 'auto0');
  expect(first).toBeDefined();
  // snapshots.expiry: a day from when it was begun (its creation time is when it was done: a running VM's RAM is saved between).
  const lifetime = first!.expiresAt!.getTime() - first!.createdAt.getTime();
  expect([lifetime <= 86_400_000, lifetime > 86_400_000 - 15 * 60_000]).toEqual([true, true]);
  expect(await other.snapshots.list()).toEqual([]); // stopped, without snapshots.schedule

  expect((await lxq('autostart', 'stop')).stdout).toBe(`stopped ${vm.name}\n`);
  expect([await vm.status(), await other.status()]).toEqual(['stopped', 'stopped']);
}, 1_800_000);
