/**
 * A VM block disk's I/O settings (LXD's disk keys): host caching (`io.cache`), boot order
 * (`boot.priority`) and I/O limits (`limits.read`, `limits.write`, `limits.max`), the limits set
 * through QMP's block_set_io_throttle on the disk's QEMU device, at start, on hot-plug and live.
 */
import type { DeviceConfig, Devices } from '../../devices/declarations';
import { diskLimits } from '../../devices/disk-limits';
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

/** block_set_io_throttle's arguments for device `id` from a disk's limits keys (all 0: none). */
export function throttleArgs(id: string, d: DeviceConfig): QmpCommands['block_set_io_throttle']['args'] {
  return { id, bps: 0, iops: 0, ...diskLimits(d) };
}
