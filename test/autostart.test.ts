/**
 * boot.autostart, .delay, .priority, boot.stop.priority, boot.host_shutdown_timeout (LXD's
 * semantics, lxd/instances.go) through host.shutdown()/host.autostart(), and `lxq system
 * install|uninstall`: the unit is written to a temporary directory (never /etc/systemd) and its
 * ExecStop and ExecStart lines are run as systemd would run them. Containers only: the order and
 * the rule are the host's, not the driver's, and a VM would only add its boot time.
 */
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';

import type { LifecycleEvent } from '../lib';
import { InvalidArgument } from '../lib';
import { validateConfig } from '../lib/config/options';
import { lxqArgv, tempHost, thrown, type TestHost } from './helpers/host';
import { execArgs } from './helpers/units';

const execFileP = promisify(execFile);

let t: TestHost;
let unitDir: string;
beforeAll(async () => {
  t = await tempHost();
  unitDir = mkdtempSync(path.join(os.tmpdir(), 'lxq-units-'));
});
afterAll(async () => {
  await t.host.close();
  await t.dispose();
  rmSync(unitDir, { recursive: true, force: true });
});

const running = async (names: string[]) => (await Promise.all(names.map(async (n) => ((await (await t.host.get(n)).status()) === 'running' ? n : '')))).filter(Boolean);

test("shutdown stops by boot.stop.priority and autostart starts by LXD's rule, by priority, waiting the delay", async () => {
  const n = { always: t.name('always'), wasOn: t.name('was-on'), never: t.name('never'), userOff: t.name('user-off'), guarded: t.name('guarded') };
  const make = (name: string, config: Record<string, string | number | boolean>) => t.host.create(name, { image: 'busybox', config });
  await make(n.always, { 'boot.autostart': true, 'boot.autostart.priority': 1 });
  await make(n.wasOn, { 'boot.autostart.priority': 5, 'boot.autostart.delay': 2, 'boot.host_shutdown_timeout': 20 });
  await make(n.never, { 'boot.autostart': false, 'boot.stop.priority': 10 });
  await make(n.userOff, {});
  await make(n.guarded, { 'boot.autostart': true, 'security.protection.start': true });
  for (const name of [n.wasOn, n.never, n.userOff]) await (await t.host.get(name)).start();
  await (await t.host.get(n.userOff)).stop({ force: true }); // stopped by its user: not running when the host stopped

  const down = await t.host.shutdown();
  expect(down.failed).toEqual([]);
  expect(down.stopped).toEqual([n.never, n.wasOn]); // boot.stop.priority 10 first
  expect(await running(Object.values(n))).toEqual([]);

  const seen: LifecycleEvent[] = [];
  t.host.on('lifecycle', (e) => seen.push(e));
  const up = await t.host.autostart();
  expect(up).toEqual({ started: [n.wasOn, n.always], failed: [] }); // priority 5, then 1; never, userOff and guarded stay stopped
  expect((await running(Object.values(n))).sort()).toEqual([n.always, n.wasOn].sort());
  // boot.autostart.delay: the next start waited at least 2 s after this one's.
  const at = (name: string) => Date.parse(seen.find((e) => e.name === name && e.action === 'instance-started')!.at);
  expect(at(n.always) - at(n.wasOn)).toBeGreaterThanOrEqual(1900);

  // A second autostart starts nothing: they run.
  expect(await t.host.autostart()).toEqual({ started: [], failed: [] });
  for (const name of Object.values(n)) await (await t.host.get(name)).delete({ force: true });
});

test('boot.* values are checked: integers, delays and timeouts not negative, booleans', () => {
  for (const [key, bad] of [
    ['boot.autostart', 'yes'],
    ['boot.autostart.delay', '-1'],
    ['boot.autostart.priority', '1.5'],
    ['boot.stop.priority', 'high'],
    ['boot.host_shutdown_timeout', '-5'],
  ]) {
    expect(() => validateConfig('container', { [key]: bad })).toThrow(InvalidArgument);
    expect(() => validateConfig('vm', { [key]: bad })).toThrow(key);
  }
});

test('lxq system install writes a unit whose ExecStop and ExecStart stop and start the instances; uninstall removes it', async () => {
  const unit = `lxq-test-${path.basename(t.dir)}.service`;
  const file = path.join(unitDir, unit);
  const lxq = (...args: string[]) => execFileP(process.execPath, [...lxqArgv(t.dir), ...args]);
  const name = t.name('svc');
  await t.host.create(name, { image: 'busybox', config: { 'boot.autostart': true } });

  const installed = await lxq('system', 'install', '--unit-dir', unitDir, '--unit', unit);
  expect(installed.stdout).toContain('systemd was not told');
  const text = readFileSync(file, 'utf8');
  expect(text).toMatch(/^\[Install\]\nWantedBy=multi-user\.target$/m);
  expect(text).toContain('KillMode=process');

  const [cmd, ...start] = execArgs(text, 'ExecStart');
  const [, ...stop] = execArgs(text, 'ExecStop');
  expect(cmd).toBe(process.execPath);
  expect((await execFileP(cmd, start)).stdout).toBe(`started ${name}\n`);
  expect(await running([name])).toEqual([name]);
  expect((await execFileP(cmd, stop)).stdout).toBe(`stopped ${name}\n`);
  expect(await running([name])).toEqual([]);

  const scheduler = file.replace(/\.service$/, '-snapshots.service');
  expect(execArgs(readFileSync(scheduler, 'utf8'), 'ExecStart').slice(-2)).toEqual(['system', 'serve']); // test/snapshot-schedule runs it
  expect((await lxq('system', 'uninstall', '--unit-dir', unitDir, '--unit', unit)).stdout).toBe(`removed ${file} and ${scheduler}\n`);
  expect(existsSync(file) || existsSync(scheduler)).toBe(false);

  // A unit lxq did not write is neither replaced nor removed; a bad unit name is refused.
  writeFileSync(file, '[Unit]\nDescription=not lxq\n');
  for (const verb of ['install', 'uninstall']) {
    const err = await thrown(lxq('system', verb, '--unit-dir', unitDir, '--unit', unit));
    expect((err as unknown as { stderr: string }).stderr).toContain('not written by lxq');
  }
  expect(readFileSync(file, 'utf8')).toBe('[Unit]\nDescription=not lxq\n');
  const bad = await thrown(lxq('system', 'install', '--unit-dir', unitDir, '--unit', '../x.service'));
  expect((bad as unknown as { stderr: string }).stderr).toContain('unit name');
});
