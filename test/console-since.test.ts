/**
 * `console.log({ since })` and `lxq console --show-log --since`, on real busybox containers:
 * lines written at known times (each stamped by lxq_stamper before the next time is taken) are
 * kept or left out by `since`, across a restart; the stamper runs once per running instance and
 * ends with it; a log without times (made before lxq kept them) is NotSupported, and so is the
 * stretch a later start found unstamped, and what a killed stamper left unstamped; bad values are InvalidArgument. The VM's case is in
 * test/metrics-console.test.ts (it boots its VM there).
 */
import { spawnSync } from 'node:child_process';
import { promises as fs, readdirSync, readFileSync } from 'node:fs';

import { InvalidArgument, NotSupported } from '../lib/core/errors';
import type { Instance } from '../lib';
import { lxqArgv, tempHost, type TestHost } from './helpers/host';
import { stamped } from './helpers/console-times';

let CLI: string[];
let t: TestHost;
beforeAll(async () => {
  t = await tempHost();
  CLI = lxqArgv(t.dir);
  await t.host.images.ensure('busybox');
}, 600_000);
afterAll(async () => {
  await t?.dispose();
});

function lxq(...args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [...CLI, ...args], { encoding: 'utf8', timeout: 120_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** Writes a line on the console, waits until the stamper has marked it, and returns a time after that. */
async function say(c: Instance, line: string): Promise<Date> {
  await c.exec(['/bin/sh', '-c', `printf "\\n${line}\\n" >/dev/console`]);
  await stamped(c.console.path, line);
  const at = new Date();
  // The next line is written strictly later than `at` (a millisecond clock).
  while (Date.now() <= at.getTime()) await new Promise((r) => setTimeout(r, 1));
  return at;
}

/** The lxq_stamper processes watching `log`. */
function stampers(log: string): number[] {
  return readdirSync('/proc')
    .filter((p) => /^\d+$/.test(p))
    .filter((p) => {
      try {
        const argv = readFileSync(`/proc/${p}/cmdline`, 'utf8').split('\0');
        return argv[0].endsWith('lxq_stamper') && argv[1] === log;
      } catch {
        return false;
      }
    })
    .map(Number);
}

async function until(what: string, ok: () => boolean, ms = 60_000): Promise<void> {
  const end = Date.now() + ms;
  while (!ok()) {
    if (Date.now() > end) throw new Error(`${what}: not within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

test('container: since keeps the lines written from then on, across a restart; one stamper per run, gone with it; the CLI', async () => {
  const c = await t.host.create(t.name('since'), { image: 'busybox' });
  expect(await c.console.log({ since: '1h' })).toBe(''); // no log yet
  await c.start();
  expect(stampers(c.console.path)).toHaveLength(1);
  const t1 = await say(c, 'since-one');
  const t2 = await say(c, 'since-two');
  expect(await c.console.log({ since: '1h' })).toMatch(/since-one[\s\S]*since-two/);
  expect(await c.console.log({ since: t1 })).not.toMatch(/since-one/);
  expect(await c.console.log({ since: t1 })).toMatch(/since-two/);
  expect(await c.console.log({ since: t2 })).not.toMatch(/since-(one|two)/);
  expect(await c.console.log({ since: t1.toISOString() })).toMatch(/^since-two\r?\n$/m);
  expect(await c.console.log({ since: '1h', tail: 1 })).toMatch(/^since-two\r?\n$/);
  expect(await c.console.log({ since: new Date(Date.now() + 3_600_000) })).toBe(''); // a time to come

  await c.restart({ force: true });
  await until('the first run\'s stamper ends, one runs for the second', () => stampers(c.console.path).length === 1);
  const t3 = await say(c, 'since-three');
  expect(await c.console.log({ since: t1 })).toMatch(/since-two[\s\S]*since-three/);
  expect(await c.console.log({ since: t3 })).not.toMatch(/since-/);

  // follow from a time: the lines since then, then the new ones.
  const ac = new AbortController();
  const seen: string[] = [];
  const done = (async () => {
    for await (const line of c.console.follow({ since: t2, signal: ac.signal, interval: 50 })) seen.push(line);
  })();
  await say(c, 'since-four');
  await until('follow sees since-four', () => seen.includes('since-four'));
  ac.abort();
  await done;
  expect(seen.filter((l) => l.startsWith('since-'))).toEqual(['since-three', 'since-four']);

  // The command line: a duration and a time; a bad value changes nothing.
  expect(lxq('console', c.name, '--show-log', '--since', '10m')).toMatchObject({ status: 0, stdout: expect.stringMatching(/since-one[\s\S]*since-four/) });
  expect(lxq('console', c.name, '--show-log', '--since', t3.toISOString())).toMatchObject({ status: 0, stdout: expect.stringMatching(/^since-four\r?\n$/m) });
  expect(lxq('console', c.name, '--show-log', '--since', t3.toISOString()).stdout).not.toMatch(/since-three/);
  expect(lxq('console', c.name, '--show-log', '--since', 'yesterday')).toMatchObject({ status: 1, stderr: expect.stringMatching(/since must be a duration/) });
  expect(lxq('console', c.name, '--since', '10m')).toMatchObject({ status: 1, stderr: expect.stringMatching(/go with --show-log/) });
  expect(lxq('console', '--help').stdout).toMatch(/--since <time>/);

  await c.stop({ force: true });
  await until('the stamper ends with the container', () => stampers(c.console.path).length === 0);
  expect(await c.console.log({ since: t3 })).toMatch(/since-four/); // still readable stopped
  await c.delete();
}, 300_000);

test('a log without times is NotSupported for since (and only for it); a later start stamps from then on', async () => {
  const c = await t.host.create(t.name('old'), { image: 'busybox' });
  await c.start();
  await say(c, 'old-line');
  await c.stop({ force: true });
  await until('the stamper ends', () => stampers(c.console.path).length === 0);
  // As a log written by an lxq from before the stamper: no index beside it.
  await fs.rm(`${c.console.path}.times`);
  await expect(c.console.log({ since: '1h' })).rejects.toThrow(NotSupported);
  await expect(c.console.log({ since: '1h' })).rejects.toThrow(/has no times/);
  expect(await c.console.log()).toMatch(/old-line/);
  expect(lxq('console', c.name, '--show-log', '--since', '10m')).toMatchObject({ status: 1, stderr: expect.stringMatching(/has no times/) });

  await c.start();
  await stamped(c.console.path); // the new run's first look has marked the old lines
  const t0 = new Date();
  const t1 = await say(c, 'new-line');
  await expect(c.console.log({ since: '1h' })).rejects.toThrow(/lines of unknown time/); // the old lines are in that hour
  expect(await c.console.log({ since: t1 })).not.toMatch(/line/);
  const fromT0 = await c.console.log({ since: t0 });
  expect(fromT0).toMatch(/new-line/);
  expect(fromT0).not.toMatch(/old-line/);
  await c.delete({ force: true });
}, 300_000);

test('a stamper killed while the container runs: since after its last look is NotSupported, and so is that stretch after the next start', async () => {
  const c = await t.host.create(t.name('kill'), { image: 'busybox' });
  await c.start();
  const t1 = await say(c, 'kill-one');
  for (const pid of stampers(c.console.path)) process.kill(pid, 'SIGKILL');
  await until('the stamper is gone', () => stampers(c.console.path).length === 0);
  await c.exec(['/bin/sh', '-c', 'printf "\\nkill-two\\n" >/dev/console']);
  await until('kill-two is in the log', () => readFileSync(c.console.path, 'utf8').includes('kill-two'));
  await expect(c.console.log({ since: t1 })).rejects.toThrow(/its stamper is not running/);
  expect(await c.console.log({ since: '1h' })).toMatch(/kill-one[\s\S]*kill-two/); // all of it is after that hour's start
  await c.restart({ force: true });
  await stamped(c.console.path);
  await expect(c.console.log({ since: t1 })).rejects.toThrow(/lines of unknown time/);
  const t2 = await say(c, 'kill-three');
  expect(await c.console.log({ since: t2 })).not.toMatch(/kill-/);
  await c.delete({ force: true });
}, 300_000);

test('bad since values are InvalidArgument before anything is read', async () => {
  const c = await t.host.create(t.name('bad'), { image: 'busybox' });
  for (const since of ['yesterday', '10 minutes', '-5m', '', new Date(NaN), 5, {}]) {
    await expect(c.console.log({ since } as never)).rejects.toThrow(InvalidArgument);
    expect(() => c.console.follow({ since } as never)).toThrow(InvalidArgument);
  }
  await expect(c.console.log({ bogus: 1 } as never)).rejects.toThrow(InvalidArgument);
  await expect(c.console.log({ tail: -1 })).rejects.toThrow(InvalidArgument);
  // Durations as Docker and Go write them, RFC 3339 times and Unix seconds are taken.
  for (const since of ['1h30m', '2.5s', '500ms', '2026-12-05T06:00:00Z', '2026-12-05T06:00:00.5+01:00', '1764914400.5']) expect(await c.console.log({ since })).toBe('');
  await c.delete();
}, 120_000);

/** Each file of the instance's directory (not its root) with its size and, for the power mark, its content; not liblxc's own log, which keeps why the start failed. */
async function dirState(c: Instance): Promise<Record<string, string>> {
  const dir = `${t.dir}/instances/${c.name}`;
  const out: Record<string, string> = {};
  for (const n of await fs.readdir(dir)) {
    const st = await fs.lstat(`${dir}/${n}`);
    if (st.isFile() && n !== 'lxc.log') out[n] = n === '.lxq-last-power' ? await fs.readFile(`${dir}/${n}`, 'utf8') : String(st.size);
  }
  return out;
}

test('a start refused after it began (a disk source gone) leaves the power mark and the log index as they were', async () => {
  const src = await fs.mkdtemp('/tmp/lxq-since-src-');
  const c = await t.host.create(t.name('refused'), { image: 'busybox', devices: { d: { type: 'disk', source: src, path: '/mnt/d' } } });
  try {
    await fs.rm(src, { recursive: true });
    const fresh = await dirState(c);
    await expect(c.start()).rejects.toThrow();
    expect(await dirState(c)).toEqual(fresh);
    expect(fresh['.lxq-last-power']).toBeUndefined();
    expect(stampers(c.console.path)).toEqual([]);
    // Once it has run: the mark says STOPPED and the index is kept, as they were.
    await fs.mkdir(src);
    await c.start();
    await say(c, 'ran once');
    await c.stop({ force: true });
    await until('its stamper to end', () => stampers(c.console.path).length === 0);
    await fs.rm(src, { recursive: true });
    const ran = await dirState(c);
    expect(ran['.lxq-last-power']).toBe('STOPPED');
    expect(Number(ran['console.log.times'])).toBeGreaterThan(16);
    await expect(c.start()).rejects.toThrow();
    expect(await dirState(c)).toEqual(ran);
    expect(stampers(c.console.path)).toEqual([]);
  } finally {
    await c.delete({ force: true });
    await fs.rm(src, { recursive: true, force: true });
  }
}, 180_000);
