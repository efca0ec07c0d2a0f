/**
 * A disk's `raw.mount.options` (LXD's key): a comma-separated list of mount options, split and
 * trimmed as LXD does (empty entries dropped). A container's disk is a bind mount of its source,
 * so what it can take is what applies to a mount rather than to a filesystem: the per-mount flags
 * below, applied in order (the last of `nosuid`/`suid` wins, as in mount(8)); the atime flags are
 * locked in a container's user namespace (NotSupported). A filesystem's own
 * options (`discard`, `errors=…`) would apply where a block device's filesystem is mounted, which
 * lxq does not do: refused with NotSupported. `bind`, `rbind` and `remount` are `recursive`'s and
 * lxq's to decide (InvalidArgument), and so are liblxc's own (`create=…`, `optional`, `idmap=…`):
 * the list goes into liblxc's mount entry, where they would change what is mounted.
 */
import { InvalidArgument, NotSupported } from '../core/errors';

// linux/mount.h's MOUNT_ATTR_* (mount_setattr).
const RDONLY = 0x1;
const NOSUID = 0x2;
const NODEV = 0x4;
const NOEXEC = 0x8;

/** Each flag: the MOUNT_ATTR bit it sets or clears. */
const FLAGS: Record<string, { set?: number; clear?: number }> = {
  ro: { set: RDONLY },
  rw: { clear: RDONLY },
  nosuid: { set: NOSUID },
  suid: { clear: NOSUID },
  nodev: { set: NODEV },
  dev: { clear: NODEV },
  noexec: { set: NOEXEC },
  exec: { clear: NOEXEC },
};

/** The atime flags: locked on a bind mount in a container's user namespace (the kernel's MNT_LOCK_ATIME), so liblxc's start cannot change them. */
const ATIME = ['noatime', 'relatime', 'strictatime', 'nodiratime', 'diratime', 'atime', 'norelatime', 'nostrictatime', 'lazytime'];

/** The names raw.mount.options takes. */
export const MOUNT_FLAGS = Object.keys(FLAGS);

/** The options of a disk's raw.mount.options, checked (InvalidArgument or NotSupported naming the device and the option). */
export function mountOptions(where: string, value: string | undefined): string[] {
  if (value === undefined) return [];
  const options = value
    .split(',')
    .map((o) => o.trim())
    .filter((o) => o !== '');
  for (const o of options) {
    if (o in FLAGS) continue;
    if (!/^[A-Za-z0-9_.=:+-]+$/.test(o)) throw new InvalidArgument(`${where}: bad value for "raw.mount.options": ${JSON.stringify(o)} is not a mount option (white space and quotes cannot be in one)`);
    if (ATIME.includes(o)) {
      throw new NotSupported(`${where}: "raw.mount.options" ${JSON.stringify(o)}: a bind mount's atime flags follow its source's mount (a container's user namespace cannot change them: the kernel locks them)`);
    }
    if (['bind', 'rbind', 'remount'].includes(o)) throw new InvalidArgument(`${where}: "raw.mount.options" cannot hold "${o}": the disk is a bind mount, recursive with "recursive": "true"`);
    if (/^(create=|idmap=|optional$|relative$)/.test(o)) throw new InvalidArgument(`${where}: "raw.mount.options" cannot hold "${o}": it is liblxc's, set by lxq from the device's keys`);
    throw new NotSupported(
      `${where}: "raw.mount.options" ${JSON.stringify(o)}: a container's disk is a bind mount of its source, which takes per-mount flags only (${MOUNT_FLAGS.join(', ')}); ` +
        "a filesystem's own options apply where a block device's filesystem is mounted, which lxq does not do",
    );
  }
  return options;
}

/** mount_setattr's bits for the options, in order: what to set and clear, and whether the result is read-only. */
export function mountAttrs(options: string[]): { attrSet: number; attrClear: number; readonly: boolean } {
  let set = 0;
  let clear = 0;
  for (const o of options) {
    const f = FLAGS[o];
    if (f.set) [set, clear] = [set | f.set, clear & ~f.set];
    if (f.clear) [set, clear] = [set & ~f.clear, clear | f.clear];
  }
  return { attrSet: set & ~RDONLY, attrClear: clear & ~RDONLY, readonly: (set & RDONLY) !== 0 };
}
