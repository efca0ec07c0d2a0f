/**
 * Scale: does lxq's per-container cost stay flat as the number of containers grows?
 *
 * For N in 10, 50, 100 (--quick: 5, 10), twice — one container at a time ("sequential"), then
 * 8 at a time through a small pool ("pool 8") — on a fresh set of busybox containers:
 *   create N, start all, exec /bin/true once in each, host.list() with N present (the first call,
 *   then the median of 5 more, then once from a freshly opened Host as a new process would),
 *   state() of each, stop all ({ force: true }), delete all.
 * Reported per phase: total and per-container ms, and the per-container ratio largest N / smallest N.
 * Memory: the Node process (rss, heapUsed after a GC, open fds) before, with N running and after
 * delete; each running container's cgroup memory (state().memory.usageBytes, median); host
 * processes per running container (its `[lxc monitor]` plus what runs inside it) and the
 * monitor's own PSS.
 * Usage: node dist/bench/scale.js [--quick] [--sizes 10,50,100]
 */
import { mkdtempSync, promises as fs, readdirSync, readFileSync, rmSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

import { Host, Instance } from '../lib';
import { Stats, stats } from './stats';

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

export const PHASES = ['create', 'start', 'exec', 'list', 'state', 'stop', 'delete'] as const;
export type Phase = (typeof PHASES)[number];
export type Mode = 'sequential' | 'pool 8';
const LIST_REPEATS = 5;

export interface NodeMem {
  rss: number;
  heapUsed: number;
  fds: number;
  threads: number;
}

export interface ScaleRun {
  n: number;
  mode: Mode;
  /** Total wall ms per phase. */
  total: Record<Phase, number>;
  list: { first: number; median: number; freshHost: number; count: number };
  mem: { before: NodeMem; running: NodeMem; after: NodeMem };
  /** cgroup memory of each running container, bytes. */
  containerMem: Stats;
  /** Processes inside each running container (its pids cgroup). */
  containerProcs: Stats;
  /** `[lxc monitor]` processes of this host's lxcpath while all N run. */
  monitors: number;
  /** PSS of one monitor, KiB. */
  monitorPssKiB: Stats;
  /** Host processes in these containers' cgroups (lxc.monitor.<name> and lxc.payload.<name>), all N running. */
  hostProcs: { monitor: number; payload: number };
  /** Every process on the machine: the difference between all N running and before create (other tenants add noise). */
  hostProcsDelta: number;
  /** Each call of a phase, ms (in pool 8 a call includes its wait behind the other 7). */
  calls: Record<Phase, Stats>;
  /** kernel.pty.nr with all N running: every container's console is a pty of the host. */
  ptys: number;
}

function nodeMem(): NodeMem {
  gc();
  const m = process.memoryUsage();
  return {
    rss: m.rss,
    heapUsed: m.heapUsed,
    fds: readdirSync('/proc/self/fd').length,
    threads: Number(/Threads:\s+(\d+)/.exec(readFileSync('/proc/self/status', 'utf8'))?.[1] ?? 0),
  };
}

/** cmdline of every process, by pid (processes that exit meanwhile are skipped). */
function processes(): Map<number, string> {
  const out = new Map<number, string>();
  for (const p of readdirSync('/proc')) {
    if (!/^\d+$/.test(p)) continue;
    try {
      out.set(Number(p), readFileSync(`/proc/${p}/cmdline`, 'utf8').replace(/\0/g, ' ').trim());
    } catch {
      /* gone */
    }
  }
  return out;
}

/** Of `pids`, how many sit in the monitor and in the payload cgroups of the containers `names` (by the pids controller's path). */
function containerProcesses(pids: number[], names: Set<string>): { monitor: number; payload: number } {
  const out = { monitor: 0, payload: 0 };
  for (const pid of pids) {
    let cg: string;
    try {
      cg = readFileSync(`/proc/${pid}/cgroup`, 'utf8');
    } catch {
      continue;
    }
    const m = /^\d+:(?:[^:]*,)?pids(?:,[^:]*)?:\/lxc\.(monitor|payload)\.([^/\n]+)/m.exec(cg) ?? /^0::\/lxc\.(monitor|payload)\.([^/\n]+)/m.exec(cg);
    if (m && names.has(m[2])) out[m[1] as 'monitor' | 'payload']++;
  }
  return out;
}

function pssKiB(pid: number): number {
  try {
    return Number(/^Pss:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8'))?.[1] ?? NaN);
  } catch {
    return NaN;
  }
}

/** Runs `fn` over `items`, at most `width` at a time, in order of start; the first error wins. */
async function pool<T>(items: T[], width: number, fn: (item: T) => Promise<unknown>): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < items.length) await fn(items[next++]);
  };
  await Promise.all(Array.from({ length: Math.min(width, items.length) }, worker));
}

const median = (xs: number[]) => stats(xs).p50;

async function runOnce(host: Host, n: number, mode: Mode, tag: string, made: Set<Instance>): Promise<ScaleRun> {
  const width = mode === 'sequential' ? 1 : 8;
  const total = {} as Record<Phase, number>;
  const calls = {} as Record<Phase, number[]>;
  /** Runs `fn` over `items` in the mode's pool, timing the phase and each call. */
  const phase = async <T>(name: Phase, items: T[], fn: (item: T) => Promise<unknown>) => {
    const each: number[] = (calls[name] = []);
    const t0 = performance.now();
    await pool(items, width, async (item) => {
      const t = performance.now();
      await fn(item);
      each.push(performance.now() - t);
    });
    total[name] = performance.now() - t0;
  };
  const names = Array.from({ length: n }, (_, i) => `sc-${process.pid}-${tag}-${i}`);
  const procsBefore = processes().size;
  const before = nodeMem();

  const list: Instance[] = [];
  await phase('create', names, async (name) => {
    const c = await host.create(name, { image: 'busybox' });
    made.add(c);
    list.push(c);
  });
  list.sort((a, b) => a.name.localeCompare(b.name));
  await phase('start', list, (c) => c.start());
  await phase('exec', list, async (c) => {
    const r = await c.exec(['/bin/true']);
    if (r.exitCode !== 0) throw new Error(`/bin/true in ${c.name} exited ${r.exitCode}`);
  });

  let listed: Instance[] = [];
  await phase('list', [0], async () => {
    listed = await host.list();
  });
  const ours = listed.filter((c) => c.name.startsWith(`sc-${process.pid}-${tag}-`)).length;
  if (ours !== n) throw new Error(`host.list() found ${ours} of the ${n} containers`);
  const repeats: number[] = [];
  for (let i = 0; i < LIST_REPEATS; i++) {
    const t = performance.now();
    await host.list();
    repeats.push(performance.now() - t);
  }
  const fresh = await Host.open({ path: host.path, images: host.images.dir });
  const tf = performance.now();
  await fresh.list();
  const freshHost = performance.now() - tf;

  const memBytes: number[] = [];
  const inside: number[] = [];
  await phase('state', list, async (c) => {
    const s = await c.state();
    if (s.status !== 'running') throw new Error(`${c.name} is ${s.status}, not running`);
    memBytes.push(s.memory.usageBytes ?? NaN); // the local driver always has a figure
    inside.push(s.processes);
  });
  const running = nodeMem();
  const ptys = Number(readFileSync('/proc/sys/kernel/pty/nr', 'utf8'));
  const procs = processes();
  const monitorPids = [...procs].filter(([, cmd]) => cmd.startsWith('[lxc monitor]') && cmd.includes(host.instancesDir)).map(([pid]) => pid);
  const monitorPss = monitorPids.map(pssKiB).filter((x) => !Number.isNaN(x));
  const ownProcs = containerProcesses([...procs.keys()], new Set(names));

  await phase('stop', list, (c) => c.stop({ force: true }));
  await phase('delete', list, async (c) => {
    await c.delete();
    made.delete(c);
  });
  const after = nodeMem();
  return {
    n,
    mode,
    total,
    calls: Object.fromEntries(PHASES.map((p) => [p, stats(calls[p])])) as Record<Phase, Stats>,
    list: { first: total.list, median: median(repeats), freshHost, count: listed.length },
    mem: { before, running, after },
    containerMem: stats(memBytes),
    containerProcs: stats(inside),
    monitors: monitorPids.length,
    monitorPssKiB: stats(monitorPss),
    hostProcs: ownProcs,
    hostProcsDelta: procs.size - procsBefore,
    ptys,
  };
}

export interface ScaleResult {
  runs: ScaleRun[];
  load: { start: number[]; end: number[] };
  limits: Record<string, string>;
}

function limits(): Record<string, string> {
  const read = (f: string) => {
    try {
      return readFileSync(f, 'utf8').trim();
    } catch {
      return '?';
    }
  };
  const nofile = /Max open files\s+(\S+)\s+(\S+)/.exec(read('/proc/self/limits'));
  const nproc = /Max processes\s+(\S+)\s+(\S+)/.exec(read('/proc/self/limits'));
  return {
    'open files (soft/hard)': nofile ? `${nofile[1]}/${nofile[2]}` : '?',
    'processes (soft/hard)': nproc ? `${nproc[1]}/${nproc[2]}` : '?',
    'kernel.pid_max': read('/proc/sys/kernel/pid_max'),
    'kernel.pty.max / nr': `${read('/proc/sys/kernel/pty/max')} / ${read('/proc/sys/kernel/pty/nr')}`,
    'fs.inotify.max_user_instances': read('/proc/sys/fs/inotify/max_user_instances'),
    UV_THREADPOOL_SIZE: process.env.UV_THREADPOOL_SIZE ?? '4 (default)',
  };
}

export async function main(opts: { quick: boolean; sizes?: number[] }): Promise<ScaleResult> {
  const sizes = opts.sizes ?? (opts.quick ? [5, 10] : [10, 50, 100]);
  const load = { start: os.loadavg(), end: [] as number[] };
  const dir = mkdtempSync(path.join(os.tmpdir(), 'lxq-bench-'));
  const made = new Set<Instance>();
  const runs: ScaleRun[] = [];
  let host: Host | undefined;
  try {
    host = await Host.open({ path: dir, images: process.env.LXQ_TEST_IMAGES ?? '/var/tmp/lxq-test-images', reap: true });
    // Warm-up, unmeasured: loads the addon, lxq_runner and the image into the page cache.
    const w = await host.create(`sc-${process.pid}-warm`, { image: 'busybox' });
    made.add(w);
    await w.start();
    await w.exec(['/bin/true']);
    await w.stop({ force: true });
    await w.delete();
    made.delete(w);
    for (const mode of ['sequential', 'pool 8'] as Mode[]) {
      for (const n of sizes) {
        const run = await runOnce(host, n, mode, `${mode === 'sequential' ? 's' : 'p'}${n}`, made);
        runs.push(run);
        if (process.env.LXQ_BENCH_VERBOSE) console.error(`${mode} N=${n}: ${PHASES.map((p) => `${p} ${run.total[p].toFixed(0)}`).join(', ')} ms`);
      }
    }
  } finally {
    // Whatever is left (a failed phase): forced delete, then the host directory.
    for (const c of made) await c.delete({ force: true }).catch((e) => console.error(`cleanup of ${c.name}: ${e.message}`));
    if (host) {
      const left = await fs.readdir(host.instancesDir).catch(() => [] as string[]);
      for (const name of left.filter((x) => x.startsWith(`sc-${process.pid}-`))) {
        await host
          .get(name)
          .then((c) => c.delete({ force: true }))
          .catch((e) => console.error(`cleanup of ${name}: ${e.message}`));
      }
    }
    rmSync(dir, { recursive: true, force: true });
  }
  load.end = os.loadavg();
  return { runs, load, limits: limits() };
}

const MiB = (b: number) => (b / 2 ** 20).toFixed(1);
const KiB = (b: number) => (b / 1024).toFixed(0);

if (require.main === module) {
  const sizesArg = process.argv.indexOf('--sizes');
  const sizes = sizesArg > 0 ? process.argv[sizesArg + 1].split(',').map(Number) : undefined;
  main({ quick: process.argv.includes('--quick'), sizes }).then(
    ({ runs, load, limits: lim }) => {
      const f = (x: number) => x.toFixed(x < 10 ? 2 : 1);
      console.log(`scale: N busybox containers, create → start → exec → list → state → stop (force) → delete (${os.cpus().length} CPUs, ${os.cpus()[0].model}, Node ${process.version}, ${Math.round(os.totalmem() / 2 ** 30)} GiB)`);
      console.log(`load average at start ${load.start.map((x) => x.toFixed(2)).join(' ')}, at end ${load.end.map((x) => x.toFixed(2)).join(' ')}`);
      console.log(`limits: ${Object.entries(lim).map(([k, v]) => `${k} ${v}`).join('; ')}`);
      const notes: string[] = [];
      for (const mode of ['sequential', 'pool 8'] as Mode[]) {
        const rs = runs.filter((r) => r.mode === mode);
        if (!rs.length) continue;
        const lo = rs[0];
        const hi = rs[rs.length - 1];
        console.log(`\n${mode}: per phase, total ms (per container ms)`);
        console.log(`| phase | ${rs.map((r) => `N=${r.n}`).join(' | ')} | per-container N=${hi.n} / N=${lo.n} |`);
        console.log(`|---|${rs.map(() => '---|').join('')}---|`);
        for (const p of PHASES) {
          const per = (r: ScaleRun) => r.total[p] / r.n;
          const ratio = per(hi) / per(lo);
          console.log(`| ${p} | ${rs.map((r) => `${r.total[p].toFixed(0)} (${f(per(r))})`).join(' | ')} | ${ratio.toFixed(2)}× ${ratio > 1.5 ? 'GROWS' : 'flat'} |`);
          if (ratio > 1.5) notes.push(`${mode}: ${p} per container grows ${ratio.toFixed(2)}× from N=${lo.n} to N=${hi.n} (${f(per(lo))} → ${f(per(hi))} ms)`);
        }
        const all = (r: ScaleRun) => PHASES.reduce((s, p) => s + r.total[p], 0);
        console.log(`| all | ${rs.map((r) => `${all(r).toFixed(0)} (${f(all(r) / r.n)})`).join(' | ')} | ${(all(hi) / hi.n / (all(lo) / lo.n)).toFixed(2)}× |`);
        for (const p of ['create', 'start', 'exec', 'stop', 'delete'] as Phase[]) {
          console.log(`| ${p}: one call p50 / max | ${rs.map((r) => `${f(r.calls[p].p50)} / ${f(r.calls[p].max)}`).join(' | ')} | |`);
        }
        console.log(`| host.list() first / median of ${LIST_REPEATS} / fresh Host | ${rs.map((r) => `${f(r.list.first)} / ${f(r.list.median)} / ${f(r.list.freshHost)}`).join(' | ')} | |`);
        const listRatio = hi.list.median / hi.n / (lo.list.median / lo.n);
        if (listRatio > 1.5) notes.push(`${mode}: host.list() median per instance grows ${listRatio.toFixed(2)}×`);

        console.log(`\n${mode}: memory and processes`);
        console.log(`| | ${rs.map((r) => `N=${r.n}`).join(' | ')} |\n|---|${rs.map(() => '---|').join('')}`);
        const row = (label: string, fn: (r: ScaleRun) => string) => console.log(`| ${label} | ${rs.map(fn).join(' | ')} |`);
        row('Node rss MiB before / running / after', (r) => `${MiB(r.mem.before.rss)} / ${MiB(r.mem.running.rss)} / ${MiB(r.mem.after.rss)}`);
        row('Node rss per running container KiB', (r) => KiB((r.mem.running.rss - r.mem.before.rss) / r.n));
        row('Node rss left per deleted container KiB', (r) => KiB((r.mem.after.rss - r.mem.before.rss) / r.n));
        row('Node heapUsed MiB before / running / after (after GC)', (r) => `${MiB(r.mem.before.heapUsed)} / ${MiB(r.mem.running.heapUsed)} / ${MiB(r.mem.after.heapUsed)}`);
        row('Node heapUsed per running container KiB', (r) => KiB((r.mem.running.heapUsed - r.mem.before.heapUsed) / r.n));
        row('Node heapUsed left per deleted container KiB', (r) => KiB((r.mem.after.heapUsed - r.mem.before.heapUsed) / r.n));
        row('Node open fds before / running / after', (r) => `${r.mem.before.fds} / ${r.mem.running.fds} / ${r.mem.after.fds}`);
        row('Node threads before / running / after', (r) => `${r.mem.before.threads} / ${r.mem.running.threads} / ${r.mem.after.threads}`);
        row('container cgroup memory MiB, median (min–max)', (r) => `${MiB(r.containerMem.p50)} (${MiB(r.containerMem.min)}–${MiB(r.containerMem.max)})`);
        row('processes inside a container, median', (r) => String(r.containerProcs.p50));
        row('[lxc monitor] processes (this host)', (r) => String(r.monitors));
        row('host ptys in use (kernel.pty.nr, whole machine)', (r) => String(r.ptys));
        row('monitor PSS KiB, median', (r) => (r.monitorPssKiB.n ? String(r.monitorPssKiB.p50) : '?'));
        row('host processes per container: monitor cgroup + payload cgroup', (r) => `${(r.hostProcs.monitor / r.n).toFixed(2)} + ${(r.hostProcs.payload / r.n).toFixed(2)}`);
        row('processes added on the whole machine per container (other tenants add noise)', (r) => (r.hostProcsDelta / r.n).toFixed(2));
        for (const r of rs) {
          if (r.monitors !== r.n) notes.push(`${mode} N=${r.n}: ${r.monitors} monitors for ${r.n} running containers`);
          if (r.mem.after.fds > r.mem.before.fds) notes.push(`${mode} N=${r.n}: Node keeps ${r.mem.after.fds - r.mem.before.fds} more fds after delete than before create`);
        }
      }
      console.log('\nnotes:');
      for (const n of notes.length ? notes : ['every phase stays within 1.5× per container from the smallest to the largest N']) console.log(`- ${n}`);
    },
    (e) => {
      console.error(e);
      process.exit(1);
    },
  );
}
