/**
 * snapshots.schedule, .schedule.stopped, .pattern and .expiry: the forms (cron, aliases, Go date
 * layouts, "1d 2H") computed, and a schedule of every minute run for real by two `lxq system
 * serve` processes (the scheduler unit's ExecStart, from a temporary unit directory) on busybox
 * containers (their clock moved so that a minute begins seconds after they start): each scheduled snapshot is made once, named by the pattern, given the expiry, a
 * stopped instance only with .stopped, and an expired snapshot deleted by the scheduler. VMs are
 * not tested: the scheduler is the host's and a VM's snapshot is the one every other test makes.
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';

import { InvalidArgument } from '../lib';
import { validateConfig } from '../lib/config/options';
import { expiryFrom, nextSnapshotName, parseSchedule, renderPattern } from '../lib/core/schedule';
import { minuteIn } from './helpers/clock';
import { lxqArgv, tempHost, type TestHost } from './helpers/host';
import { execArgs } from './helpers/units';

const execFileP = promisify(execFile);
const at = (iso: string) => new Date(iso); // local time: no Z

test('cron fields, ranges, steps, names, lists, aliases and the day-of-month/day-of-week rule', () => {
  const fires = (s: string, when: string) => parseSchedule(s).matches(at(when));
  expect(fires('* * * * *', '2026-03-04T05:06:00')).toBe(true);
  expect(fires('*/15 * * * *', '2026-03-04T05:30:00')).toBe(true);
  expect(fires('*/15 * * * *', '2026-03-04T05:31:00')).toBe(false);
  expect(fires('5-10/5 2 * * *', '2026-03-04T02:10:00')).toBe(true);
  expect(fires('0 0 * jan-mar mon', '2026-03-02T00:00:00')).toBe(true); // a Monday in March
  expect(fires('0 0 * * 7', '2026-03-01T00:00:00')).toBe(true); // 7 is Sunday too
  // Both day fields restricted: either matches (the 13th, or any Friday).
  expect(fires('0 0 13 * 5', '2026-03-06T00:00:00')).toBe(true);
  expect(fires('0 0 13 * 5', '2026-03-13T00:00:00')).toBe(true);
  expect(fires('0 0 13 * 5', '2026-03-07T00:00:00')).toBe(false);
  expect(fires('@hourly', '2026-03-04T05:00:00')).toBe(true);
  expect(fires('@daily', '2026-03-04T05:00:00')).toBe(false);
  expect(fires('@never', '2026-03-04T00:00:00')).toBe(false);
  expect(fires('0 6 * * *, @midnight', '2026-03-04T00:00:00')).toBe(true);
  expect(fires('0,30 6 * * *', '2026-03-04T06:30:00')).toBe(true);
  for (const bad of ['* * * *', '60 * * * *', '* 24 * * *', '* * 0 * *', '*/0 * * * *', '5-1 * * * *', '@startup', '@often', 'x * * * *']) {
    expect(() => validateConfig('container', { 'snapshots.schedule': bad })).toThrow(InvalidArgument);
  }
});

test("expiry as LXD's GetExpiry: units once each, calendar months and years", () => {
  const from = at('2026-01-31T10:00:00');
  expect(expiryFrom(from, '1d 2H')).toEqual(at('2026-02-01T12:00:00'));
  expect(expiryFrom(from, '1w 30M 5S')).toEqual(at('2026-02-07T10:30:05'));
  expect(expiryFrom(from, '1m')).toEqual(at('2026-03-03T10:00:00')); // Go's AddDate normalizes Feb 31
  expect(expiryFrom(from, '1y')).toEqual(at('2027-01-31T10:00:00'));
  expect(expiryFrom(from, '')).toBeNull();
  for (const bad of ['1d 1d', '1x', 'd', '1 d', '-1d']) expect(() => validateConfig('vm', { 'snapshots.expiry': bad })).toThrow(InvalidArgument);
});

test("pattern: %d as LXD's next index, Go's date layout, -N after an existing fixed name", () => {
  const when = at('2026-03-04T05:06:07');
  expect(renderPattern('{{ creation_date|date:"2006-01-02_15-04-05" }}', when)).toBe('2026-03-04_05-06-07');
  expect(renderPattern("b-{{creation_date|date:'Jan02'}}", when)).toBe('b-Mar04');
  expect(nextSnapshotName('snap%d', when, [])).toBe('snap0');
  expect(nextSnapshotName('snap%d', when, ['snap0', 'snap7', 'other'])).toBe('snap8');
  expect(nextSnapshotName('daily', when, [])).toBe('daily');
  expect(nextSnapshotName('daily', when, ['daily', 'daily-0'])).toBe('daily-1');
  for (const bad of ['a%db%d', '{{ other }}', '{% if x %}', 'a/b', '{{ creation_date|date:"2006" ']) {
    expect(() => validateConfig('container', { 'snapshots.pattern': bad })).toThrow(InvalidArgument);
  }
});

describe('a schedule of every minute, run by two scheduler processes', () => {
  let t: TestHost;
  let unitDir: string;
  const serving: ChildProcess[] = [];
  beforeAll(async () => {
    t = await tempHost();
    unitDir = mkdtempSync(path.join(os.tmpdir(), 'lxq-units-'));
  });
  afterAll(async () => {
    for (const p of serving) p.kill('SIGKILL');
    await t.dispose();
    rmSync(unitDir, { recursive: true, force: true });
  });

  test('each instance due is snapshotted once per minute, named and given its expiry; an expired snapshot goes', async () => {
    const schedule = { 'snapshots.schedule': '* * * * *', 'snapshots.pattern': 'auto-{{ creation_date|date:"2006-01-02" }}-%d', 'snapshots.expiry': '1d 2H' };
    const running = await t.host.create(t.name('run'), { image: 'busybox', config: schedule });
    const stoppedToo = await t.host.create(t.name('stz'), { image: 'busybox', config: { ...schedule, 'snapshots.schedule.stopped': true } });
    const stopped = await t.host.create(t.name('stp'), { image: 'busybox', config: schedule });
    await running.start();
    // Expired by the time the scheduler runs; only the scheduler touches snapshots until then (the test reads directories).
    await running.snapshots.create('old', { expiresAt: new Date(Date.now() + 500) });
    const snapDir = (name: string) => path.join(t.dir, 'instances', name, 'snapshots');
    const names = (name: string) => (existsSync(snapDir(name)) ? readdirSync(snapDir(name)).filter((n) => !n.startsWith('.')) : []);

    const unit = `lxq-test-${path.basename(t.dir)}.service`;
    const installing = Date.now();
    await execFileP(process.execPath, [...lxqArgv(t.dir), 'system', 'install', '--unit-dir', unitDir, '--unit', unit]);
    // Their clock begins a minute a few of lxq's start-ups from now (one just measured), not up to a minute away.
    const clock = minuteIn(3000 + 3 * (Date.now() - installing));
    const [cmd, ...args] = execArgs(readFileSync(path.join(unitDir, unit.replace(/\.service$/, '-snapshots.service')), 'utf8'), 'ExecStart');
    const exited: Promise<number | null>[] = [];
    for (let n = 0; n < 2; n++) {
      const p = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'inherit'], env: clock.env });
      serving.push(p);
      exited.push(new Promise((resolve) => p.once('exit', (code) => resolve(code))));
    }
    await Promise.all(serving.map((p) => new Promise((resolve) => p.stdout!.once('data', resolve))));
    const began = Date.now() + clock.shift;

    const deadline = Date.now() + 150_000;
    while (!(names(running.name).some((n) => n.startsWith('auto-')) && names(stoppedToo.name).length) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 500));
    // The minute's work ends with the last instance: wait for both processes to be past it.
    await new Promise((r) => setTimeout(r, 5000));
    for (const p of serving) p.kill('SIGTERM');
    expect(await Promise.all(exited)).toEqual([0, 0]);
    const minutes = Math.floor((Date.now() + clock.shift) / 60_000) - Math.floor(began / 60_000) + 1;

    const auto = names(running.name).filter((n) => n.startsWith('auto-')).sort();
    expect(auto.length).toBeGreaterThanOrEqual(1);
    for (const n of auto) expect(n).toMatch(/^auto-\d{4}-\d{2}-\d{2}-\d+$/);
    expect(auto[0]).toMatch(/-0$/);
    expect(names(running.name)).not.toContain('old');
    // One per minute however many processes schedule: at most the minutes the schedulers ran in.
    expect(new Set(auto).size).toBe(auto.length);
    expect(auto.length).toBeLessThanOrEqual(minutes);
    expect(names(stoppedToo.name).length).toBeGreaterThanOrEqual(1);
    expect(names(stopped.name)).toEqual([]);
    const info = await running.snapshots.get(auto[0]);
    // Its expiry is computed when the snapshot starts, its createdAt when it is committed: seconds apart at most.
    expect(Math.abs(info.expiresAt!.getTime() - expiryFrom(info.createdAt, '1d 2H')!.getTime())).toBeLessThan(10 * 60_000);
  }, 240_000);
});
