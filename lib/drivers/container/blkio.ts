/**
 * A container's disk limits (`limits.read`, `limits.write`, `limits.max`) as block I/O cgroup
 * rules on the block device under each disk's source: v1's blkio throttle files or v2's io.max,
 * whichever the host's blkio controller is (on this project's hybrid hosts, v1). In the liblxc
 * config at start (applied before the container's init runs), and written live when the devices
 * change. On v1 only direct I/O is throttled as it happens: buffered writes reach the device
 * later, from the kernel's writeback, outside the container's cgroup (LXD has the same limit).
 */
import * as path from 'node:path';

import { backingDevice, blockLimits, hasIoLimits, type IoLimits } from '../../devices/disk-limits';
import type { Devices, RootLimits } from '../../devices/declarations';
import { type DeviceSource, type ProbeEnv, readSources, requireBlockDevice } from '../../devices/validate';
import type { CgroupLayout } from './host-facts';
import type { LxcItem } from './lxc-config';

const V1_FILES: [file: string, key: keyof IoLimits][] = [
  ['blkio.throttle.read_bps_device', 'bps_rd'],
  ['blkio.throttle.write_bps_device', 'bps_wr'],
  ['blkio.throttle.read_iops_device', 'iops_rd'],
  ['blkio.throttle.write_iops_device', 'iops_wr'],
];

/** Where the root disk's limits go beside the devices (no device name starts with a space). */
export const ROOT_DISK = ' root';

/**
 * The root disk's limits as a disk of their own (none without limits), on the block device under
 * the container's root: its rootfs's, or, where the rootfs has none (an overlay), its
 * directory's, which holds the overlay's upper layer, as LXD limits the device under the
 * instance's storage.
 */
export async function rootDisk(limits: RootLimits | undefined, dir: string): Promise<Devices> {
  if (!limits) return {};
  const rootfs = path.join(dir, 'rootfs');
  const source = 'device' in (await backingDevice(rootfs)) ? rootfs : dir;
  return { [ROOT_DISK]: { type: 'disk', source, path: '/', ...limits } };
}

const v1 = (layout: CgroupLayout) => layout.version('blkio') === 1;

/** v2's io.max line of a device (`max`: no limit). */
function ioMax(device: string, l: IoLimits): string {
  const n = (x: number) => (x > 0 ? String(x) : 'max');
  return `${device} rbps=${n(l.bps_rd)} wbps=${n(l.bps_wr)} riops=${n(l.iops_rd)} wiops=${n(l.iops_wr)}`;
}

/** The disks with I/O limits among `devices`. */
function limited(devices: Devices): Devices {
  return Object.fromEntries(Object.entries(devices).filter(([, d]) => d.type === 'disk' && hasIoLimits(d)));
}

/**
 * The liblxc items of the disks' limits at start. A disk whose source no longer has a block
 * device under it fails the start with NotSupported naming it (it was checked when added).
 */
export function blkioItems(devices: Devices, sources: Map<string, DeviceSource>, layout: CgroupLayout): LxcItem[] {
  for (const [name, d] of Object.entries(limited(devices))) if (sources.has(name)) requireBlockDevice(name, d, sources.get(name)!);
  const limits = blockLimits(devices, (name) => sources.get(name)?.blockDevice);
  const items: LxcItem[] = [];
  for (const [device, l] of limits) {
    if (!v1(layout)) items.push(['lxc.cgroup2.io.max', ioMax(device, l)]);
    else for (const [file, key] of V1_FILES) if (l[key] > 0) items.push([`lxc.cgroup.${file}`, `${device} ${l[key]}`]);
  }
  return items;
}

/** The cgroup writes that take a running container's rules from `before` to `after` (v1: 0 removes a rule). */
function blkioWrites(before: Map<string, IoLimits>, after: Map<string, IoLimits>, layout: CgroupLayout): [key: string, value: string][] {
  const none: IoLimits = { bps_rd: 0, bps_wr: 0, iops_rd: 0, iops_wr: 0 };
  const writes: [string, string][] = [];
  for (const device of new Set([...before.keys(), ...after.keys()])) {
    const [b, a] = [before.get(device) ?? none, after.get(device) ?? none];
    if (!v1(layout)) {
      if (ioMax(device, b) !== ioMax(device, a)) writes.push(['io.max', ioMax(device, a)]);
    } else for (const [file, key] of V1_FILES) if (b[key] !== a[key]) writes.push([file, `${device} ${a[key]}`]);
  }
  return writes;
}

/**
 * Changes a running container's block I/O rules from the limits of `before`'s disks to
 * `next`'s; returns what puts them back (for a change undone later).
 */
export async function applyBlkioLive(before: Devices, next: Devices, env: ProbeEnv, layout: CgroupLayout, set: (key: string, value: string) => Promise<unknown>): Promise<() => Promise<void>> {
  const [b, a] = [limited(before), limited(next)];
  if (!Object.keys(b).length && !Object.keys(a).length) return async () => undefined;
  const [sb, sa] = await Promise.all([readSources(b, env), readSources(a, env)]);
  for (const [name, d] of Object.entries(a)) requireBlockDevice(name, d, sa.get(name)!);
  const [lb, la] = [blockLimits(b, (n) => sb.get(n)?.blockDevice), blockLimits(a, (n) => sa.get(n)?.blockDevice)];
  const undo = async () => {
    for (const [key, value] of blkioWrites(la, lb, layout)) await set(key, value).catch(() => undefined);
  };
  try {
    for (const [key, value] of blkioWrites(lb, la, layout)) await set(key, value);
  } catch (e) {
    await undo();
    throw e;
  }
  return undo;
}
