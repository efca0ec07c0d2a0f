/**
 * Container copy, export and import: lxq against what a user would otherwise run on the same
 * tree, side by side in one run: `lxc-copy` (liblxc's own copy) for host.copy, and plain
 * `tar --zstd` create / extract of the same rootfs (the ceiling) for export and import.
 * A busybox rootfs and one with 200 MiB of extra files. `--quick`: 2 rounds of the busybox case.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import { Host } from '../lib';
import { stats, time } from './stats';

const quick = process.argv.includes('--quick');
const rounds = quick ? 2 : 3;

async function main(): Promise<void> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'lxq-bench-copy-'));
  const host = await Host.open({ path: dir, images: process.env.LXQ_TEST_IMAGES ?? '/var/tmp/lxq-test-images' });
  await host.images.ensure('busybox');
  const sh = (cmd: string) => execFileSync('sh', ['-c', cmd], { stdio: 'ignore' });
  const hasLxcCopy = (() => { try { execFileSync('which', ['lxc-copy'], { stdio: 'ignore' }); return true; } catch { return false; } })();
  console.log('| rootfs | op | lxq p50 ms | peer | peer p50 ms | ratio peer/lxq | lxq MiB/s |');
  console.log('|---|---|---|---|---|---|---|');
  try {
    for (const size of quick ? [0] : [0, 200]) {
      const c = await host.create(`bench-${size}`, { image: 'busybox' });
      const rootfs = path.join(host.instancesDir, c.name, 'rootfs');
      if (size) sh(`mkdir "${rootfs}/big" && for i in $(seq 1 ${size / 8}); do head -c 8M /dev/urandom > "${rootfs}/big/f$i"; done`);
      const mib = Number(execFileSync('du', ['-s', '-B1', rootfs], { encoding: 'utf8' }).split('\t')[0]) / 2 ** 20;
      const r: Record<string, number[]> = { copy: [], lxcCopy: [], export: [], tar: [], import: [], untar: [] };
      for (let i = 0; i < rounds; i++) {
        r.copy.push(await time(() => host.copy(c.name, `cp-${size}-${i}`, { instanceOnly: true })));
        await (await host.get(`cp-${size}-${i}`)).delete();
        if (hasLxcCopy) {
          r.lxcCopy.push(await time(() => sh(`lxc-copy -P ${host.instancesDir} -n ${c.name} -N lxc-${size}-${i}`)));
          sh(`rm -rf ${host.instancesDir}/lxc-${size}-${i}`);
        }
        const file = path.join(dir, `e${i}.tar.zst`);
        r.export.push(await time(() => c.export(file)));
        r.tar.push(await time(() => sh(`tar --create --zstd --file ${dir}/t${i}.tar.zst --numeric-owner --xattrs --xattrs-include='*' --acls --sparse -C ${path.dirname(rootfs)} rootfs`)));
        r.import.push(await time(() => host.import(file, { name: `im-${size}-${i}` })));
        await (await host.get(`im-${size}-${i}`)).delete();
        sh(`mkdir ${dir}/x${i}`);
        r.untar.push(await time(() => sh(`tar --extract --file ${dir}/t${i}.tar.zst --numeric-owner --xattrs --xattrs-include='*' --acls --same-owner -C ${dir}/x${i}`)));
        sh(`rm -rf ${dir}/x${i} ${dir}/t${i}.tar.zst ${file}`);
      }
      const label = `busybox${size ? ` + ${size} MiB` : ''}`;
      const row = (op: string, a: number[], peer: string, b: number[]) => {
        const x = stats(a).p50;
        const y = b.length ? stats(b).p50 : NaN;
        console.log(`| ${label} | ${op} | ${x.toFixed(1)} | ${peer} | ${b.length ? y.toFixed(1) : 'n/a'} | ${b.length ? (y / x).toFixed(2) : 'n/a'} | ${(mib / (x / 1000)).toFixed(0)} |`);
      };
      row('copy', r.copy, 'lxc-copy', r.lxcCopy);
      row('export', r.export, 'tar --zstd -c', r.tar);
      row('import', r.import, 'tar --zstd -x', r.untar);
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
