/**
 * Readiness waits on real busybox containers: running, agent, a TCP port listening inside, a
 * console line, a command exiting 0; start({ wait }) and host.launch; timeouts that say what was
 * seen last, aborts, a stopped instance, and bad input refused before anything starts.
 * (systemd is waited for in test/debian.test.ts, on both types.)
 */
import { Aborted, Instance, InvalidArgument, InvalidState, Timeout } from '../lib';
import { listening } from '../lib/instance/wait';
import { tempHost, thrown, TestHost } from './helpers/host';

jest.setTimeout(120_000);

let t: TestHost;
let c: Instance;
beforeAll(async () => {
  t = await tempHost();
  c = await t.host.create(t.name('w'), { image: 'busybox' });
});
afterAll(async () => {
  await t?.dispose();
});

test('start({ wait }) resolves once the condition holds: running, agent', async () => {
  await c.start({ wait: 'running' });
  expect(await c.status()).toBe('running');
  await c.wait({ for: 'agent', timeout: 5_000 });
  await c.wait('running');
});

test('a TCP port listening inside: found once the server binds it, not before', async () => {
  const p = await c.spawn(['sh', '-c', 'sleep 1; exec nc -l -p 8089']);
  try {
    const t0 = Date.now();
    await c.wait({ for: 'port', port: 8089, timeout: 15_000, interval: 100 });
    const ms = Date.now() - t0;
    expect(ms).toBeGreaterThanOrEqual(800);
    expect(listening((await c.exec(['cat', '/proc/net/tcp', '/proc/net/tcp6'])).stdout.toString(), 8089)).toBe(true);
  } finally {
    p.kill('SIGKILL');
    await p.exit.catch(() => undefined);
  }
});

test('a console line; a command exiting 0', async () => {
  const tag = `ready-${Date.now()}`;
  await c.spawn(['sh', '-c', `sleep 0.5; echo ${tag} > /dev/console`]);
  await c.wait({ for: 'log', pattern: new RegExp(tag), timeout: 15_000 });
  expect(await c.console.log()).toContain(tag);
  await c.spawn(['sh', '-c', 'sleep 0.5; touch /tmp/flag']);
  await c.wait({ for: 'exec', command: ['test', '-e', '/tmp/flag'], timeout: 15_000, interval: 100 });
  expect((await c.exec(['test', '-e', '/tmp/flag'])).exitCode).toBe(0);
});

test('a condition that never holds: Timeout saying what was seen last; an abort: Aborted', async () => {
  const t0 = Date.now();
  // Long enough for one check to finish on a loaded machine (a check cut short says only Timeout).
  const err = await thrown(c.wait({ for: 'port', port: 9, timeout: 5_000 }));
  expect(err).toBeInstanceOf(Timeout);
  expect(err.message).toMatch(/within 5000 ms: nothing listens on TCP port 9/);
  expect(Date.now() - t0).toBeLessThan(60_000);
  const exec = await thrown(c.wait({ for: 'exec', command: ['false'], timeout: 5_000 }));
  expect(exec.message).toMatch(/false exited 1/);
  const ac = new AbortController();
  setTimeout(() => ac.abort(), 200);
  expect(await thrown(c.wait({ for: 'log', pattern: 'never-printed', signal: ac.signal, timeout: 30_000 }))).toBeInstanceOf(Aborted);
  // busybox has no systemd: said at once, not after the timeout.
  expect((await thrown(c.wait({ for: 'systemd', timeout: 30_000 }))).message).toMatch(/has no systemctl/);
});

test('a stopped instance: InvalidState (nothing could make it ready), but running is waited for', async () => {
  await c.stop({ force: true });
  expect(await thrown(c.wait({ for: 'port', port: 80 }))).toBeInstanceOf(InvalidState);
  expect(await thrown(c.wait({ for: 'running', timeout: 300 }))).toBeInstanceOf(Timeout);
  const waiting = c.wait({ for: 'running', timeout: 20_000 });
  await c.start();
  await waiting;
});

test('bad input is refused before anything starts', async () => {
  await c.stop({ force: true });
  const bad: unknown[] = ['soon', { for: 'port' }, { for: 'log', port: 1, pattern: 'x' }, { for: 'port', port: 70000 }, { for: 'log', pattern: '(' }, { for: 'exec', command: [] }, { for: 'running', timeout: -1 }, { for: 'running', colour: 1 }];
  for (const spec of bad) {
    expect([spec, await thrown(c.wait(spec as never))]).toEqual([spec, expect.any(InvalidArgument)]);
    expect([spec, await thrown(c.start({ wait: spec as never }))]).toEqual([spec, expect.any(InvalidArgument)]);
  }
  expect(await c.status()).toBe('stopped');
  expect(await thrown(c.start({ wiat: 'running' } as never))).toBeInstanceOf(InvalidArgument);
  expect(await c.status()).toBe('stopped');
});
