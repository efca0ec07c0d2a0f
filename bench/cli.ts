/**
 * The command line and the host-wide events: the CLI's start-up as a ratio to Node's own
 * (`node -e 0`, timed in turn with each command, pair by pair, so that the machine's drift
 * cancels; wall and cpu; `list` and `exec` by the quick path and by the whole CLI,
 * `LXQ_NO_QUICK=1`), `lxq exec NAME -- true` (every command run the same way, under bash) beside `lxc-attach` on the same container and LXD's
 * `lxc exec` on the same busybox rootfs in a private LXD 5.0 (its own LXD_DIR, started and
 * stopped here; `lxq --remote` on that LXD too), `lxq list` with many instances, and the latency
 * from a change made by another process to the `lifecycle` event here.
 * `node dist/bench/cli.js [--quick]` (after `npm run build`).
 */
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import { Host, type LifecycleEvent } from '../lib';
import { lxdBin, startLxdFixture } from '../test/helpers/lxd';
import { stats } from './stats';

const quick = process.argv.includes('--quick');
const IMAGES = process.env.LXQ_IMAGES ?? '/var/tmp/lxq-test-images';
const CLI = path.join(__dirname, '..', 'lib', 'cli', 'main.js');

function timeRuns(n: number, run: () => void): number[] {
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const t0 = process.hrtime.bigint();
    run();
    out.push(Number(process.hrtime.bigint() - t0) / 1e6);
  }
  return out;
}

interface Sample {
  wall: number;
  cpu: number;
}
/** `m0.096s` as ms. */
const seconds = (t: string) => ((m) => (m ? Number(m[1]) * 60_000 + Number(m[2]) * 1000 : NaN))(/^(\d+)m([\d.]+)s$/.exec(t));
/**
 * One run of `argv` under bash (A and B alike): wall ms, and the command's cpu ms (user + system
 * of it and its children, from bash's `times`, the steadier figure on a loaded machine).
 */
function measured(argv: string[], env: NodeJS.ProcessEnv = process.env): Sample {
  const t0 = process.hrtime.bigint();
  const out = execFileSync('bash', ['-c', '"$@" >/dev/null 2>&1 </dev/null; s=$?; times; exit $s', 'bash', ...argv], { env }).toString();
  const wall = Number(process.hrtime.bigint() - t0) / 1e6;
  const children = out.trim().split('\n')[1].split(' ');
  return { wall, cpu: seconds(children[0]) + seconds(children[1]) };
}
/** A and B in turn, n times each after one warm-up; each one's samples and the pair-by-pair ratios A/B. */
function pairs(n: number, a: () => Sample, b: () => Sample): { a: Sample[]; b: Sample[]; wall: number[]; cpu: number[] } {
  a();
  b();
  const as: Sample[] = [];
  const bs: Sample[] = [];
  for (let i = 0; i < n; i++) {
    as.push(a());
    bs.push(b());
  }
  return { a: as, b: bs, wall: as.map((x, i) => x.wall / bs[i].wall), cpu: as.map((x, i) => x.cpu / bs[i].cpu) };
}
const ratio = (xs: number[]) => ((s) => `${s.p50.toFixed(2)} (${s.min.toFixed(2)}–${s.max.toFixed(2)})`)(stats(xs));
const fmt = (label: string, xs: number[]) => {
  const s = stats(xs);
  console.log(`| ${label} | ${s.p50.toFixed(1)} | ${s.p99.toFixed(1)} | ${s.n} |`);
  return s;
};

async function main(): Promise<void> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'lxq-bench-cli-'));
  const host = await Host.open({ path: dir, images: IMAGES, reap: true });
  const lxq = (...args: string[]) => execFileSync(process.execPath, [CLI, '--host', dir, '--images', IMAGES, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  try {
    const c = await host.create('bench-exec', { image: 'busybox' });
    await c.start();
    const n = quick ? 3 : 20;
    const node = () => measured([process.execPath, '-e', '0']);
    const cli = (env: NodeJS.ProcessEnv, ...args: string[]) => () => measured([process.execPath, CLI, '--host', dir, '--images', IMAGES, ...args], env);
    const full = { ...process.env, LXQ_NO_QUICK: '1' };
    console.log(`start-up against \`node -e 0\` (${n} pairs in turn, median (min–max) of the pair-by-pair ratios; load ${os.loadavg()[0].toFixed(1)}):\n`);
    console.log('| command | wall p50 ms | cpu p50 ms | wall / node | cpu / node |\n|---|---|---|---|---|');
    let nodeRuns: Sample[] = [];
    const startUp: Record<string, ReturnType<typeof pairs>> = {};
    for (const [label, run] of [
      ['`lxq list` (quick path)', cli(process.env, 'list')],
      ['`lxq list` (whole CLI, `LXQ_NO_QUICK=1`)', cli(full, 'list')],
      ['`lxq exec NAME -- true` (quick path)', cli(process.env, 'exec', c.name, '--', 'true')],
      ['`lxq exec NAME -- true` (whole CLI)', cli(full, 'exec', c.name, '--', 'true')],
      ['`lxq --version`', cli(process.env, '--version')],
    ] as const) {
      const p = (startUp[label] = pairs(n, run, node));
      nodeRuns = [...nodeRuns, ...p.b];
      console.log(`| ${label} | ${stats(p.a.map((x) => x.wall)).p50.toFixed(1)} | ${stats(p.a.map((x) => x.cpu)).p50.toFixed(1)} | ${ratio(p.wall)} | ${ratio(p.cpu)} |`);
    }
    console.log(`| \`node -e 0\` | ${stats(nodeRuns.map((x) => x.wall)).p50.toFixed(1)} | ${stats(nodeRuns.map((x) => x.cpu)).p50.toFixed(1)} | 1 | 1 |`);
    console.log(`\nload after: ${os.loadavg()[0].toFixed(1)}\n`);
    console.log('| what (wall ms) | p50 | p99 | n |\n|---|---|---|---|');
    const mine = fmt('`lxq exec NAME -- true`', startUp['`lxq exec NAME -- true` (quick path)'].a.map((x) => x.wall));
    const peer = fmt('`lxc-attach -P … -n NAME -- true`', Array.from({ length: n }, () => measured(['lxc-attach', '-P', host.instancesDir, '-n', c.name, '--', 'true']).wall));
    const lxd = await lxdExec(n, lxq);
    const count = quick ? 5 : 100;
    for (let i = 1; i < count; i++) await host.create(`bench-list-${i}`, { image: 'busybox' });
    fmt(`\`lxq list\` (${count} instances, 1 running)`, timeRuns(quick ? 2 : 10, () => lxq('list')));

    // Event latency: another Node process changes an instance; `at` is when it reported it.
    const latencies: number[] = [];
    const onEvent = (e: LifecycleEvent) => e.requestor === 'external' && e.action === 'instance-updated' && latencies.push(Date.now() - Date.parse(e.at));
    await host.on('lifecycle', onEvent);
    const updates = quick ? 10 : 200;
    const script = `const { Host } = require(${JSON.stringify(path.join(__dirname, '..', 'lib'))});
      (async () => { const h = await Host.open({ path: ${JSON.stringify(dir)}, images: ${JSON.stringify(IMAGES)} }); const c = await h.get('bench-exec');
        for (let i = 0; i < ${updates}; i++) { await c.update({ 'user.n': String(i) }); await new Promise((r) => setTimeout(r, 5)); } })();`;
    await new Promise((r) => spawn(process.execPath, ['-e', script], { stdio: 'inherit' }).on('close', r));
    await new Promise((r) => setTimeout(r, 200));
    host.off('lifecycle', onEvent);
    fmt('lifecycle event latency, a change by another process (ms, `at` to here)', latencies);
    console.log(`exec ratio lxq/lxc-attach (p50): ${(mine.p50 / peer.p50).toFixed(2)}`);
    if (lxd) console.log(`exec ratio lxq/lxc exec (p50): ${(mine.p50 / lxd.p50).toFixed(2)}`);
  } finally {
    for (const i of await host.list()) await i.delete({ force: true }).catch(() => undefined);
    await host.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

/** `lxc exec NAME -- true` (LXD's own client) and `lxq --remote SOCKET exec NAME -- true` on a busybox container of a private LXD. */
async function lxdExec(n: number, lxq: (...args: string[]) => Buffer): Promise<ReturnType<typeof stats> | undefined> {
  if (!lxdBin()) return void console.log('| `lxc exec` | skipped: lxd is not installed | | |');
  const lxd = await startLxdFixture('lxq-bench-lxd-', { pool: 'lxq-bench', profile: 'default', alias: 'busybox' });
  try {
    await lxd.client.call('POST', '/1.0/instances', { name: 'bench-exec', type: 'container', source: { type: 'image', alias: 'busybox' } });
    await lxd.client.call('PUT', '/1.0/instances/bench-exec/state', { action: 'start', timeout: 30 });
    const env = { ...process.env, LXD_DIR: lxd.daemon.lxdDir };
    const s = fmt('`lxc exec NAME -- true` (LXD 5.0)', Array.from({ length: n }, () => measured(['lxc', 'exec', 'bench-exec', '--', 'true'], env).wall));
    fmt('`lxq --remote SOCKET exec NAME -- true` (same LXD)', timeRuns(n, () => lxq('--remote', lxd.daemon.socket, 'exec', 'bench-exec', '--', 'true')));
    return s;
  } finally {
    await lxd.client.call('PUT', '/1.0/instances/bench-exec/state', { action: 'stop', force: true }).catch(() => undefined);
    await lxd.client.call('DELETE', '/1.0/instances/bench-exec').catch(() => undefined);
    await lxd.stop();
  }
}

void main().then(() => process.exit(0), (e) => {
  console.error(e);
  process.exit(1);
});
