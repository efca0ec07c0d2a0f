/**
 * Directory trees in and out of a busybox container: files.pushTree / pullTree (lib/instance/trees.ts,
 * over the file primitives) side by side with the container's own busybox tar through exec
 * (`tar -x` fed on stdin, `tar -c` read from stdout), for a tree of many small files and for one
 * large file. It says whether a container-specific fast path would be worth having.
 * Usage: node dist/bench/trees.js [--quick]
 */
import { execFileSync } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Readable } from 'node:stream';

import { Host, type Instance } from '../lib';
import { printStatsTable, type Stats, stats, time } from './stats';

const quick = process.argv.includes('--quick');
const ROUNDS = quick ? 2 : 5;
const SMALL = quick ? 500 : 2000;

/** A tar of `files` files of 4 KiB in 20 directories, or of one file of `mib` MiB. */
function makeTar(dir: string, kind: 'small' | 'large', mib = 64): Buffer {
  const root = path.join(dir, kind);
  if (kind === 'small') {
    for (let i = 0; i < SMALL; i++) {
      const d = path.join(root, `d${i % 20}`);
      mkdirSync(d, { recursive: true });
      writeFileSync(path.join(d, `f${i}`), Buffer.alloc(4096, i % 251));
    }
  } else {
    mkdirSync(root, { recursive: true });
    writeFileSync(path.join(root, 'big'), Buffer.alloc(mib * 1024 * 1024, 7));
  }
  return execFileSync('tar', ['-C', root, '--format=pax', '-cf', '-', '.'], { maxBuffer: 1 << 30 });
}

async function drain(s: Readable): Promise<number> {
  let n = 0;
  for await (const chunk of s) n += (chunk as Buffer).length;
  return n;
}

async function measure(c: Instance, tar: Buffer, label: string, res: Record<string, Stats>): Promise<void> {
  const push: number[] = [];
  const execPush: number[] = [];
  const pull: number[] = [];
  const execPull: number[] = [];
  for (let i = 0; i < ROUNDS; i++) {
    push.push(await time(() => c.files.pushTree(`/tmp/lxq-${i}`, Readable.from([tar]))));
    execPush.push(await time(async () => {
      const r = await c.exec(['sh', '-c', `mkdir -p /tmp/tar-${i} && tar -x -C /tmp/tar-${i}`], { stdin: tar });
      if (r.exitCode !== 0) throw new Error(r.stderr.toString());
    }));
    pull.push(await time(async () => drain(await c.files.pullTree(`/tmp/lxq-${i}`))));
    execPull.push(await time(async () => {
      const r = await c.exec(['tar', '-c', '-C', `/tmp/tar-${i}`, '.']);
      if (r.exitCode !== 0) throw new Error(r.stderr.toString());
    }));
    await c.exec(['rm', '-rf', `/tmp/lxq-${i}`, `/tmp/tar-${i}`]);
  }
  res[`${label}: files.pushTree`] = stats(push);
  res[`${label}: exec tar -x (stdin)`] = stats(execPush);
  res[`${label}: files.pullTree`] = stats(pull);
  res[`${label}: exec tar -c (stdout)`] = stats(execPull);
}

async function main(): Promise<void> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'lxq-bench-trees-'));
  chmodSync(dir, 0o711); // the container's root traverses it to its rootfs
  const host = await Host.open({ path: path.join(dir, 'host'), images: process.env.LXQ_TEST_IMAGES ?? '/var/tmp/lxq-test-images' });
  let c: Instance | undefined;
  try {
    c = await host.create(`bench-trees-${process.pid}`, { image: 'busybox' });
    await c.start();
    const res: Record<string, Stats> = {};
    await measure(c, makeTar(dir, 'small'), `${SMALL} x 4 KiB`, res);
    await measure(c, makeTar(dir, 'large'), '1 x 64 MiB', res);
    printStatsTable(`Trees in a busybox container, ms (${ROUNDS} rounds; load ${os.loadavg()[0].toFixed(1)})`, 'operation', res);
  } finally {
    await c?.delete({ force: true }).catch(() => undefined);
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
