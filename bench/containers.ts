/**
 * The container lifecycle, side by side: lxq against the ways a program would otherwise drive
 * liblxc, each on its own fresh busybox container, interleaved in rounds in one run.
 *   liblxc C       bench/peers/lxc-ops.c, the floor (liblxc calls, nothing else)
 *   python3-lxc    Debian's binding, bench/peers/lxc-ops.py
 *   lxc-* CLI      the lxc-* tools spawned from Node (execFile)
 *   LXD 5.0        its REST API on its unix socket, where lxd is installed (bench/peers/lxd.ts)
 *   lxq            the Instance API, in this process
 * plus any `extraPeers`. The cycle is the one of bench/peers/peer.ts.
 * Usage: node dist/bench/containers.js [--quick]
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmdirSync, rmSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';

import { Host } from '../lib';
import { lxc } from '../lib/native/lxc';
import { Stats, stats } from './stats';
import { LxcCliPeer } from './peers/cli';
import { LiblxcCPeer } from './peers/liblxc-c';
import { LxdPeer } from './peers/lxd';
import { LxqPeer } from './peers/lxq';
import { CONTAINER_OPS, ContainerOp, ContainerPeer, PeerContext, Samples } from './peers/peer';
import { PythonLxcPeer } from './peers/python';

const run = promisify(execFile);
const FLOOR = 'liblxc C';

export interface ContainerBenchOptions {
  /** One round and n = 3 (instead of 5 rounds and n = 20). */
  quick?: boolean;
  rounds?: number;
  /** Repetitions of state, exec and freeze/unfreeze per cycle. */
  n?: number;
  /** More peers (an LXD peer, …), run after the built-in ones. */
  extraPeers?: ContainerPeer[];
  /** Progress lines (default: stderr); the tables are returned, and printed by the CLI. */
  log?: (line: string) => void;
}

export interface PeerResult {
  label: string;
  /** Why the peer did not run here, or null. */
  skipped: string | null;
  samples: Samples;
  stats: Partial<Record<ContainerOp, Stats>>;
}

export interface ContainerBenchResult {
  header: string;
  meta: { cpus: number; cpuModel: string; node: string; liblxc: string; loadavg: number[]; date: string; command: string };
  rounds: number;
  n: number;
  peers: PeerResult[];
}

export async function main(opts: ContainerBenchOptions = {}): Promise<ContainerBenchResult> {
  const rounds = opts.rounds ?? (opts.quick ? 1 : 5);
  const n = opts.n ?? (opts.quick ? 3 : 20);
  const log = opts.log ?? ((line: string) => process.stderr.write(line + '\n'));
  const meta = {
    cpus: os.cpus().length,
    cpuModel: os.cpus()[0]?.model.trim() ?? 'unknown',
    node: process.version,
    liblxc: lxc().liblxcVersion,
    loadavg: os.loadavg().map((l) => Math.round(l * 100) / 100),
    date: new Date().toISOString(),
    command: ['node', ...process.argv.slice(1).map((a, i) => (i === 0 ? path.relative(process.cwd(), a) || a : a))].join(' '),
  };
  const header =
    `${meta.cpus} CPUs (${meta.cpuModel}), Node ${meta.node}, liblxc ${meta.liblxc}, load ${meta.loadavg.join(' ')}, ${meta.date}, ` +
    `${rounds} round(s), n=${n}; \`${meta.command}\``;

  const dir = mkdtempSync(path.join(os.tmpdir(), 'lxq-bench-containers-'));
  const scratch = path.join(dir, 'scratch');
  mkdirSync(scratch);
  const prefix = `bp-${process.pid}-${randomBytes(2).toString('hex')}`;
  const used: string[] = [];
  const peers: ContainerPeer[] = [];
  let host: Host | undefined;
  let interrupted = false;
  const onSignal = () => {
    interrupted = true;
    log('interrupted: stopping after this cycle and cleaning up');
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    host = await Host.open({ path: dir, images: process.env.LXQ_TEST_IMAGES ?? '/var/tmp/lxq-test-images', reap: true });
    const template = `${prefix}-tpl`;
    used.push(template);
    await host.create(template, { image: 'busybox' }); // stopped, never started: the peers clone it
    const ctx: PeerContext = { lxcpath: host.instancesDir, template, scratch };
    peers.push(new LiblxcCPeer(), new PythonLxcPeer(), new LxcCliPeer(), new LxdPeer(), new LxqPeer(host), ...(opts.extraPeers ?? []));

    const results: PeerResult[] = [];
    const usable: Array<{ peer: ContainerPeer; result: PeerResult; index: number }> = [];
    for (const [index, peer] of peers.entries()) {
      const skipped = await peer.check(ctx).catch((e: Error) => `check failed: ${e.message}`);
      const result: PeerResult = { label: peer.label, skipped, samples: {}, stats: {} };
      results.push(result);
      if (skipped) log(`skipped: ${peer.label}: ${skipped}`);
      else usable.push({ peer, result, index });
    }

    let cycles = 0;
    const cycle = async (u: (typeof usable)[number]): Promise<Samples> => {
      if (interrupted) throw new Error('interrupted');
      const name = `${prefix}-p${u.index}-${cycles++}`;
      used.push(name);
      return u.peer.cycle(ctx, name, n);
    };
    for (const u of usable) {
      log(`warm-up: ${u.peer.label}`);
      await cycle(u); // discarded
    }
    for (let r = 0; r < rounds; r++) {
      log(`round ${r + 1}/${rounds}`);
      // Every peer once per round; the order rotates so that no peer always follows the same one.
      for (let k = 0; k < usable.length; k++) {
        const u = usable[(r + k) % usable.length];
        const got = await cycle(u);
        for (const op of CONTAINER_OPS) if (got[op]) (u.result.samples[op] ??= []).push(...got[op]!);
      }
    }
    for (const { result } of usable) {
      for (const op of CONTAINER_OPS) {
        const xs = result.samples[op];
        if (xs?.length) result.stats[op] = stats(xs);
      }
    }
    return { header, meta, rounds, n, peers: results };
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    await cleanUp(host, dir, used, log);
    removeEmptyCgroups(prefix);
    for (const peer of peers) await peer.close?.().catch((e: Error) => log(`cleanup: ${peer.label}: close: ${e.message}`));
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Removes every container of the run that is still there: lxq's through lxq, the peers' through the lxc-* tools. */
async function cleanUp(host: Host | undefined, dir: string, names: string[], log: (line: string) => void): Promise<void> {
  const lxcpath = path.join(dir, 'instances');
  for (const name of names) {
    if (!existsSync(path.join(lxcpath, name))) continue;
    const instance = host ? await host.get(name).catch(() => undefined) : undefined;
    if (instance) {
      await instance.delete({ force: true }).catch((e: Error) => log(`cleanup: ${name}: ${e.message}`));
    } else {
      await run('lxc-stop', ['-P', lxcpath, '-n', name, '-k']).catch(() => undefined); // fails when already stopped
      await run('lxc-destroy', ['-P', lxcpath, '-n', name]).catch((e: Error) => log(`cleanup: ${name}: lxc-destroy: ${e.message.trim()}`));
    }
    if (existsSync(path.join(lxcpath, name))) rmSync(path.join(lxcpath, name), { recursive: true, force: true });
  }
}

/**
 * liblxc 5.0.2's daemonized start through the API moves the calling process into the new
 * monitor cgroup, so the monitor cannot remove it when the container stops (EBUSY, in
 * lxc.log): lxc-ops and lxc-ops.py leave two empty `lxc.monitor.<name>[-N]` per cycle. Only
 * empty cgroups of this run go; rmdir refuses the rest.
 */
function removeEmptyCgroups(prefix: string): void {
  const root = '/sys/fs/cgroup';
  const ours = (d: string) => d.startsWith(`lxc.monitor.${prefix}-`) || d.startsWith(`lxc.payload.${prefix}-`);
  const dirs = (p: string) => {
    try {
      return readdirSync(p, { withFileTypes: true }).filter((d) => d.isDirectory());
    } catch {
      return [];
    }
  };
  const top = dirs(root);
  for (const hierarchy of [root, ...top.filter((d) => !ours(d.name)).map((d) => path.join(root, d.name))]) {
    for (const d of dirs(hierarchy)) {
      if (!ours(d.name)) continue;
      try {
        rmdirSync(path.join(hierarchy, d.name));
      } catch {
        // busy: a process is still in it
      }
    }
  }
}

function ms(x: number): string {
  return x < 100 ? x.toFixed(2) : x < 1000 ? x.toFixed(1) : x.toFixed(0);
}

/** One markdown table per operation: a row per peer, p50 ratios against the C floor and the best other peer. */
export function formatResults(res: ContainerBenchResult): string {
  const lines = [`Container lifecycle, ms. ${res.header}`, ''];
  const ran = res.peers.filter((p) => !p.skipped);
  for (const p of res.peers) if (p.skipped) lines.push(`skipped: ${p.label}: ${p.skipped}`);
  if (ran.length < res.peers.length) lines.push('');
  for (const op of CONTAINER_OPS) {
    const rows = ran.filter((p) => p.stats[op]);
    if (!rows.length) continue;
    const floor = res.peers.find((p) => p.label === FLOOR)?.stats[op];
    lines.push(`### ${op}`, '', '| peer | n | min | p50 | p99 | p50 vs C floor | p50 vs best other peer |', '|---|---:|---:|---:|---:|---:|---|');
    for (const p of rows) {
      const s = p.stats[op]!;
      const others = rows.filter((o) => o !== p).map((o) => ({ label: o.label, p50: o.stats[op]!.p50 }));
      const best = others.reduce<{ label: string; p50: number } | undefined>((a, b) => (!a || b.p50 < a.p50 ? b : a), undefined);
      const vsFloor = floor && p.label !== FLOOR ? `${(s.p50 / floor.p50).toFixed(2)}×` : p.label === FLOOR ? '1.00×' : '';
      const vsBest = best ? `${(s.p50 / best.p50).toFixed(2)}× (${best.label})` : '';
      lines.push(`| ${p.label} | ${s.n} | ${ms(s.min)} | ${ms(s.p50)} | ${ms(s.p99)} | ${vsFloor} | ${vsBest} |`);
    }
    lines.push('');
  }
  return lines.join('\n');
}

if (require.main === module) {
  main({ quick: process.argv.includes('--quick') }).then(
    (res) => console.log(formatResults(res)),
    (e) => {
      console.error(e);
      process.exit(1);
    },
  );
}
