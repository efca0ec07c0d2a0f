/**
 * exec round trip of `/bin/true` in a running busybox container: lxq against the peers a user
 * would otherwise pick, on the same container, in one run, interleaved in rounds.
 *   lxq            instance.exec(['/bin/true'])
 *   lxc-attach     the CLI spawned from Node (execFile)
 *   python3-lxc    Debian's binding, attach_wait in a loop (one process)
 *   liblxc C       attach + waitpid from a small C program (the floor)
 * Usage: node dist/bench/exec.js [--quick]
 */
import { execFile, execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';

import { Host } from '../lib';

const run = promisify(execFile);
const SRC = path.join(__dirname, '..', '..', 'bench', 'peers');

export interface Stats {
  min: number;
  p50: number;
  p99: number;
  max: number;
  n: number;
}

export function stats(xs: number[]): Stats {
  const s = [...xs].sort((a, b) => a - b);
  const q = (p: number) => s[Math.min(s.length - 1, Math.floor(p * s.length))];
  return { min: s[0], p50: q(0.5), p99: q(0.99), max: s[s.length - 1], n: s.length };
}

export async function main(opts: { quick: boolean }): Promise<Record<string, Stats | string>> {
  const rounds = opts.quick ? 2 : 10;
  const perRound = opts.quick ? 10 : 50;
  const dir = mkdtempSync(path.join(os.tmpdir(), 'lxq-bench-'));
  const host = await Host.open({ path: dir, images: process.env.LXQ_TEST_IMAGES ?? '/var/tmp/lxq-test-images' });
  const c = await host.create(`bench-${process.pid}`, { image: 'busybox' });
  const lxcpath = host.instancesDir;
  const samples: Record<string, number[]> = { lxq: [], 'lxc-attach (execFile)': [], 'python3-lxc': [], 'liblxc C': [] };
  const skipped: Record<string, string> = {};
  const cBin = path.join(dir, 'attach');
  try {
    execFileSync('cc', ['-O2', path.join(SRC, 'attach.c'), '-o', cBin, '-llxc']);
  } catch (e) {
    skipped['liblxc C'] = `not built: ${(e as Error).message.split('\n')[0]}`;
  }
  if (!existsSync('/usr/bin/lxc-attach')) skipped['lxc-attach (execFile)'] = 'lxc-attach not installed';
  try {
    execFileSync('/usr/bin/python3', ['-c', 'import lxc']);
  } catch {
    skipped['python3-lxc'] = 'python3-lxc not installed';
  }
  try {
    await c.start();
    for (let i = 0; i < 20; i++) await c.exec(['/bin/true']); // warm-up
    for (let r = 0; r < rounds; r++) {
      for (let i = 0; i < perRound; i++) {
        const t = performance.now();
        await c.exec(['/bin/true']);
        samples.lxq.push(performance.now() - t);
      }
      if (!skipped['lxc-attach (execFile)']) {
        for (let i = 0; i < perRound; i++) {
          const t = performance.now();
          await run('lxc-attach', ['-P', lxcpath, '-n', c.name, '--clear-env', '--', '/bin/true']);
          samples['lxc-attach (execFile)'].push(performance.now() - t);
        }
      }
      if (!skipped['python3-lxc']) {
        const { stdout } = await run('/usr/bin/python3', [path.join(SRC, 'attach.py'), c.name, lxcpath, String(perRound)]);
        samples['python3-lxc'].push(...stdout.trim().split('\n').map(Number));
      }
      if (!skipped['liblxc C']) {
        const { stdout } = await run(cBin, [c.name, lxcpath, String(perRound)]);
        samples['liblxc C'].push(...stdout.trim().split('\n').map(Number));
      }
    }
  } finally {
    await c.delete({ force: true });
    rmSync(dir, { recursive: true, force: true });
  }
  const out: Record<string, Stats | string> = {};
  for (const [k, v] of Object.entries(samples)) out[k] = skipped[k] ? `skipped: ${skipped[k]}` : stats(v);
  return out;
}

if (require.main === module) {
  main({ quick: process.argv.includes('--quick') }).then((res) => {
    const floor = res['liblxc C'] as Stats | undefined;
    console.log(`exec /bin/true round trip, ms (${os.cpus().length} CPUs, ${os.cpus()[0].model}, Node ${process.version})`);
    console.log('| peer | n | min | p50 | p99 | p50 vs C floor |\n|---|---|---|---|---|---|');
    for (const [k, v] of Object.entries(res)) {
      if (typeof v === 'string') console.log(`| ${k} | ${v} | | | | |`);
      else console.log(`| ${k} | ${v.n} | ${v.min.toFixed(2)} | ${v.p50.toFixed(2)} | ${v.p99.toFixed(2)} | ${floor && typeof floor !== 'string' ? (v.p50 / floor.p50).toFixed(2) + '×' : ''} |`);
    }
  }, (e) => {
    console.error(e);
    process.exit(1);
  });
}
