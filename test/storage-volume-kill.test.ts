/**
 * A process killed (SIGKILL) in the middle of a custom volume's snapshot or restore: the next
 * Host.open leaves the volume whole (its data as before, or as the snapshot, never a mix or
 * nothing), its snapshots as before or with the new one whole, and nothing half-made (no staging
 * entry, no subvolume no directory names). The child's rename is wrapped to kill it at an exact
 * step (before the snapshot appears; between the two renames of a restore's swap), so the moment
 * does not depend on the machine's load.
 */
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';

import { Host } from '../lib';
import { SHARED_IMAGES } from './helpers/host';
import { hostWithBtrfsPool, killedAtRename, sh } from './helpers/storage';

const { t, btrfs } = hostWithBtrfsPool('kb');
const dataOf = async (host: Host, pool: string, volume: string) => (await host.storage.volumeResolver.resolve(pool, volume)).path;
const volumeDir = (pool: string, volume: string) => path.join(t.dir, 'storage-pools', pool, 'volumes', volume);
/** Staging entries anywhere below a pool's volumes directory. */
const staged = (pool: string) => sh(`find '${path.join(t.dir, 'storage-pools', pool, 'volumes')}' -name '.lxq-tmp-*' 2>/dev/null || true`).trim();
const subvolumes = () => sh(`btrfs subvolume list '${path.join(t.dir, 'storage-pools', btrfs, 'mnt')}'`).split('\n').filter((l) => l.includes(' path custom/')).length;

/** Runs `call` (code on `volumes`) in a child process killed with SIGKILL by its own rename when `killAt(from, to)` holds (before or after it). */
const killedChild = (pool: string, call: string, killAt: string, after: boolean): Promise<void> =>
  killedAtRename(t.dir, `const volumes = host.storage.pool(${JSON.stringify(pool)}).volumes; await ${call}`, after ? { killAfter: killAt } : { killBefore: killAt });

for (const pool of ['default', 'btrfs']) {
  test(`killed mid snapshot (${pool} pool): the next Host.open leaves the volume and its snapshots as they were`, async () => {
    const p = pool === 'btrfs' ? btrfs : pool;
    const volumes = t.host.storage.pool(p).volumes;
    const name = t.name('ks');
    await volumes.create(name);
    writeFileSync(path.join(await dataOf(t.host, p, name), 'f'), 'before\n');
    await volumes.snapshot(name, 'first');
    const subs = pool === 'btrfs' ? subvolumes() : 0;
    // Killed with the snapshot whole in its staging directory, just before the rename that makes it appear.
    await killedChild(p, `volumes.snapshot(${JSON.stringify(name)}, 'second')`, `to.endsWith('/snapshots/second')`, false);
    expect(staged(p)).not.toBe('');
    const again = await Host.open({ path: t.dir, images: SHARED_IMAGES });
    try {
      expect(staged(p)).toBe('');
      if (pool === 'btrfs') expect(subvolumes()).toBe(subs); // the dead child's subvolume swept
      expect((await again.storage.pool(p).volumes.snapshots(name)).map((s) => s.name)).toEqual(['first']);
      expect(readFileSync(path.join(await dataOf(again, p, name), 'f'), 'utf8')).toBe('before\n');
      await again.storage.pool(p).volumes.snapshot(name, 'second'); // the name is free
      await again.storage.pool(p).volumes.delete(name);
    } finally {
      await again.close();
    }
  }, 300_000);
}

test('killed mid restore, between the two renames of the swap (dir data out, snapshot not yet in): the next Host.open finishes it', async () => {
  const volumes = t.host.storage.pool('default').volumes;
  const name = t.name('kr');
  await volumes.create(name);
  writeFileSync(path.join(await dataOf(t.host, 'default', name), 'f'), 'snapshot\n');
  await volumes.snapshot(name, 's');
  writeFileSync(path.join(await dataOf(t.host, 'default', name), 'f'), 'later\n');
  writeFileSync(path.join(await dataOf(t.host, 'default', name), 'g'), 'only later\n');
  await killedChild('default', `volumes.restore(${JSON.stringify(name)}, 's')`, `to.endsWith('/replaced')`, true);
  expect(readdirSync(volumeDir('default', name))).not.toContain('data'); // the data is out: the volume is whole only once finished
  const again = await Host.open({ path: t.dir, images: SHARED_IMAGES });
  try {
    expect(staged('default')).toBe('');
    const data = await dataOf(again, 'default', name);
    expect(readdirSync(data).sort()).toEqual(['f']);
    expect(readFileSync(path.join(data, 'f'), 'utf8')).toBe('snapshot\n');
    await again.storage.pool('default').volumes.delete(name);
  } finally {
    await again.close();
  }
}, 300_000);

test('killed mid restore before the swap (the snapshot staged, the data untouched): the next Host.open drops it', async () => {
  const volumes = t.host.storage.pool(btrfs).volumes;
  const name = t.name('kb');
  await volumes.create(name);
  writeFileSync(path.join(await dataOf(t.host, btrfs, name), 'f'), 'snapshot\n');
  await volumes.snapshot(name, 's');
  writeFileSync(path.join(await dataOf(t.host, btrfs, name), 'f'), 'later\n');
  const subs = subvolumes();
  // The btrfs swap's first rename moves the staged mark onto the volume's: killed just before it.
  await killedChild(btrfs, `volumes.restore(${JSON.stringify(name)}, 's')`, `from.includes('.lxq-tmp-') && to === ${JSON.stringify(path.join(volumeDir(btrfs, name)))} + '/' + require('node:path').basename(from)`, false);
  const again = await Host.open({ path: t.dir, images: SHARED_IMAGES });
  try {
    expect(staged(btrfs)).toBe('');
    expect(subvolumes()).toBe(subs);
    expect(readFileSync(path.join(await dataOf(again, btrfs, name), 'f'), 'utf8')).toBe('later\n');
    await again.storage.pool(btrfs).volumes.delete(name);
  } finally {
    await again.close();
  }
}, 300_000);

test('killed mid restore on btrfs, between the two renames of the swap (the volume names the restored subvolume): the next Host.open deletes the old one', async () => {
  const volumes = t.host.storage.pool(btrfs).volumes;
  const name = t.name('kc');
  await volumes.create(name);
  writeFileSync(path.join(await dataOf(t.host, btrfs, name), 'f'), 'snapshot\n');
  await volumes.snapshot(name, 's');
  writeFileSync(path.join(await dataOf(t.host, btrfs, name), 'f'), 'later\n');
  const subs = subvolumes();
  await killedChild(btrfs, `volumes.restore(${JSON.stringify(name)}, 's')`, `to === ${JSON.stringify(path.join(volumeDir(btrfs, name), 'btrfs.json'))} && from.includes('.lxq-tmp-')`, true);
  expect(subvolumes()).toBe(subs + 1); // the restored one and the old one (this process made it: no sweep takes it)
  const again = await Host.open({ path: t.dir, images: SHARED_IMAGES });
  try {
    expect(staged(btrfs)).toBe('');
    expect(subvolumes()).toBe(subs);
    expect(readFileSync(path.join(await dataOf(again, btrfs, name), 'f'), 'utf8')).toBe('snapshot\n');
    expect((await again.storage.pool(btrfs).volumes.snapshots(name)).map((s) => s.name)).toEqual(['s']);
    await again.storage.pool(btrfs).volumes.delete(name);
  } finally {
    await again.close();
  }
}, 300_000);
