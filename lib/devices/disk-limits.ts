/**
 * A disk's I/O limits (`limits.read`, `limits.write`, `limits.max`: bytes/s or iops). VMs get them
 * as QEMU's throttling (lib/drivers/vm/disk-io.ts); containers as block I/O cgroup rules, which
 * are per block device: the whole disk under the source's filesystem (a partition's limits go on
 * its disk, as LXD's getDiskLimits). A filesystem with no block device under it (tmpfs, overlay,
 * a network filesystem) cannot be limited, and a container's limits there are refused.
 */
import { promises as fs } from 'node:fs';
import * as path from 'node:path';

import { NotSupported } from '../core/errors';
import { parseDiskLimit } from '../core/units';
import { type DeviceConfig, type Devices, DISK_LIMITS } from './declarations';

/** True when a disk has an I/O limit. */
export function hasIoLimits(d: DeviceConfig): boolean {
  return DISK_LIMITS.some((k) => d[k] !== undefined);
}

/** True when two configs of one disk differ in their limits keys only (a live change, no unplug). */
export function onlyLimitsChanged(before: DeviceConfig, after: DeviceConfig): boolean {
  const keys = new Set([...Object.keys(before), ...Object.keys(after)]);
  let changed = false;
  for (const k of keys) {
    if (before[k] === after[k]) continue;
    if (!(DISK_LIMITS as readonly string[]).includes(k)) return false;
    changed = true;
  }
  return changed;
}

/** A disk's limits per direction, 0 where none: `limits.max` for both, else `limits.read` / `limits.write`. */
export interface IoLimits {
  bps_rd: number;
  bps_wr: number;
  iops_rd: number;
  iops_wr: number;
}

/** The disk's limits as numbers (its keys were validated when it was added). */
export function diskLimits(d: DeviceConfig): IoLimits {
  const out: IoLimits = { bps_rd: 0, bps_wr: 0, iops_rd: 0, iops_wr: 0 };
  const set = (value: string | undefined, dirs: ('rd' | 'wr')[]) => {
    if (value === undefined) return;
    const limit = parseDiskLimit(value);
    for (const dir of dirs) {
      if ('bps' in limit) out[`bps_${dir}`] = limit.bps;
      else out[`iops_${dir}`] = limit.iops;
    }
  };
  set(d['limits.max'], ['rd', 'wr']);
  set(d['limits.read'], ['rd']);
  set(d['limits.write'], ['wr']);
  return out;
}

/** glibc's gnu_dev_major/minor, for the numbers Node's dev and rdev can hold. */
function devNumbers(dev: number): string {
  return `${Math.floor(dev / 256) & 0xfff}:${(dev & 0xff) | (Math.floor(dev / 4096) & 0xfff00)}`;
}

const exists = (p: string) => fs.access(p).then(
  () => true,
  () => false,
);

/** The mountinfo line of the mount holding `real` (the longest mount point above it, the last mounted there). */
async function mountOf(real: string): Promise<{ dev: string; fstype: string; source: string; options: string[] } | undefined> {
  const text = await fs.readFile('/proc/self/mountinfo', 'utf8').catch(() => '');
  let found: { dev: string; fstype: string; source: string; options: string[] } | undefined;
  let best = -1;
  for (const line of text.split('\n')) {
    const f = line.split(' ');
    // mountinfo escapes spaces in mount points as \040.
    const at = (f[4] ?? '').replace(/\\([0-7]{3})/g, (_m, o: string) => String.fromCharCode(parseInt(o, 8)));
    if (!at || !(real === at || real.startsWith(at === '/' ? '/' : `${at}/`)) || at.length < best) continue;
    const dash = f.indexOf('-');
    best = at.length;
    found = { dev: f[2], fstype: f[dash + 1] ?? '', source: f[dash + 2] ?? '', options: (f[5] ?? '').split(',') };
  }
  return found;
}

/**
 * Where a container disk's limits go: "major:minor" of the whole block device under `source`, or
 * the filesystem type that has none. A filesystem on an anonymous device (btrfs) is found by its
 * mount's source device, as LXD does.
 */
export async function backingDevice(source: string): Promise<{ device: string } | { fstype: string }> {
  const real = await fs.realpath(source).catch(() => path.resolve(source));
  const mount = await mountOf(real);
  let dev = mount?.dev ?? '0:0';
  if (dev.startsWith('0:') && mount?.source.startsWith('/')) {
    const st = await fs.stat(mount.source).catch(() => undefined);
    if (st?.isBlockDevice()) dev = devNumbers(st.rdev);
  }
  const sys = `/sys/dev/block/${dev}`;
  if (dev.startsWith('0:') || !(await exists(sys))) return { fstype: mount?.fstype ?? 'unknown' };
  if (!(await exists(path.join(sys, 'partition')))) return { device: dev };
  return { device: (await fs.readFile(path.join(await fs.realpath(sys), '..', 'dev'), 'utf8')).trim() };
}

/**
 * The flags of the mount holding `source` that a bind mount of it keeps in a container's user
 * namespace (the kernel locks them: a remount there cannot clear them), as liblxc adds them.
 */
export async function lockedFlags(source: string): Promise<string[]> {
  const real = await fs.realpath(source).catch(() => path.resolve(source));
  const options = (await mountOf(real))?.options ?? [];
  return ['ro', 'nosuid', 'nodev', 'noexec'].filter((o) => options.includes(o));
}

/** NotSupported for a container's disk with limits whose source has no block device. */
export function refuseUnlimitable(name: string, d: DeviceConfig, fstype: string): never {
  throw new NotSupported(
    `device "${name.trim()}": a container disk's limits are block I/O cgroup rules on the block device under its source, and ${d.source} is on a filesystem with no block device (${fstype})`,
  );
}

/**
 * The limits per block device of a container's disks (`blockDevice` of each by name): LXD's
 * arithmetic, where two disks on one device get the average of their limits per direction.
 */
export function blockLimits(devices: Devices, blockDevice: (name: string) => string | undefined): Map<string, IoLimits> {
  const per = new Map<string, IoLimits[]>();
  for (const [name, d] of Object.entries(devices)) {
    const dev = d.type === 'disk' && hasIoLimits(d) ? blockDevice(name) : undefined;
    if (dev !== undefined) per.set(dev, [...(per.get(dev) ?? []), diskLimits(d)]);
  }
  const out = new Map<string, IoLimits>();
  for (const [dev, all] of per) {
    const avg = (k: keyof IoLimits) => {
      const set = all.map((l) => l[k]).filter((x) => x > 0);
      return set.length ? Math.floor(set.reduce((a, b) => a + b, 0) / set.length) : 0;
    };
    out.set(dev, { bps_rd: avg('bps_rd'), bps_wr: avg('bps_wr'), iops_rd: avg('iops_rd'), iops_wr: avg('iops_wr') });
  }
  return out;
}
