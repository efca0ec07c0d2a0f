/**
 * A VM block disk's I/O settings (LXD's disk keys): host caching (`io.cache`), boot order
 * (`boot.priority`) and I/O limits (`limits.read`, `limits.write`, `limits.max`), the limits set
 * through QMP's block_set_io_throttle on the disk's QEMU device, at start, on hot-plug and live.
 */
import { parseDiskLimit } from '../../core/units';
import { type DeviceConfig, type Devices, DISK_LIMITS } from '../../devices/declarations';
import type { QmpCommands } from '../../qmp';

/** `-blockdev`'s cache options for `io.cache` (unset: QEMU's default, writeback). */
export function cacheOptions(d: DeviceConfig): { cache?: { direct: boolean; 'no-flush': boolean } } {
  const mode = d['io.cache'];
  if (mode === undefined) return {};
  return { cache: { direct: mode === 'none', 'no-flush': mode === 'unsafe' } };
}

/** QEMU bootindex of each block disk with a boot.priority: the highest priority boots first (index 1; the VM's own disk boots by the kernel given). */
export function bootIndexes(devices: Devices): Map<string, number> {
  const ranked = Object.entries(devices)
    .filter(([, d]) => d.type === 'disk' && d['boot.priority'] !== undefined)
    .sort(([a, x], [b, y]) => Number(y['boot.priority']) - Number(x['boot.priority']) || a.localeCompare(b));
  return new Map(ranked.map(([name], i) => [name, i + 1]));
}

/** True when a disk has an I/O limit. */
export function hasIoLimits(d: DeviceConfig): boolean {
  return DISK_LIMITS.some((k) => d[k] !== undefined);
}

/** block_set_io_throttle's arguments for device `id` from a disk's limits keys (all 0: none). */
export function throttleArgs(id: string, d: DeviceConfig): QmpCommands['block_set_io_throttle']['args'] {
  const out = { id, bps: 0, bps_rd: 0, bps_wr: 0, iops: 0, iops_rd: 0, iops_wr: 0 };
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
