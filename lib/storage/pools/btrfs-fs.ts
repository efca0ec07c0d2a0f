/**
 * The btrfs primitives the `btrfs` pool driver needs, through btrfs-progs and util-linux (as
 * LXD's driver does): subvolumes made, snapshotted and deleted (nested ones included), a loop
 * file formatted and mounted, qgroup limits, and the loop devices a dead process left.
 */
import { promises as fs, statfsSync } from 'node:fs';
import * as path from 'node:path';

import { OperationFailed } from '../../core/errors';
import { run } from '../../core/run';
import { sys } from '../../native/sys';
import { mountsUnder } from './mounts';

/** statfs(2)'s f_type of a btrfs filesystem. */
const BTRFS_SUPER_MAGIC = 0x9123683e;
/** Every subvolume's root directory has this inode number. */
const SUBVOLUME_ROOT_INO = 256;

/** Whether `p` (which must exist) is on a btrfs filesystem. */
export function onBtrfs(p: string): boolean {
  return statfsSync(p).type === BTRFS_SUPER_MAGIC;
}

export async function createSubvolume(p: string): Promise<void> {
  await run('btrfs', ['-q', 'subvolume', 'create', '--', p]);
}

/** A snapshot of the subvolume `from` at `to` (read-only with `readOnly`): instant, sharing every extent. */
export async function snapshotSubvolume(from: string, to: string, readOnly: boolean): Promise<void> {
  // The ioctl from the addon: a process per snapshot was most of a create's time.
  await sys().btrfsSnapshot(from, to, readOnly);
}

export async function setReadOnly(p: string, readOnly: boolean): Promise<void> {
  await run('btrfs', ['property', 'set', '-ts', p, 'ro', String(readOnly)]);
}

/** Subvolumes made inside `p` (systemd makes /var/lib/machines one on btrfs): a snapshot does not hold them, a delete must take them first. */
async function nestedSubvolumes(p: string): Promise<string[]> {
  const out = await run('find', [p, '-xdev', '-mindepth', '1', '-type', 'd', '-inum', String(SUBVOLUME_ROOT_INO), '-print0']).catch(() => '');
  return out.split('\0').filter(Boolean);
}

/** Deletes the subvolume `p` and those nested in it; nothing if it is gone already. */
export async function deleteSubvolume(p: string): Promise<void> {
  const st = await fs.lstat(p).catch(() => undefined);
  if (!st) return;
  if (st.ino !== SUBVOLUME_ROOT_INO) throw new OperationFailed(`${p} is not a btrfs subvolume; not deleting it`);
  try {
    await run('btrfs', ['-q', 'subvolume', 'delete', '--', p]);
  } catch (e) {
    const nested = await nestedSubvolumes(p);
    if (!nested.length) {
      if (!(await fs.lstat(p).then(() => true, () => false))) return; // another process deleted it meanwhile
      throw e;
    }
    // A read-only snapshot's entries cannot be unlinked: it holds no nested subvolume (snapshots do not take them).
    for (const n of nested) await deleteSubvolume(n);
    await run('btrfs', ['-q', 'subvolume', 'delete', '--', p]);
  }
}

/** A sparse file of `bytes` at `file` (which must not exist), formatted as btrfs. */
export async function makeLoopFile(file: string, bytes: number): Promise<void> {
  const h = await fs.open(file, 'wx', 0o600);
  try {
    await h.truncate(bytes);
  } finally {
    await h.close();
  }
  await run('mkfs.btrfs', ['-q', '-f', '--', file]);
}

/** Mounts the btrfs in `file` at `target` through a loop device that is released when it is unmounted (autoclear). */
export async function mountLoopFile(file: string, target: string): Promise<void> {
  await run('mount', ['-t', 'btrfs', '-o', 'loop', '--', file, target]);
}

/** Binds `source` at `target`, read-only with `readOnly`. */
export async function bindMount(source: string, target: string, readOnly: boolean): Promise<void> {
  await sys().bindMount(source, target, readOnly);
}

interface LoopDevice {
  name: string;
  'back-file': string | null;
}

/** The loop devices whose backing file is at or below `dir` (a deleted one too), with that file. */
export async function loopDevicesUnder(dir: string): Promise<LoopDevice[]> {
  const out = await run('losetup', ['--json', '--list', '--output', 'NAME,BACK-FILE']);
  const top = path.resolve(dir);
  const devices = out.trim() ? (JSON.parse(out) as { loopdevices: LoopDevice[] }).loopdevices : [];
  return devices.filter((d) => {
    const file = (d['back-file'] ?? '').replace(/ \(deleted\)$/, '');
    return file === top || file.startsWith(top + '/');
  });
}

/**
 * Detaches the loop devices backed by files below `dir` that nothing mounts: what a process
 * killed between attaching and mounting, or a lazy unmount whose last user went, left behind.
 */
export async function releaseLoopDevicesUnder(dir: string): Promise<void> {
  const mounted = new Set((await fs.readFile('/proc/self/mountinfo', 'utf8')).split('\n').map((l) => l.split(' - ')[1]?.split(' ')[1]));
  for (const d of await loopDevicesUnder(dir)) {
    if (!mounted.has(d.name)) await run('losetup', ['--detach', d.name]).catch(() => undefined);
  }
}

/** Whether something is mounted exactly at `p`. */
export async function mountedAt(p: string): Promise<boolean> {
  return (await mountsUnder(p)).includes(path.resolve(p));
}

/** Turns qgroups on for the filesystem at `p` (idempotent); the reason they cannot be, as btrfs says it, otherwise. */
export async function enableQuota(p: string): Promise<string | undefined> {
  return run('btrfs', ['quota', 'enable', p]).then(() => undefined, (e: Error) => e.message);
}

/** Limits what the subvolume `p` refers to (its own and shared extents) to `bytes`. */
export async function limitSubvolume(p: string, bytes: number): Promise<void> {
  await run('btrfs', ['qgroup', 'limit', String(bytes), p]);
}
