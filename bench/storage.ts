/**
 * Storage pools, side by side in one run: a `debian/12` container on the `overlay` pool (an
 * upper directory over the image, kept once), on the `dir` pool (a full copy of the image, ids
 * shifted) and on a `btrfs` pool of a loop file (a writable snapshot of the image's subvolume,
 * made by a first create that is not timed, as LXD's image volume): create, disk used right after create and after the first boot, start until
 * systemd runs, snapshot of the running container, restore, copy, delete; then N containers
 * created one after another on each pool (total time and disk).
 *
 * Disk is `du -sk --one-file-system` of the instance directories (an overlay's mount is another
 * filesystem: what the overlay shows of the image is not counted; the image is, once, in the
 * store), run right after the operation. On btrfs, as for LXD's btrfs peer: what the pool's
 * filesystem has in use (statfs, after a sync) beyond what it had before, the image's subvolume
 * made (`du` would count each snapshot's shared extents again).
 *
 * Peers in the same run: LXD 5.0 (Debian's) on a `dir` pool and on a `btrfs` pool of a loop file
 * (LXD's default for btrfs without a source), each a daemon of its own holding the same tree
 * (lxq's image exported in LXD's format), driven over REST as a Node program would; disk: see
 * bench/peers/lxd-storage.ts. Docker (Debian's docker.io, overlay2; bench/peers/docker.ts): a
 * dockerd of the bench's own holding the same root filesystem (`docker import`), a container
 * whose command stays created, started and removed; Docker has no snapshot, restore or copy of a
 * container; disk: `du` of its data root beyond what it held before. Skipped (said so) where
 * dockerd is not installed.
 *
 * `--quick`: busybox, 2 rounds, 5 containers, no peers; `--many N`: N containers one after another (100 by default); `--no-lxd`: no LXD peers; `--no-docker`: no Docker peer; `--no-dir`: neither
 * lxq's nor LXD's dir pool (the full copies, minutes under load); `--image NAME`: another image
 * (e.g. busybox with the peers); `--vm`: only VMs (`vm/default`) on each pool, create and copy.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, statfsSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import { Host } from '../lib';
import { DockerPeer } from './peers/docker';
import { LxdStoragePeer } from './peers/lxd-storage';
import { stats, time } from './stats';

const quick = process.argv.includes('--quick');
const rounds = quick ? 2 : 5;
const manyArg = process.argv.indexOf('--many');
/** The figure is 100 `debian/12` containers one after another; `--many N` for fewer. */
const many = manyArg > 0 ? Number(process.argv[manyArg + 1]) : quick ? 5 : 100;
const imageArg = process.argv.indexOf('--image');
const image = imageArg > 0 ? process.argv[imageArg + 1] : quick ? 'busybox' : 'debian/12';

const p50 = (xs: number[]) => stats(xs).p50;
const kib = (dirs: string[]) => Number(execFileSync('du', ['-sck', '--one-file-system', ...dirs], { encoding: 'utf8' }).trim().split('\n').pop()!.split('\t')[0]);
const mib = (k: number) => (k / 1024).toFixed(1);
const noDir = process.argv.includes('--no-dir');
const vmOnly = process.argv.includes('--vm');
const ALL_POOLS = ['overlay', 'dir', 'btrfs'] as const;
type Pool = (typeof ALL_POOLS)[number];
const POOLS = ALL_POOLS.filter((p) => !noDir || p !== 'dir');
const poolName = (pool: Pool) => (pool === 'overlay' ? 'default' : pool);
/** KiB the btrfs pool's filesystem has in use (deleted subvolumes cleaned first). */
const btrfsUsedKiB = (mount: string) => {
  execFileSync('btrfs', ['-q', 'subvolume', 'sync', mount]);
  execFileSync('sync', ['-f', mount]);
  const st = statfsSync(mount);
  return ((st.blocks - st.bfree) * st.bsize) / 1024;
};

async function main(): Promise<void> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'lxq-bench-storage-'));
  const host = await Host.open({ path: dir, images: process.env.LXQ_BENCH_IMAGES ?? '/var/tmp/lxq-test-images', reap: true });
  await host.storage.pools.create('dir', { driver: 'dir' });
  await host.storage.pools.create('btrfs', { driver: 'btrfs', config: { size: '16GiB' } });
  const btrfsMount = path.join(dir, 'storage-pools', 'btrfs', 'mnt');
  if (!vmOnly) {
    const img = await host.images.ensure(image);
    console.log(`image ${image}: ${mib(kib([img.dir]))} MiB in the store`);
    const warm = await time(() => host.create('b-warm', { image, pool: 'btrfs' }));
    await (await host.get('b-warm')).delete();
    console.log(`btrfs: the first create (the image's subvolume made) ${warm.toFixed(0)} ms`);
  }
  const btrfsBase = btrfsUsedKiB(btrfsMount);
  const inst = (name: string) => path.join(host.instancesDir, name);
  const disk = (pool: Pool, names: string[]) => (pool === 'btrfs' ? btrfsUsedKiB(btrfsMount) - btrfsBase : kib(names.map(inst)));
  let peers: [string, LxdStoragePeer | string][] = [];
  let docker: DockerPeer | string = 'not asked for';
  try {
    if (vmOnly) return await vmRows(host);
    console.log('\n| pool | create p50 ms | disk after create MiB | start → running ms | disk after boot MiB | snapshot (running) p50 ms | restore p50 ms | copy (stopped) p50 ms | delete p50 ms |');
    console.log('|---|---|---|---|---|---|---|---|---|');
    for (const pool of POOLS) {
      const create: number[] = [];
      const del: number[] = [];
      let afterCreate = 0;
      for (let i = 0; i < rounds; i++) {
        const name = `b-${pool}-${i}`;
        create.push(await time(() => host.create(name, { image, pool: poolName(pool) })));
        afterCreate = disk(pool, [name]);
        const c = await host.get(name);
        del.push(await time(() => c.delete()));
      }
      const c = await host.create(`b-${pool}`, { image, pool: poolName(pool) });
      const wait = image === 'debian/12' ? ({ for: 'systemd', timeout: 180_000 } as const) : undefined;
      const start = await time(() => c.start(wait ? { wait } : {}));
      const afterBoot = disk(pool, [c.name]);
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

    peers = quick || process.argv.includes('--no-lxd') ? [] : await lxdPeers(host, dir);
    for (const [driver, peer] of peers) {
      if (typeof peer === 'string') console.log(`| LXD 5.0 ${driver} | not measured: ${peer} |`);
      else console.log(await lxdRow(driver, peer, image));
    }
    if (!quick && !process.argv.includes('--no-docker')) docker = await DockerPeer.start();
    if (typeof docker === 'string') console.log(`| Docker overlay2 | not measured: ${docker} |`);
    else console.log(await dockerRow(docker, (await host.images.ensure(image)).dir));

    console.log(`\n| pool | ${many} containers one after another: total s | per container p50 ms | disk of all MiB |`);
    console.log('|---|---|---|---|');
    for (const pool of POOLS) {
      const each: number[] = [];
      const names: string[] = [];
      const t0 = process.hrtime.bigint();
      for (let i = 0; i < many; i++) {
        const name = `m-${pool}-${i}`;
        each.push(await time(() => host.create(name, { image, pool: poolName(pool) })));
        names.push(name);
      }
      const total = Number(process.hrtime.bigint() - t0) / 1e9;
      const used = disk(pool, names);
      for (const n of names) await (await host.get(n)).delete();
      console.log(`| ${pool} | ${total.toFixed(2)} | ${p50(each).toFixed(1)} | ${mib(used)} |`);
    }
    for (const [driver, peer] of peers) if (typeof peer !== 'string') console.log(await lxdMany(driver, peer));
    if (typeof docker !== 'string') console.log(await dockerMany(docker));
  } finally {
    if (typeof docker !== 'string') await docker.close().catch((e: Error) => console.error(`Docker peer: ${e}`));
    for (const [, peer] of peers) if (typeof peer !== 'string') await peer.close().catch((e: Error) => console.error(`LXD peer: ${e}`));
    for (const i of await host.list()) await i.delete({ force: true }).catch(() => undefined);
    await host.storage.pools.delete('btrfs').catch((e: Error) => console.error(`btrfs pool: ${e}`));
    await host.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * VMs (`vm/default`) on each pool: create, and copy of a stopped VM (its disk as made, then after
 * 256 MiB written into it by qemu-io, as a guest's writes would be), with its one snapshot.
 */
async function vmRows(host: Host): Promise<void> {
  await host.images.ensure('vm/default', { type: 'vm' });
  console.log(`\n| pool | VM create p50 ms | VM copy p50 ms | VM copy after 256 MiB written p50 ms |`);
  console.log('|---|---|---|---|');
  for (const pool of POOLS) {
    const opts = { type: 'vm' as const, image: 'vm/default', pool: poolName(pool) };
    const create: number[] = [];
    for (let i = 0; i < rounds; i++) {
      create.push(await time(() => host.create(`v-${pool}-${i}`, opts)));
      if (i > 0) await (await host.get(`v-${pool}-${i}`)).delete();
    }
    const vm = await host.get(`v-${pool}-0`);
    await vm.snapshots.create('s0');
    const copies = async (tag: string) => {
      const took: number[] = [];
      for (let i = 0; i < rounds; i++) {
        took.push(await time(() => host.copy(vm.name, `v-${pool}-${tag}${i}`)));
        await (await host.get(`v-${pool}-${tag}${i}`)).delete();
      }
      return p50(took);
    };
    const fresh = await copies('c');
    execFileSync('qemu-io', ['-f', 'qcow2', '-c', 'write -P 7 0 256M', path.join(host.instancesDir, vm.name, 'disk.qcow2')], { stdio: 'ignore' });
    const written = await copies('w');
    await vm.delete();
    console.log(`| ${pool} | ${p50(create).toFixed(1)} | ${fresh.toFixed(1)} | ${written.toFixed(1)} |`);
  }
}

/** LXD 5.0 on a dir pool and on a btrfs loop pool, each a daemon of its own holding lxq's image. */
async function lxdPeers(host: Host, dir: string): Promise<[string, LxdStoragePeer | string][]> {
  const out: [string, LxdStoragePeer | string][] = [];
  for (const driver of noDir ? (['btrfs'] as const) : (['dir', 'btrfs'] as const)) {
    const peer = await LxdStoragePeer.start(dir, driver).catch((e: Error) => e.message);
    if (typeof peer !== 'string') lxdImages.set(peer, await peer.importImage(host, image, dir));
    out.push([`LXD 5.0 ${driver}`, peer]);
  }
  return out;
}
const lxdImages = new Map<LxdStoragePeer, string>();

/** The same row as lxq's pools, for LXD (disk: see LxdStoragePeer.diskKiB). */
async function lxdRow(label: string, peer: LxdStoragePeer, img: string): Promise<string> {
  const fingerprint = lxdImages.get(peer)!;
  const create: number[] = [];
  const del: number[] = [];
  let afterCreate = 0;
  const base = await peer.diskKiB([]);
  for (let i = 0; i < rounds; i++) {
    const name = `lxd-b-${i}`;
    create.push(await time(() => peer.create(name, fingerprint)));
    afterCreate = (await peer.diskKiB([name])) - base;
    del.push(await time(() => peer.delete(name)));
  }
  const name = 'lxd-b';
  await peer.create(name, fingerprint);
  const start = await time(() => peer.start(name, img === 'debian/12'));
  const afterBoot = (await peer.diskKiB([name])) - base;
  const snap: number[] = [];
  for (let i = 0; i < rounds; i++) snap.push(await time(() => peer.snapshot(name, `s${i}`)));
  await peer.stop(name);
  const restore: number[] = [];
  for (let i = 0; i < rounds; i++) restore.push(await time(() => peer.restore(name, `s${i}`)));
  const copy: number[] = [];
  for (let i = 0; i < rounds; i++) {
    copy.push(await time(() => peer.copy(name, `lxd-b-copy${i}`)));
    await peer.delete(`lxd-b-copy${i}`);
  }
  await peer.delete(name);
  return `| ${label} | ${p50(create).toFixed(1)} | ${mib(afterCreate)} | ${start.toFixed(0)} | ${mib(afterBoot)} | ${p50(snap).toFixed(1)} | ${p50(restore).toFixed(1)} | ${p50(copy).toFixed(1)} | ${p50(del).toFixed(1)} |`;
}

async function lxdMany(label: string, peer: LxdStoragePeer): Promise<string> {
  const fingerprint = lxdImages.get(peer)!;
  const base = await peer.diskKiB([]);
  const each: number[] = [];
  const names: string[] = [];
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < many; i++) {
    names.push(`lxd-m-${i}`);
    each.push(await time(() => peer.create(names[i], fingerprint)));
  }
  const total = Number(process.hrtime.bigint() - t0) / 1e9;
  const disk = (await peer.diskKiB(names)) - base;
  for (const n of names) await peer.delete(n);
  return `| ${label} | ${total.toFixed(2)} | ${p50(each).toFixed(1)} | ${mib(disk)} |`;
}

/** The same row for Docker: create; create + start as its "start" (its command stays); no snapshot, restore or copy. */
async function dockerRow(peer: DockerPeer, imageDir: string): Promise<string> {
  peer.importImage(path.join(imageDir, 'rootfs'), 'lxq-bench:image');
  const base = peer.diskKiB();
  const create: number[] = [];
  const del: number[] = [];
  let afterCreate = 0;
  for (let i = 0; i < rounds; i++) {
    const name = `docker-b-${i}`;
    create.push(await time(() => peer.create(name, 'lxq-bench:image')));
    afterCreate = peer.diskKiB() - base;
    del.push(await time(() => peer.delete(name)));
  }
  const start = await time(async () => {
    await peer.create('docker-b', 'lxq-bench:image');
    await peer.start('docker-b');
  });
  const afterBoot = peer.diskKiB() - base;
  await peer.delete('docker-b');
  return `| Docker overlay2 (start: create + start) | ${p50(create).toFixed(1)} | ${mib(afterCreate)} | ${start.toFixed(0)} | ${mib(afterBoot)} | none | none | none | ${p50(del).toFixed(1)} |`;
}

async function dockerMany(peer: DockerPeer): Promise<string> {
  const base = peer.diskKiB();
  const each: number[] = [];
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < many; i++) each.push(await time(() => peer.create(`docker-m-${i}`, 'lxq-bench:image')));
  const total = Number(process.hrtime.bigint() - t0) / 1e9;
  const disk = peer.diskKiB() - base;
  for (let i = 0; i < many; i++) await peer.delete(`docker-m-${i}`);
  return `| Docker overlay2 | ${total.toFixed(2)} | ${p50(each).toFixed(1)} | ${mib(disk)} |`;
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
