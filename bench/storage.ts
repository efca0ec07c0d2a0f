/**
 * Storage pools, side by side in one run: a `debian/12` container on the `overlay` pool (an
 * upper directory over the image, kept once) and on the `dir` pool (a full copy of the image,
 * ids shifted): create, disk used right after create and after the first boot, start until
 * systemd runs, snapshot of the running container, restore, copy, delete; then N containers
 * created one after another on each pool (total time and disk).
 *
 * Disk is `du -sk --one-file-system` of the instance directories (an overlay's mount is another
 * filesystem: what the overlay shows of the image is not counted; the image is, once, in the
 * store), run right after the operation.
 *
 * `--quick`: busybox, 2 rounds, 5 containers.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import { Host } from '../lib';
import { stats, time } from './stats';

const quick = process.argv.includes('--quick');
const rounds = quick ? 2 : 5;
const many = quick ? 5 : 20;
const image = quick ? 'busybox' : 'debian/12';

const p50 = (xs: number[]) => stats(xs).p50;
const kib = (dirs: string[]) => Number(execFileSync('du', ['-sck', '--one-file-system', ...dirs], { encoding: 'utf8' }).trim().split('\n').pop()!.split('\t')[0]);
const mib = (k: number) => (k / 1024).toFixed(1);

async function main(): Promise<void> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'lxq-bench-storage-'));
  const host = await Host.open({ path: dir, images: process.env.LXQ_BENCH_IMAGES ?? '/var/tmp/lxq-test-images' });
  await host.storage.pools.create('dir', { driver: 'dir' });
  const img = await host.images.ensure(image);
  console.log(`image ${image}: ${mib(kib([img.dir]))} MiB in the store`);
  const inst = (name: string) => path.join(host.instancesDir, name);
  try {
    console.log('\n| pool | create p50 ms | disk after create MiB | start → running ms | disk after boot MiB | snapshot (running) p50 ms | restore p50 ms | copy (stopped) p50 ms | delete p50 ms |');
    console.log('|---|---|---|---|---|---|---|---|---|');
    for (const pool of ['overlay', 'dir'] as const) {
      const poolName = pool === 'overlay' ? 'default' : 'dir';
      const create: number[] = [];
      const del: number[] = [];
      let afterCreate = 0;
      for (let i = 0; i < rounds; i++) {
        const name = `b-${pool}-${i}`;
        create.push(await time(() => host.create(name, { image, pool: poolName })));
        afterCreate = kib([inst(name)]);
        const c = await host.get(name);
        del.push(await time(() => c.delete()));
      }
      const c = await host.create(`b-${pool}`, { image, pool: poolName });
      const wait = image === 'debian/12' ? ({ for: 'systemd', timeout: 180_000 } as const) : undefined;
      const start = await time(() => c.start(wait ? { wait } : {}));
      const afterBoot = kib([inst(c.name)]);
      const snap: number[] = [];
      for (let i = 0; i < rounds; i++) snap.push(await time(() => c.snapshots.create(`s${i}`)));
      await c.stop({ force: true });
      const restore: number[] = [];
      for (let i = 0; i < rounds; i++) restore.push(await time(() => c.snapshots.restore(`s${i}`)));
      const copy: number[] = [];
      for (let i = 0; i < rounds; i++) {
        copy.push(await time(() => host.copy(c.name, `b-${pool}-copy${i}`, { instanceOnly: true })));
        await (await host.get(`b-${pool}-copy${i}`)).delete();
      }
      await c.delete({ force: true });
      console.log(`| ${pool} | ${p50(create).toFixed(1)} | ${mib(afterCreate)} | ${start.toFixed(0)} | ${mib(afterBoot)} | ${p50(snap).toFixed(1)} | ${p50(restore).toFixed(1)} | ${p50(copy).toFixed(1)} | ${p50(del).toFixed(1)} |`);
    }

    console.log(`\n| pool | ${many} containers one after another: total s | per container p50 ms | disk of all MiB |`);
    console.log('|---|---|---|---|');
    for (const pool of ['overlay', 'dir'] as const) {
      const each: number[] = [];
      const names: string[] = [];
      const t0 = process.hrtime.bigint();
      for (let i = 0; i < many; i++) {
        const name = `m-${pool}-${i}`;
        each.push(await time(() => host.create(name, { image, pool: pool === 'overlay' ? 'default' : 'dir' })));
        names.push(name);
      }
      const total = Number(process.hrtime.bigint() - t0) / 1e9;
      const disk = kib(names.map(inst));
      for (const n of names) await (await host.get(n)).delete();
      console.log(`| ${pool} | ${total.toFixed(2)} | ${p50(each).toFixed(1)} | ${mib(disk)} |`);
    }
  } finally {
    for (const i of await host.list()) await i.delete({ force: true }).catch(() => undefined);
    await host.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
