/**
 * Container snapshot create and restore: lxq (cp -a of the rootfs, staged and renamed) against
 * liblxc's own `lxc-snapshot` (rsync of the rootfs) on the same container, side by side, for a
 * busybox rootfs and one with 200 MiB of extra files. `--quick`: 2 rounds of the busybox case.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import { Host } from '../lib';
import { stats, time } from './stats';

const quick = process.argv.includes('--quick');
const rounds = quick ? 2 : 5;

async function main(): Promise<void> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'lxq-bench-snap-'));
  const host = await Host.open({ path: dir, images: process.env.LXQ_TEST_IMAGES ?? '/var/tmp/lxq-test-images' });
  await host.images.ensure('busybox');
  const lxc = (args: string[]) => execFileSync('lxc-snapshot', ['-P', host.instancesDir, ...args], { stdio: 'ignore' });
  const hasLxc = (() => { try { execFileSync('which', ['lxc-snapshot', 'rsync'], { stdio: 'ignore' }); return true; } catch { return false; } })();
  console.log('| rootfs | op | lxq p50 ms | lxc-snapshot p50 ms | ratio lxc/lxq |');
  console.log('|---|---|---|---|---|');
  try {
    for (const size of quick ? [0] : [0, 200]) {
      const c = await host.create(`bench-${size}`, { image: 'busybox' });
      const big = path.join(host.instancesDir, c.name, 'rootfs', 'big');
      if (size) execFileSync('sh', ['-c', `mkdir "${big}" && for i in $(seq 1 ${size / 8}); do head -c 8M /dev/urandom > "${big}/f$i"; done`]);
      const r: Record<string, number[]> = { lxqCreate: [], lxqRestore: [], lxcCreate: [], lxcRestore: [] };
      for (let i = 0; i < rounds; i++) {
        r.lxqCreate.push(await time(() => c.snapshots.create(`s${i}`)));
        r.lxqRestore.push(await time(() => c.snapshots.restore(`s${i}`)));
        await c.snapshots.delete(`s${i}`);
        if (!hasLxc) continue;
        r.lxcCreate.push(await time(() => lxc(['-n', c.name])));
        r.lxcRestore.push(await time(() => lxc(['-n', c.name, '-r', 'snap0'])));
        lxc(['-n', c.name, '-d', 'snap0']);
      }
      for (const op of ['Create', 'Restore']) {
        const a = stats(r[`lxq${op}`]).p50;
        const b = hasLxc ? stats(r[`lxc${op}`]).p50 : NaN;
        console.log(`| busybox${size ? ` + ${size} MiB` : ''} | ${op.toLowerCase()} | ${a.toFixed(1)} | ${hasLxc ? b.toFixed(1) : 'n/a'} | ${hasLxc ? (b / a).toFixed(2) : 'n/a'} |`);
      }
      await c.delete();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
