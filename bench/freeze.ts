/**
 * freeze / unfreeze of a running busybox container, 200 each per peer, interleaved in rounds:
 * lxq, liblxc called directly through the addon (what every binding does), python3-lxc.
 * The tail is the point: liblxc on cgroup v1 sleeps a full second when its first read of
 * freezer.state still says FREEZING.
 * Usage: node dist/bench/freeze.js [--quick]
 */
import { execFile, execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';

import { Host } from '../lib';
import { lxc } from '../lib/native/lxc';
import { Stats, stats } from './stats';

const run = promisify(execFile);
const SRC = path.join(__dirname, '..', '..', 'bench', 'peers');

export async function main(opts: { quick: boolean }): Promise<Record<string, Stats | string>> {
  const rounds = opts.quick ? 2 : 4;
  const perRound = opts.quick ? 10 : 50;
  const dir = mkdtempSync(path.join(os.tmpdir(), 'lxq-bench-'));
  const host = await Host.open({ path: dir, images: process.env.LXQ_TEST_IMAGES ?? '/var/tmp/lxq-test-images', reap: true });
  const c = await host.create(`freeze-${process.pid}`, { image: 'busybox' });
  const raw = new (lxc().Container)(c.name, host.instancesDir);
  const s: Record<string, number[]> = {
    'lxq freeze': [], 'lxq unfreeze': [], 'liblxc freeze': [], 'liblxc unfreeze': [], 'python3-lxc freeze': [], 'python3-lxc unfreeze': [],
  };
  let python = true;
  try {
    execFileSync('/usr/bin/python3', ['-c', 'import lxc']);
  } catch {
    python = false;
  }
  const time = async (into: number[], op: () => Promise<unknown>) => {
    const t = performance.now();
    await op();
    into.push(performance.now() - t);
  };
  try {
    await c.start();
    for (let r = 0; r < rounds; r++) {
      for (let i = 0; i < perRound; i++) {
        await time(s['lxq freeze'], () => c.freeze());
        await time(s['lxq unfreeze'], () => c.unfreeze());
      }
      for (let i = 0; i < perRound; i++) {
        await time(s['liblxc freeze'], () => raw.freeze());
        await time(s['liblxc unfreeze'], () => raw.unfreeze());
      }
      if (python) {
        const { stdout } = await run('/usr/bin/python3', [path.join(SRC, 'freeze.py'), c.name, host.instancesDir, String(perRound)]);
        for (const line of stdout.trim().split('\n')) {
          const [f, u] = line.split(' ').map(Number);
          s['python3-lxc freeze'].push(f);
          s['python3-lxc unfreeze'].push(u);
        }
      }
    }
  } finally {
    raw.release();
    await c.delete({ force: true });
    rmSync(dir, { recursive: true, force: true });
  }
  const out: Record<string, Stats | string> = {};
  for (const [k, v] of Object.entries(s)) out[k] = v.length ? stats(v) : 'skipped: python3-lxc not installed';
  return out;
}

if (require.main === module) {
  main({ quick: process.argv.includes('--quick') }).then((res) => {
    console.log('| op | n | min | p50 | p99 | max |\n|---|---|---|---|---|---|');
    for (const [k, v] of Object.entries(res)) {
      if (typeof v === 'string') console.log(`| ${k} | ${v} | | | | |`);
      else console.log(`| ${k} | ${v.n} | ${v.min.toFixed(2)} | ${v.p50.toFixed(2)} | ${v.p99.toFixed(2)} | ${v.max.toFixed(1)} |`);
    }
  }, (e) => {
    console.error(e);
    process.exit(1);
  });
}
