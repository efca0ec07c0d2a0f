/** A change of an instance's devices (lib/instance/base.ts applies it through its driver). */
import type { Devices } from './declarations';

/** A change of an instance's devices, by name: as they were, and as they are now. */
export interface DeviceChange {
  removed: Devices;
  added: Devices;
}

/** What changes from `current` to `next`: the devices removed or changed (as they were), added or changed (as they are). */
export function deviceChange(current: Readonly<Devices>, next: Devices): DeviceChange {
  const same = (name: string) => name in current && name in next && JSON.stringify(current[name]) === JSON.stringify(next[name]);
  const removed = Object.fromEntries(Object.entries(current).filter(([name]) => !same(name)));
  const added = Object.fromEntries(Object.entries(next).filter(([name]) => !same(name)));
  return { removed, added };
}
