/**
 * The device edits of addDevice, removeDevice and updateDevice: from an instance's devices to the
 * next ones, checked (name, kind, keys) before anything is written. Pure, so local and remote
 * instances (lib/instance/common.ts) share them and a driver only writes the result.
 */
import type { InstanceType } from '../config/options';
import { AlreadyExists, NotFound } from '../core/errors';
import type { DeviceConfig, DeviceInput, DevicePatch, Devices } from '../devices/declarations';
import type { DeviceState } from './instance';

/* eslint-disable @typescript-eslint/no-require-imports -- what only device changes use is loaded then: `lxq list` and `lxq exec` never load it */
const nic = (): typeof import('../devices/nic') => require('../devices/nic');
const validate = (): typeof import('../devices/validate') => require('../devices/validate');
/* eslint-enable @typescript-eslint/no-require-imports */

/** Who owns the devices: the instance's name (for messages) and type (for the checks). */
export interface DeviceOwner {
  readonly name: string;
  readonly type: InstanceType;
}

/** A device name's own check (InvalidArgument), before the instance's queue is waited for. */
export function checkDeviceName(name: string): void {
  validate().validateDeviceName(name);
}

/** `devices` with `name` added (AlreadyExists if it is there), normalized, a NIC given its MAC. */
export function withDevice(owner: DeviceOwner, devices: Readonly<Devices>, name: string, device: DeviceInput): Devices {
  if (name in devices) throw new AlreadyExists(`${owner.name} already has a device named "${name}"; use updateDevice() to change it`);
  return { ...devices, [name]: nic().withHwaddrs({ [name]: validate().normalizeDevice(owner.type, name, device) })[name] };
}

/** `devices` without `name` (NotFound if it is not there). */
export function withoutDevice(owner: DeviceOwner, devices: Readonly<Devices>, name: string): Devices {
  existingDevice(owner, devices, name);
  const next = { ...devices };
  delete next[name];
  return next;
}

/** `devices` with `name` patched (NotFound if it is not there). */
export function withPatchedDevice(owner: DeviceOwner, devices: Readonly<Devices>, name: string, patch: DevicePatch): Devices {
  return { ...devices, [name]: validate().patchDevice(owner.type, name, existingDevice(owner, devices, name), patch) };
}

/** The device `name` among `devices`, else NotFound naming the ones there are. */
function existingDevice(owner: DeviceOwner, devices: Readonly<Devices>, name: string): DeviceConfig {
  const d = devices[name];
  if (!d) throw new NotFound(`${owner.name} has no device named "${name}"` + (Object.keys(devices).length ? `; it has ${Object.keys(devices).map((n) => `"${n}"`).join(', ')}` : ''));
  return d;
}

/** What state() says of any device: its kind, source and path inside (drivers add what they know). */
export function baseDeviceState(name: string, d: DeviceConfig): DeviceState {
  const where = validate().devicePath(d);
  return { name, type: d.type, ...(d.source !== undefined ? { source: d.source } : {}), ...(where !== undefined ? { path: where } : {}) };
}
