/**
 * lxq over LXD (Host.connect, lib/remote) against the raw REST calls of bench/peers/lxd.ts on the
 * same daemon, side by side in one run: a private Debian LXD 5.0 (its own LXD_DIR, a `dir` pool,
 * a profile without NIC, lxq's busybox as an image), each side on its own fresh container per
 * round, in lockstep: every operation done by one side and then the other, the order alternating.
 *   create   host.create()                  vs POST /1.0/instances + operation wait
 *   start    instance.start()               vs PUT …/state start + wait
 *   status   instance.status()              vs GET /1.0/instances/<name>
 *   state    instance.state()               vs GET …/state
 *   exec     instance.exec(['/bin/true'])   vs POST …/exec (no websockets, /dev/null for output) + wait,
 *            and vs the same exec with its output on websockets (what a client needs to see output)
 *   stop     instance.stop({ force: true }) vs PUT …/state stop force + wait
 *   delete   instance.delete()              vs DELETE + wait
 * plus exec streaming 10 MiB to stdout: lxq's exec against `lxc exec` of the same container.
 * Usage: node dist/bench/remote.js [--quick]
 */
import { spawn } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import WebSocket from 'ws';

import { Host } from '../lib';
import type { RemoteHost } from '../lib/drivers/remote';
import { LxdClient } from '../lib/drivers/remote/client';
import { ensureBusyboxImage, ensurePool, ensureProfile, LxdDaemon, lxdBin, startLxd } from '../test/helpers/lxd';
import { stats, time } from './stats';

const POOL = 'lxq-bench-remote';
const PROFILE = 'lxq-bench-remote';
const ALIAS = 'lxq-bench-remote-busybox';
const STREAM_BYTES = 10 * 2 ** 20;
const OPS = ['create', 'start', 'status', 'state', 'exec', 'stop', 'delete'] as const;
type Op = (typeof OPS)[number];

type Samples = Record<Op | 'exec (output on websockets)', number[]>;
const empty = (): Samples => ({ create: [], start: [], status: [], state: [], exec: [], 'exec (output on websockets)': [], stop: [], delete: [] });

/** One side's container and its operations, each checked (a fast wrong answer is not a result). */
type Side = Record<Op, () => Promise<unknown>> & { samples: Samples; extra?: () => Promise<unknown> };

function lxqSide(host: RemoteHost, name: string, samples: Samples): Side {
  let i!: Awaited<ReturnType<RemoteHost['create']>>;
  return {
    samples,
    create: async () => (i = await host.create(name, { image: ALIAS, profiles: [PROFILE] })),
    start: () => i.start(),
    status: async () => {
      if ((await i.status()) !== 'running') throw new Error(`${name} is not running`);
    },
    state: () => i.state(),
    exec: async () => {
      if ((await i.exec(['/bin/true'])).exitCode !== 0) throw new Error('exec /bin/true failed');
    },
    stop: () => i.stop({ force: true }),
    delete: () => i.delete(),
  };
}

/** The raw REST peer's calls (bench/peers/lxd.ts), plus an exec with its output on websockets. */
function rawSide(c: LxdClient, name: string, samples: Samples): Side {
  const inst = `/1.0/instances/${name}`;
  return {
    samples,
    create: () => c.call('POST', '/1.0/instances', { name, type: 'container', source: { type: 'image', alias: ALIAS }, profiles: [PROFILE] }),
    start: () => c.call('PUT', `${inst}/state`, { action: 'start', timeout: 30 }),
    status: async () => {
      if ((await c.request('GET', inst)).metadata.status !== 'Running') throw new Error(`${name} is not Running`);
    },
    state: () => c.request('GET', `${inst}/state`),
    exec: async () => {
      const op = await c.call('POST', `${inst}/exec`, { command: ['/bin/true'], environment: {}, 'wait-for-websocket': false, interactive: false, 'record-output': false });
      if (op.metadata?.return !== 0) throw new Error('exec /bin/true failed');
    },
    extra: () => rawWsExec(c, inst, ['/bin/true']),
    stop: () => c.call('PUT', `${inst}/state`, { action: 'stop', force: true }),
    delete: () => c.call('DELETE', inst),
  };
}

/**
 * Both sides in lockstep: each operation is done by one side and then the other (the order
 * alternating), so that the load of the moment weighs on both alike.
 */
async function round(sides: Side[], n: number, r: number): Promise<void> {
  const both = async (op: Op, k: number) => {
    for (const side of (r + k) % 2 ? [...sides].reverse() : sides) side.samples[op].push(await time(side[op]));
  };
  await both('create', 0);
  await both('start', 0);
  for (let k = 0; k < n; k++) {
    await both('status', k);
    await both('state', k);
    await both('exec', k);
    for (const side of sides) if (side.extra) side.samples['exec (output on websockets)'].push(await time(side.extra));
  }
  await both('stop', 0);
  await both('delete', 0);
}

/** A hand-written websocket exec, the least a client that sees the output does: connect the four sockets, close stdin, wait. */
async function rawWsExec(c: LxdClient, inst: string, command: string[]): Promise<void> {
  const r = await c.request('POST', `${inst}/exec`, { command, environment: {}, 'wait-for-websocket': true, interactive: false, 'record-output': false });
  const op = r.operation!.split('?')[0];
  const fds = r.metadata.metadata.fds as Record<string, string>;
  const socks = await Promise.all(['control', '0', '1', '2'].map((fd) => new Promise<WebSocket>((resolve, reject) => {
    const ws = new WebSocket(c.websocketUrl(`${op}/websocket?secret=${fds[fd]}`), c.websocketOptions());
    ws.once('open', () => resolve(ws));
    ws.once('error', reject);
  })));
  socks[1].send('', { binary: false }, () => socks[1].close());
  for (const ws of socks.slice(2)) ws.on('message', (d: Buffer, bin: boolean) => !bin && d.length === 0 && ws.close());
  const done = await c.wait(r, 'exec');
  if (done.metadata?.return !== 0) throw new Error('exec failed');
  socks[0].close();
}

function lxcExec(lxdDir: string, name: string, script: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const child = spawn('lxc', ['exec', name, '--', 'sh', '-c', script], { env: { ...process.env, LXD_DIR: lxdDir }, stdio: ['ignore', 'pipe', 'inherit'] });
    let bytes = 0;
    child.stdout.on('data', (d: Buffer) => (bytes += d.length));
    child.on('error', reject);
    child.on('close', (code) => (code === 0 ? resolve(bytes) : reject(new Error(`lxc exec: exit ${code}`))));
  });
}

const ms = (x: number) => (x < 100 ? x.toFixed(2) : x.toFixed(1));

async function main(quick: boolean): Promise<void> {
  if (!lxdBin()) {
    console.log('skipped: lxd is not installed (apt-get install lxd)');
    return;
  }
  const rounds = quick ? 3 : 20;
  const n = quick ? 5 : 20;
  const dir = mkdtempSync(path.join(os.tmpdir(), 'lxq-bench-remote-'));
  chmodSync(dir, 0o711);
  let daemon: LxdDaemon | undefined;
  let client: LxdClient | undefined;
  let host: RemoteHost | undefined;
  const lxq = empty();
  const raw = empty();
  const stream = { lxq: [] as number[], lxc: [] as number[] };
  // Runs whose output came back short (bytes received): reported, not hidden.
  const short = { lxq: [] as number[], lxc: [] as number[] };
  try {
    daemon = await startLxd(path.join(dir, 'lxd'), path.join(dir, 'log'));
    client = new LxdClient({ socket: daemon.socket });
    await ensurePool(client, POOL, 'lxq bench/remote.ts');
    await ensureProfile(client, PROFILE, POOL, 'lxq bench/remote.ts');
    await ensureBusyboxImage(client, ALIAS, dir);
    host = await Host.connect({ socket: daemon.socket });
    // Warm-up, discarded: the first container from an image unpacks it into the pool.
    await round([rawSide(client, `bw-raw-${process.pid}`, empty()), lxqSide(host, `bw-lxq-${process.pid}`, empty())], 1, 0);
    for (let r = 0; r < rounds; r++) {
      process.stderr.write(`round ${r + 1}/${rounds}\n`);
      await round([rawSide(client, `br-raw-${process.pid}-${r}`, raw), lxqSide(host, `br-lxq-${process.pid}-${r}`, lxq)], n, r);
    }
    const name = `br-stream-${process.pid}`;
    const i = await host.create(name, { image: ALIAS, profiles: [PROFILE] });
    await i.start();
    const script = `head -c ${STREAM_BYTES} /dev/zero`;
    for (let r = 0; r < rounds; r++) {
      const pair = [
        async () => stream.lxq.push(await time(async () => {
          const out = await i.exec(['sh', '-c', script]);
          if (out.exitCode !== 0) throw new Error(`lxq exec: exit ${out.exitCode}`);
          if (out.stdout.length !== STREAM_BYTES) short.lxq.push(out.stdout.length);
        })),
        async () => stream.lxc.push(await time(async () => {
          const bytes = await lxcExec(daemon!.lxdDir, name, script);
          if (bytes !== STREAM_BYTES) short.lxc.push(bytes);
        })),
      ];
      if (r % 2) pair.reverse();
      for (const f of pair) await f();
    }
    await i.delete({ force: true });
  } finally {
    for (const inst of (await host?.list().catch(() => [])) ?? []) await inst.delete({ force: true }).catch(() => undefined);
    host?.close();
    client?.close();
    await daemon?.stop();
    rmSync(dir, { recursive: true, force: true });
  }
  const cpu = os.cpus()[0]?.model.trim() ?? 'unknown';
  console.log(`lxq over LXD vs raw REST, ms (p50). ${os.cpus().length} CPUs (${cpu}), Node ${process.version}, load ${os.loadavg().map((l) => l.toFixed(2)).join(' ')}, ${new Date().toISOString()}, ${rounds} rounds, n=${n}; \`node dist/bench/remote.js${quick ? ' --quick' : ''}\`\n`);
  console.log('| operation | n | raw REST p50 | lxq p50 | lxq / raw (p50s) | lxq / raw (median of paired runs) | lxq min | raw min |');
  console.log('|---|---:|---:|---:|---:|---:|---:|---:|');
  const row = (label: string, xs: number[], ys: number[]) => {
    const a = stats(xs);
    const b = stats(ys);
    // The k-th runs of both sides were made back to back (lockstep), so their ratio cancels the load of that moment.
    const paired = stats(xs.map((x, k) => x / ys[k])).p50;
    console.log(`| ${label} | ${a.n} | ${ms(b.p50)} | ${ms(a.p50)} | ${(a.p50 / b.p50).toFixed(2)}× | ${paired.toFixed(2)}× | ${ms(a.min)} | ${ms(b.min)} |`);
  };
  for (const op of OPS) row(op, lxq[op], raw[op]);
  row('exec vs raw exec with output on websockets', lxq.exec, raw['exec (output on websockets)']);
  const x = stats(stream.lxq);
  const y = stats(stream.lxc);
  console.log(`\n| exec streaming 10 MiB to stdout | n | \`lxc exec\` p50 | lxq p50 | lxq / lxc exec | lxq MiB/s | lxc exec MiB/s |`);
  console.log('|---|---:|---:|---:|---:|---:|---:|');
  console.log(`| sh -c 'head -c 10M /dev/zero' | ${x.n} | ${ms(y.p50)} | ${ms(x.p50)} | ${(x.p50 / y.p50).toFixed(2)}× | ${(10 / (x.p50 / 1000)).toFixed(0)} | ${(10 / (y.p50 / 1000)).toFixed(0)} |`);
  for (const [who, xs] of Object.entries(short)) if (xs.length) console.log(`\n${who}: output short in ${xs.length} of ${rounds} runs (${xs.join(', ')} of ${STREAM_BYTES} bytes)`);
}

main(process.argv.includes('--quick')).catch((e) => {
  console.error(e);
  process.exit(1);
});
