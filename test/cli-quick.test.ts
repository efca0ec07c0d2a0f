/**
 * The CLI's quick path (lib/cli/quick.ts: `list` and `exec` without commander or Host) against
 * the whole CLI: every command line runs both ways (LXQ_NO_QUICK=1 turns the quick path off) on
 * real containers (running, stopped, frozen, missing) and on hosts the quick path must leave to
 * the whole CLI (an ephemeral instance, a proxy, a VM); both must print the same bytes on stdout
 * and stderr and exit the same, and a preload (helpers/cli-path.js) tells which path served it:
 * `handed` when the quick path handed a command without a terminal over to lxq_runner (which
 * took the process's place), `quick` when Node ran it (on a terminal), `full` the whole CLI.
 */
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import * as path from 'node:path';

import { type CliRun, lxqArgv, pidfdCount, runNode, tempHost, type TestHost } from './helpers/host';

const PRELOAD = path.join(__dirname, 'helpers', 'cli-path.js');

let t: TestHost;
let running: string;
let stopped: string;
beforeAll(async () => {
  t = await tempHost();
  running = t.name('run');
  stopped = t.name('stop');
  await (await t.host.create(running, { image: 'busybox', config: { 'environment.FROM_CONFIG': 'yes' } })).start();
  await t.host.create(stopped, { image: 'busybox' });
}, 240_000);
afterAll(async () => {
  await t.dispose();
});

type Served = 'quick' | 'handed' | 'full';

/** The environment of `lxq` with the quick path on or off, the preload recording the path at `record`. */
function cliEnv(quick: boolean, record: string): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, LXQ_TEST_CLI_PATH: record };
  delete env.LXQ_REMOTE;
  if (quick) delete env.LXQ_NO_QUICK;
  else env.LXQ_NO_QUICK = '1';
  return env;
}

/** `lxq ARGS` with the quick path on or off; `served`: the path that served it. */
async function lxq(args: string[], quick: boolean, input = ''): Promise<CliRun & { served: string }> {
  const record = path.join(t.dir, `served-${quick}`);
  const run = await runNode(['-r', PRELOAD, ...lxqArgv(t.dir), ...args], input, cliEnv(quick, record));
  return { ...run, served: readFileSync(record, 'utf8') };
}

/** Runs `args` both ways: the same bytes and exit code; the quick path served it (`quick`, `handed`) or left it to the whole CLI. */
async function same(args: string[], served: Served, input = ''): Promise<CliRun> {
  // The quick path first: a line it leaves to the whole CLI may change the host (Host.open makes it).
  const fast = await lxq(args, true, input);
  const full = await lxq(args, false, input);
  expect(full.served).toBe('full');
  expect({ args, served: fast.served }).toEqual({ args, served });
  const { served: _a, ...f } = full;
  const { served: _b, ...q } = fast;
  expect({ args, ...q }).toEqual({ args, ...f });
  return q;
}

test('list and exec: the quick path prints and exits as the whole CLI; what it cannot serve exactly goes to the whole CLI', async () => {
  const r = running;
  for (const line of [['list'], ['ls'], ['list', '--format', 'json'], ['list', '--format', 'csv'], ['list', '--format', 'yaml'], ['list', '--format', 'table']]) {
    expect((await same(line, 'quick')).stdout).toContain(stopped);
  }
  expect(await same(['exec', r, '--', 'sh', '-c', 'echo out; echo err >&2; exit 7'], 'handed')).toEqual({ code: 7, stdout: 'out\n', stderr: 'err\n' });
  expect((await same(['exec', r, '--', 'cat'], 'handed', 'from stdin\n')).stdout).toBe('from stdin\n');
  expect((await same(['exec', '--env', 'A=1', '--env', 'B=x=y', r, '--cwd', '/tmp', '--', 'sh', '-c', 'echo $A $B $FROM_CONFIG; pwd'], 'handed')).stdout).toBe('1 x=y yes\n/tmp\n');
  expect((await same(['exec', r, '-T', '--', 'sh', '-c', 'tty || true'], 'handed')).stdout).toBe('not a tty\n');
  expect((await same(['exec', '-t', r, '--', 'echo', 'on a terminal'], 'quick')).stdout).toBe('on a terminal\r\n');
  expect((await same(['exec', '-t', '-T', r, '--', 'echo', 'last wins'], 'handed')).stdout).toBe('last wins\n');
  expect((await same(['exec', r, '--', 'sh', '-c', 'kill -TERM $$'], 'handed')).code).toBe(143);
  expect((await same(['exec', r, '--', 'no-such-command'], 'handed')).code).not.toBe(0);
  // Refused, unknown, or not a plain form: the whole CLI does what it always did (says why, or serves it).
  for (const line of [
    ['exec', stopped, '--', 'true'],
    ['exec', 'nope', '--', 'true'],
    ['exec', 'Bad_Name', '--', 'true'],
    ['exec', r, 'true'],
    ['exec', r, '--'],
    ['exec', '--env', 'NOEQUALS', r, '--', 'true'],
    ['exec', '--user', '1', r, '--', 'true'],
    ['list', '--format', 'bogus'],
    ['list', 'extra'],
    ['list', '--format=json'],
    ['--project', 'p', 'list'],
  ]) {
    await same(line, 'full');
  }
  await t.host.get(r).then((c) => c.freeze());
  expect((await same(['list'], 'quick')).stdout).toMatch(new RegExp(`${r} +container +frozen`));
  expect((await same(['exec', r, '--', 'true'], 'full')).stderr).toMatch(/frozen/);
  await t.host.get(r).then((c) => c.unfreeze());
}, 600_000);

test('hosts the quick path leaves to the whole CLI: an ephemeral instance, a proxy device (its own or a profile\'s), a VM; a host not made yet; a profile\'s environment', async () => {
  const made = [
    await t.host.create(t.name('eph'), { image: 'busybox', ephemeral: true }),
    await t.host.create(t.name('px'), { image: 'busybox', devices: { web: { type: 'proxy', listen: 'tcp:127.0.0.1:1', connect: 'tcp:127.0.0.1:80' } } }),
    await t.host.create(t.name('vm'), { type: 'vm', image: 'vm/default' }),
  ];
  for (const i of made) {
    expect((await same(['list'], 'full')).stdout).toContain(i.name);
    expect((await same(['exec', running, '--', 'echo', 'served'], 'full')).stdout).toBe('served\n');
    await i.delete({ force: true });
  }
  expect((await same(['exec', running, '--', 'echo', 'served'], 'handed')).stdout).toBe('served\n');
  // The default profile's environment reaches the command (the config as profiles expand it); a proxy from a profile is the whole CLI's.
  await t.host.profiles.update('default', { config: { 'environment.FROM_PROFILE': 'p' } });
  expect((await same(['exec', running, '--', 'sh', '-c', 'echo $FROM_PROFILE $FROM_CONFIG'], 'handed')).stdout).toBe('p yes\n');
  await t.host.profiles.update('default', { devices: { web: { type: 'proxy', listen: 'tcp:127.0.0.1:1', connect: 'tcp:127.0.0.1:80' } } });
  expect((await same(['exec', running, '--', 'sh', '-c', 'echo $FROM_PROFILE'], 'full')).stdout).toBe('p\n');
  await t.host.profiles.update('default', { config: { 'environment.FROM_PROFILE': null }, devices: { web: null } });
  // A host directory that does not exist yet: Host.open makes it, so the whole CLI runs.
  expect((await same(['--host', path.join(t.dir, 'new'), 'list', '--format', 'json'], 'full')).stdout).toBe('[]\n');
}, 600_000);

/** `lxq exec` of a command that traps `sig` (quick path on or off): `sig` sent to lxq once the command runs; what it printed and how it ended. */
async function signalled(sig: NodeJS.Signals, quick: boolean): Promise<CliRun & { served: string; pidfds: number }> {
  const record = path.join(t.dir, `served-${sig}-${quick}`);
  const script = `trap 'echo got ${sig}; exit 3' ${sig.slice(3)}; echo ready; while :; do sleep 1; done`;
  const p = spawn(process.execPath, ['-r', PRELOAD, ...lxqArgv(t.dir), 'exec', running, '--', 'sh', '-c', script], { env: cliEnv(quick, record), stdio: ['pipe', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  p.stderr.on('data', (d) => (stderr += d));
  const closed = new Promise<number>((resolve) => p.on('close', (code) => resolve(code ?? -1)));
  await new Promise<void>((resolve, reject) => {
    p.stdout.on('data', (d) => (stdout += d) && stdout.includes('ready') && resolve());
    void closed.then(() => reject(new Error(`lxq exited before the command was ready: ${stdout} ${stderr}`)));
  });
  // Handed over, p is lxq_runner now: it holds the command's pidfd and nothing more (liblxc's attach left the container init's too).
  const pidfds = pidfdCount(p.pid!);
  p.kill(sig);
  const code = await closed;
  p.stdin.end();
  return { code, stdout, stderr, served: readFileSync(record, 'utf8'), pidfds };
}

test('signals sent to lxq exec reach the command, handed over or not (SIGINT, SIGTERM, SIGHUP, SIGQUIT)', async () => {
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGQUIT'] as const) {
    const { served: fastServed, pidfds, ...fast } = await signalled(sig, true);
    const { served: fullServed, pidfds: _, ...full } = await signalled(sig, false);
    expect([sig, fastServed, fullServed, pidfds]).toEqual([sig, 'handed', 'full', 1]);
    expect({ sig, ...fast }).toEqual({ sig, ...full });
    expect(fast).toEqual({ code: 3, stdout: `ready\ngot ${sig}\n`, stderr: '' });
  }
}, 300_000);
