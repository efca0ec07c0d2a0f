/**
 * The `overlay` pool driver (none of LXD or Incus has it): a container's root is an overlay of
 * its own upper directory on its image's tree, which is kept once, read-only and unshifted, in
 * the image store. Creating a container writes two empty directories and a small file; a
 * snapshot or a copy copies the upper directory only (what the container changed).
 *
 * Instance directory: `upper/` (owned by the container's root), `work/` (overlayfs's own),
 * `overlay.json` (which lower, seen how), `rootfs/` (the overlay's mount point, given to liblxc).
 * The overlay is mounted from the host (the init user namespace, so no `userxattr` and its
 * limits) with `index=off`, and stays mounted while the instance exists: `rootfs/` is the
 * container's whole tree for lxq's file calls, export and publish as for a `dir` container.
 * Whatever unmounted it (a reboot) is undone by the next call that needs it.
 *
 * The lower is seen through an idmapped, read-only clone of the image's tree, made for the
 * container's id map (kernel ≥ 5.19 lets overlayfs take idmapped layers). Whether this host
 * allows it is probed on the image's own filesystem at the first create (never assumed from the
 * kernel's version); where it does not, the pool keeps one shifted copy of the image per id map,
 * shared by every container with that map.
 */
import { createHash } from 'node:crypto';
import { promises as fs } from 'node:fs';
import * as path from 'node:path';

import { OperationFailed } from '../../core/errors';
import { readJson, writeJsonAtomic } from '../../core/fs';
import { FileLock } from '../../core/lock';
import { renameNew, stagingPath } from '../../core/staging';
import { sys } from '../../native/sys';
import { resetMachineId } from '../move';
import { copyTree, copyTreeShifted, copyTreeThrough, type IdMapper, remapTreeWith } from '../tree';
import { copyDiskFile, imageKey, refuseDirectoryPoolKeys } from './dir';
import { isMountPoint, unmountUnder } from './mounts';
import type { AdoptOptions, IdExtent, IdRange, LowerIds, PoolDriver, RootImage } from './types';

/** How an overlay instance's lower layer is seen, written at create (`overlay.json`). */
export interface OverlayLayout {
  format: 'lxq-overlay';
  version: 1;
  /** The lower tree: the image's `rootfs/`, or the pool's shifted copy of it. */
  lower: string;
  /** The image's tree it was made of. */
  image: string;
  /** The id map the lower is seen through (an idmapped mount): the range, or the whole map (raw.idmap); null: as stored. */
  idmap: IdRange | LowerIds | null;
}

export const OVERLAY_LAYOUT = 'overlay.json';
/**
 * The lower as a raw.idmap change made it ({ lower, idmap }, over overlay.json's): a file of its
 * own, replaced atomically, as overlay.json is never replaced (it is the mount's lock file).
 */
const LOWER_LAYOUT = 'overlay.lower.json';

async function readLayout(dir: string): Promise<OverlayLayout> {
  const layout = await readJson<OverlayLayout>(path.join(dir, OVERLAY_LAYOUT));
  const lower = await readJson<Pick<OverlayLayout, 'lower' | 'idmap'>>(path.join(dir, LOWER_LAYOUT)).catch((e) => (e.code === 'ENOENT' ? undefined : Promise.reject(e)));
  return lower ? { ...layout, lower: lower.lower, idmap: lower.idmap } : layout;
}

/** Host ids of an image's (0-based) ids through a whole map; an id past every extent as the range's offset (as hostId). */
function mapperOf(ids: LowerIds): IdMapper {
  const one = (ext: IdExtent[]) => (id: number) => {
    const e = ext.find((x) => id >= x.ns && id < x.ns + x.count);
    return e ? e.host + (id - e.ns) : id + ids.base;
  };
  return { uid: one(ids.uid), gid: one(ids.gid) };
}

/** Whether the map is its range alone (no raw.idmap extent). */
const plainRange = (ids: LowerIds): boolean =>
  (['uid', 'gid'] as const).every((k) => ids[k].length === 1 && ids[k][0].ns === 0 && ids[k][0].host === ids.base && ids[k][0].count === ids.size);
/** Where the idmapped clone of the lower is attached for the instant of the overlay's mount. */
const STAGE = '.lxq-lower';

const exists = (p: string) => fs.lstat(p).then(() => true, () => false);

/** Whether overlayfs takes an idmapped lower on this filesystem (st_dev → answer), probed once per process. */
const idmappedLowers = new Map<number, Promise<boolean>>();

export class OverlayPool implements PoolDriver {
  readonly name = 'overlay' as const;

  /** `poolDir`: the pool's own directory (shifted copies of images, where needed). */
  constructor(private readonly poolDir: string) {}

  checkConfig(config: Record<string, string>): void {
    refuseDirectoryPoolKeys('overlay', config);
  }

  async createRoot(dir: string, image: RootImage, ids: IdRange | null): Promise<void> {
    const top = await fs.stat(image.rootfs);
    let layout: OverlayLayout = { format: 'lxq-overlay', version: 1, lower: image.rootfs, image: image.rootfs, idmap: null };
    if (ids) {
      layout = (await this.idmappedLowerWorks(dir, image.rootfs, ids, top.dev))
        ? { ...layout, idmap: ids }
        : { ...layout, lower: await this.shiftedImage(image.rootfs, ids) };
    }
    // The upper's root is the merged root: the image root's mode, owned by the container's root.
    await fs.mkdir(path.join(dir, 'upper'), { mode: 0o700 });
    await fs.chown(path.join(dir, 'upper'), (ids?.base ?? 0) + top.uid, (ids?.base ?? 0) + top.gid);
    await fs.chmod(path.join(dir, 'upper'), top.mode & 0o7777);
    await fs.mkdir(path.join(dir, 'work'), { mode: 0o700 });
    await fs.mkdir(path.join(dir, 'rootfs'), { mode: 0o755 });
    await writeJsonAtomic(path.join(dir, OVERLAY_LAYOUT), layout);
  }

  /** A pool of plain directories: its directory is all of it. */
  async setupPool(): Promise<void> {}

  async openPool(): Promise<void> {}

  async destroyPool(): Promise<void> {}

  /** The tree is in `dir`, removed with it. */
  async removeRoot(): Promise<void> {}

  /** No quota of a plain directory tree is kept in this version. */
  async rootLimitRefusal(): Promise<string | undefined> {
    return 'the overlay pool keeps no per-instance quota in this version (a btrfs pool does, with qgroups)';
  }

  async limitRoot(): Promise<void> {}

  async attachRoot(dir: string): Promise<void> {
    const rootfs = path.join(dir, 'rootfs');
    if (await isMountPoint(rootfs)) return;
    // Two processes opening one host may both find it unmounted: one mounts, the other sees it.
    // The lock is on overlay.json (written once at create, never replaced): no file of its own is left.
    const lock = new FileLock(path.join(dir, OVERLAY_LAYOUT), `the root of ${path.basename(dir)}`);
    try {
      await lock.hold(async () => {
        if (await isMountPoint(rootfs)) return;
        const layout = await readLayout(dir);
        const stage = path.join(dir, STAGE);
        await fs.mkdir(stage, { mode: 0o700 }).catch((e) => (e.code === 'EEXIST' ? undefined : Promise.reject(e)));
        await unmountUnder(stage); // a clone left by a process killed within the mount
        await fs.mkdir(rootfs, { mode: 0o755 }).catch((e) => (e.code === 'EEXIST' ? undefined : Promise.reject(e)));
        await sys()
          .mountOverlay({
            target: rootfs,
            layers: [],
            image: layout.lower,
            upper: path.join(dir, 'upper'),
            work: path.join(dir, 'work'),
            stage,
            ...(layout.idmap ? { idmap: layout.idmap } : {}),
          })
          .catch((e) => {
            throw new OperationFailed(`cannot mount the root of ${path.basename(dir)}: ${(e as Error).message}`, { errno: (e as { errno?: number }).errno }, { cause: e });
          });
        await fs.rmdir(stage); // the clone was detached once the overlay held it
      });
    } finally {
      await lock.close();
    }
  }

  async detachRoot(dir: string): Promise<void> {
    await unmountUnder(dir);
  }

  async captureRoot(dir: string, into: string): Promise<void> {
    await copyTree(path.join(dir, 'upper'), path.join(into, 'upper'));
  }

  async copyRoot(dir: string, into: string, snapshotDir?: string): Promise<void> {
    await copyTree(path.join(snapshotDir ?? dir, 'upper'), path.join(into, 'upper'));
    await resetMachineId(path.join(into, 'upper'));
    await fs.mkdir(path.join(into, 'work'), { mode: 0o700 });
    await fs.mkdir(path.join(into, 'rootfs'), { mode: 0o755 });
    await fs.copyFile(path.join(dir, OVERLAY_LAYOUT), path.join(into, OVERLAY_LAYOUT));
    // The copy has its source's config, raw.idmap with it: the same view of the lower.
    await fs.copyFile(path.join(dir, LOWER_LAYOUT), path.join(into, LOWER_LAYOUT)).catch((e) => (e.code === 'ENOENT' ? undefined : Promise.reject(e)));
  }

  /**
   * The lower seen through the container's whole map (raw.idmap changed, or set at create): the
   * idmapped clone given the map's extents, or the pool's copy of the image shifted through it
   * (one per map, shared). The overlay is mounted again when the view changes.
   */
  async alignLower(dir: string, ids: LowerIds): Promise<void> {
    const layout = await readLayout(dir);
    if (!layout.idmap && layout.lower === layout.image) return; // an empty lower (a tree from another pool), or privileged
    const range = { base: ids.base, size: ids.size };
    const plain = plainRange(ids);
    const next: Pick<OverlayLayout, 'lower' | 'idmap'> = layout.idmap
      ? { lower: layout.lower, idmap: plain ? range : ids }
      : { lower: await this.shiftedImage(layout.image, range, plain ? undefined : ids), idmap: null };
    if (JSON.stringify({ lower: layout.lower, idmap: layout.idmap }) === JSON.stringify(next)) return;
    const lock = new FileLock(path.join(dir, OVERLAY_LAYOUT), `the root of ${path.basename(dir)}`);
    try {
      await lock.hold(async () => {
        await unmountUnder(dir);
        await writeJsonAtomic(path.join(dir, LOWER_LAYOUT), next);
      });
    } finally {
      await lock.close();
    }
    await this.attachRoot(dir);
  }

  /**
   * A tree from another pool is flattened: the whole of it is the upper directory, over an empty
   * lower (the pool's `empty/`, never written), so nothing of an image shows through it. Its
   * snapshots' upper directories are whole trees too, over the same lower.
   */
  async adoptTree(into: string, rootfs: string, options: AdoptOptions): Promise<void> {
    await copyTree(rootfs, path.join(into, 'upper'));
    if (options.ids) await remapTreeWith(path.join(into, 'upper'), options.ids); // a whole tree: no whiteouts
    if (options.fresh) await resetMachineId(path.join(into, 'upper'));
    if (options.snapshot) return;
    const empty = path.join(this.poolDir, 'empty');
    await fs.mkdir(empty, { recursive: true, mode: 0o555 });
    await fs.mkdir(path.join(into, 'work'), { mode: 0o700 });
    await fs.mkdir(path.join(into, 'rootfs'), { mode: 0o755 });
    const layout: OverlayLayout = { format: 'lxq-overlay', version: 1, lower: empty, image: empty, idmap: null };
    await writeJsonAtomic(path.join(into, OVERLAY_LAYOUT), layout);
  }

  async stageRestore(snapshotDir: string, staging: string): Promise<void> {
    await copyTree(path.join(snapshotDir, 'upper'), path.join(staging, 'upper'));
  }

  /** The overlay comes off, then two renames (each re-done only if not done yet), a clean work directory, and the overlay again. */
  async applyRestore(dir: string, staging: string): Promise<void> {
    const staged = path.join(staging, 'upper');
    if (await exists(staged)) {
      await this.detachRoot(dir);
      const upper = path.join(dir, 'upper');
      if (await exists(upper)) await fs.rename(upper, path.join(staging, 'replaced'));
      await fs.rename(staged, upper);
      // overlayfs's scratch space held copy-ups of the old upper: start it afresh.
      await fs.rm(path.join(dir, 'work'), { recursive: true, force: true });
      await fs.mkdir(path.join(dir, 'work'), { mode: 0o700 });
    }
    await this.attachRoot(dir);
  }

  async withView<T>(dir: string, scratch: string, snapshotDir: string | undefined, read: (rootfs: string) => Promise<T>): Promise<T> {
    if (!snapshotDir) {
      await this.attachRoot(dir);
      return read(path.join(dir, 'rootfs'));
    }
    // The snapshot's upper as a read-only layer over the same lower: its whiteouts and opaque
    // directories apply as they did in the container.
    const layout = await readLayout(dir);
    const view = path.join(scratch, 'rootfs');
    const stage = path.join(scratch, STAGE);
    await fs.mkdir(view, { recursive: true, mode: 0o755 });
    await fs.mkdir(stage, { mode: 0o700 });
    await sys().mountOverlay({ target: view, layers: [path.join(snapshotDir, 'upper')], image: layout.lower, stage, ...(layout.idmap ? { idmap: layout.idmap } : {}) });
    await fs.rmdir(stage); // the clone is detached once the overlay holds it: nothing of it is left to read
    try {
      return await read(view);
    } finally {
      await unmountUnder(scratch);
    }
  }

  /** The shifted copies of the image (no container uses it: the image store checked). */
  async releaseImage(imageRootfs: string): Promise<void> {
    const top = path.join(this.poolDir, 'shifted');
    const key = imageKey(imageRootfs);
    for (const n of await fs.readdir(top).catch(() => [] as string[])) {
      if (n.startsWith(`${key}-`)) await fs.rm(path.join(top, n), { recursive: true, force: true });
    }
  }

  /** A VM's disk is a qcow2 overlay file of its directory, as on the dir pool (qcow2 is the copy-on-write layer). */
  async prepareDisk(): Promise<void> {}

  copyDisk(dir: string, into: string, file: string): Promise<void> {
    return copyDiskFile(dir, into, file);
  }

  /**
   * Whether overlayfs here takes a lower layer that is an idmapped mount of the image's tree:
   * an overlay of it is mounted in `scratchParent` and its root's owner read back.
   */
  private idmappedLowerWorks(scratchParent: string, imageRootfs: string, ids: IdRange, dev: number): Promise<boolean> {
    let answer = idmappedLowers.get(dev);
    if (!answer) {
      answer = (async () => {
        const scratch = path.join(scratchParent, '.lxq-probe');
        const [target, stage, upper, work] = ['view', 'lower', 'upper', 'work'].map((d) => path.join(scratch, d));
        for (const d of [target, stage, upper, work]) await fs.mkdir(d, { recursive: true });
        try {
          // With an upper (nothing is written to it): overlayfs takes a single lower only so.
          await sys().mountOverlay({ target, layers: [], image: imageRootfs, stage, upper, work, idmap: ids });
          // The merged root is the upper's: an entry of the image tells how the lower is seen.
          const entry = (await fs.readdir(imageRootfs))[0];
          if (entry === undefined) return true;
          const [seen, stored] = await Promise.all([fs.lstat(path.join(target, entry)), fs.lstat(path.join(imageRootfs, entry))]);
          return seen.uid === stored.uid + ids.base;
        } catch {
          return false;
        } finally {
          await unmountUnder(scratch);
          await fs.rm(scratch, { recursive: true, force: true });
        }
      })();
      idmappedLowers.set(dev, answer);
    }
    return answer;
  }

  /** The pool's copy of the image shifted for `ids`, or through the whole map `full` (made once, shared by every container with that map). */
  private async shiftedImage(imageRootfs: string, ids: IdRange, full?: LowerIds): Promise<string> {
    const whole = full ? `-${createHash('sha256').update(JSON.stringify([full.uid, full.gid])).digest('hex').slice(0, 16)}` : '';
    const key = `${imageKey(imageRootfs)}-${ids.base}-${ids.size}${whole}`;
    const shifted = path.join(this.poolDir, 'shifted', key);
    if (await exists(path.join(shifted, 'rootfs'))) return path.join(shifted, 'rootfs');
    await fs.mkdir(path.dirname(shifted), { recursive: true, mode: 0o711 });
    const staging = stagingPath(path.dirname(shifted), 'shift');
    await fs.mkdir(staging, { mode: 0o711 });
    try {
      if (full) await copyTreeThrough(imageRootfs, path.join(staging, 'rootfs'), mapperOf(full));
      else await copyTreeShifted(imageRootfs, path.join(staging, 'rootfs'), ids.base);
      await renameNew(staging, shifted).catch((e) => {
        // Another container with this map made it first: theirs is the same.
        if (e.code !== 'EEXIST' && e.code !== 'ENOTEMPTY') throw e;
      });
    } finally {
      await fs.rm(staging, { recursive: true, force: true });
    }
    return path.join(shifted, 'rootfs');
  }
}
