/**
 * Devices checked before anything is done with them: first their shape (names, keys, value
 * forms, what each instance type takes; `normalizeDevices`), then what the host has at their
 * sources (`probeDevices`). Both throw InvalidArgument naming the device and the key, or
 * NotSupported naming the condition; neither changes anything.
 */
import { promises as fs } from 'node:fs';
import * as path from 'node:path';

import type { InstanceType } from '../config/options';
import { editDistance, parseDiskLimit, parseSize } from '../core/units';
import { InvalidArgument, NotSupported } from '../core/errors';
import { refuseControlChars } from '../core/guard';
import type { Networks } from '../network/networks';
import { parseProxy } from '../network/proxy-address';
import { checkNatShape } from '../network/proxy-nat';
import {
  DEVICE_TYPES,
  type DeviceConfig,
  type DeviceKeySpec,
  type DevicePatch,
  type Devices,
  type DeviceType,
  type DeviceTypeSpec,
  deviceFlag,
  deviceValue,
  DISK_LIMITS,
  type NicType,
  type RootLimits,
} from './declarations';
import { checkNicShape, probeNic } from './nic-checks';
import type { VolumeResolver } from '../storage/volumes/types';
import { validateVolumeName } from '../storage/volumes/names';
import { checkOneTpm, checkTpmShape, probeTpm } from './tpm';
import { checkHotplugShape, probeHotplug } from './hotplug';
import { checkPassthroughShape, PASSTHROUGH, probePassthrough } from './passthrough';
import { backingDevice, hasIoLimits, lockedFlags, refuseUnlimitable } from './disk-limits';
import { mountOptions } from './mount-options';

export { hasIoLimits };

/** The disk keys of a VM's block disks only (a share is served by virtiofsd). */
const BLOCK_ONLY = ['io.bus', 'io.cache', 'boot.priority', 'limits.read', 'limits.write', 'limits.max'];

/** Device names: an identifier, safe as a file name, a QEMU id and a mount tag. */
const DEVICE_NAME = /^[A-Za-z][A-Za-z0-9_-]{0,62}$/;

export function validateDeviceName(name: unknown): string {
  if (typeof name !== 'string' || !DEVICE_NAME.test(name)) {
    throw new InvalidArgument(
      `invalid device name ${JSON.stringify(name)}: use 1-63 letters, digits, "_" and "-", starting with a letter`,
    );
  }
  return name;
}

function spec(type: DeviceType): DeviceTypeSpec {
  return DEVICE_TYPES[type];
}

function checkValue(where: string, key: string, k: DeviceKeySpec, value: string): void {
  const bad = (why: string) => new InvalidArgument(`${where}: bad value for "${key}": ${why}`);
  // No control character (a tab aside: it is escaped where it is written): none reaches a generated file.
  refuseControlChars(`${where}: bad value for "${key}"`, value, { allowTab: true });
  switch (k.form) {
    case 'path':
      if (!value.startsWith('/')) throw bad(`expected an absolute path, got ${JSON.stringify(value)}`);
      if (value.split('/').some((c) => c === '..' || c === '.')) throw bad(`"." and ".." are not allowed in ${JSON.stringify(value)}`);
      break;
    case 'boolean':
      if (value !== 'true' && value !== 'false') throw bad(`expected "true" or "false", got ${JSON.stringify(value)}`);
      break;
    case 'integer':
      if (!/^\d{1,10}$/.test(value) || Number(value) > 0xffffffff) throw bad(`expected a non-negative integer, got ${JSON.stringify(value)}`);
      break;
    case 'mode':
      if (!/^0?[0-7]{3,4}$/.test(value) || parseInt(value, 8) > 0o7777) throw bad(`expected octal permission bits such as "0660", got ${JSON.stringify(value)}`);
      break;
    case 'size':
      try {
        parseSize(value);
      } catch (e) {
        throw bad((e as Error).message);
      }
      break;
    case 'iolimit':
      try {
        parseDiskLimit(value);
      } catch (e) {
        throw bad((e as Error).message);
      }
      break;
    case 'enum':
      if (!k.values?.includes(value)) throw bad(`expected one of ${k.values?.map((v) => `"${v}"`).join(', ')}, got ${JSON.stringify(value)}`);
      break;
    case 'string':
      break;
  }
}

/**
 * A root disk's I/O limits (LXD's `limits.*` keys on the `root` device), checked as any disk's;
 * undefined when it has none. A VM's are NotSupported in this version (an extra block disk takes them).
 */
export function checkRootLimits(instanceType: InstanceType, root: Record<string, unknown>): RootLimits | undefined {
  const given = DISK_LIMITS.filter((k) => root[k] !== undefined);
  if (!given.length) return undefined;
  if (instanceType === 'vm') throw new NotSupported(`device "root": ${given.map((k) => `"${k}"`).join(', ')} on a VM's root disk are not in this version (an extra block disk takes them)`);
  const out: RootLimits = {};
  for (const k of given) {
    if (typeof root[k] !== 'string') throw new InvalidArgument(`device "root": "${k}" must be a string such as "10MB" or "100iops"`);
    checkValue('device "root"', k, DEVICE_TYPES.disk.keys[k], root[k]);
    out[k] = root[k];
  }
  if (out['limits.max'] !== undefined && given.length > 1) throw new InvalidArgument('device "root": give "limits.max" (both directions) or "limits.read"/"limits.write", not both');
  return out;
}

/** One device's keys and values, normalized to strings; the type decides what it takes. */
export function normalizeDevice(instanceType: InstanceType, name: string, input: unknown): DeviceConfig {
  validateDeviceName(name);
  const where = `device "${name}"`;
  if (input === null || typeof input !== 'object' || Array.isArray(input)) {
    throw new InvalidArgument(`${where} must be an object with a "type", e.g. { type: "disk", source: "/srv", path: "/srv" }`);
  }
  const raw = input as Record<string, unknown>;
  const type = raw.type;
  if (typeof type !== 'string' || !(type in DEVICE_TYPES)) {
    throw new InvalidArgument(`${where}: unknown device type ${JSON.stringify(type)}; known: ${Object.keys(DEVICE_TYPES).map((t) => `"${t}"`).join(', ')}`);
  }
  const s = spec(type as DeviceType);
  if (s.condition !== 'both' && s.condition !== instanceType) {
    throw new NotSupported(`${where}: "${type}" devices apply to ${s.condition} instances only, not to a ${instanceType}`);
  }
  const out: DeviceConfig = { type: type as DeviceType };
  for (const [key, value] of Object.entries(raw)) {
    if (key === 'type') continue;
    const k = (s.keys as Record<string, DeviceKeySpec>)[key];
    if (!k) {
      const near = Object.keys(s.keys).filter((c) => editDistance(c, key) <= 2);
      throw new InvalidArgument(
        `${where}: unknown key "${key}" for a ${type} device` +
          (near.length ? `; did you mean ${near.map((c) => `"${c}"`).join(', ')}?` : `; known: ${Object.keys(s.keys).join(', ')}`),
      );
    }
    if (k.condition !== 'both' && k.condition !== instanceType) {
      throw new InvalidArgument(`${where}: "${key}" applies to ${k.condition} instances only, not to a ${instanceType}`);
    }
    if (typeof value !== 'string' && typeof value !== 'number' && typeof value !== 'boolean') {
      throw new InvalidArgument(`${where}: "${key}" must be a string, number or boolean, got ${value === null ? 'null' : typeof value}`);
    }
    const text = String(value);
    // With `pool`, `source` is a volume's name, checked as one (checkShape).
    checkValue(where, key, key === 'source' && type === 'disk' && raw.pool !== undefined ? { ...k, form: 'string' } : k, text);
    out[key] = text;
  }
  checkShape(instanceType, name, out);
  return out;
}

/** What each device type needs, beyond single values. */
function checkShape(instanceType: InstanceType, name: string, d: DeviceConfig): void {
  const where = `device "${name}"`;
  const need = (key: string, why: string) => {
    if (d[key] === undefined) throw new InvalidArgument(`${where}: "${key}" is required (${why})`);
  };
  if (d.type === 'disk') {
    mountOptions(where, d['raw.mount.options']);
    if (d.pool !== undefined) {
      need('source', 'the name of a custom volume on the pool');
      try {
        validateVolumeName(d.source);
      } catch (e) {
        throw new InvalidArgument(`${where}: bad value for "source": ${(e as Error).message}`);
      }
    }
    if (instanceType === 'container') {
      need('source', 'the host directory or file to bind-mount');
      need('path', 'where it appears inside the container');
    } else if (d.size !== undefined) {
      if (d.source !== undefined) throw new InvalidArgument(`${where}: give "source" (an existing disk image) or "size" (a new one), not both`);
      if (d.path !== undefined) throw new InvalidArgument(`${where}: a new block disk ("size") has no "path": the guest sees it as a disk, named by its serial "${name}"`);
    } else {
      need('source', 'a host directory to share, or a disk image file; or give "size" for a new disk');
    }
    if (d.path === '/') throw new InvalidArgument(`${where}: "path" cannot be "/" (the instance's root)`);
    if (d['limits.max'] !== undefined && (d['limits.read'] !== undefined || d['limits.write'] !== undefined)) {
      throw new InvalidArgument(`${where}: give "limits.max" (both directions) or "limits.read"/"limits.write", not both`);
    }
    checkTarget(where, d);
  } else if (d.type === 'proxy') {
    const keys = d as unknown as Record<string, string | undefined>;
    if (parseProxy(where, keys, instanceType === 'vm').nat) checkNatShape(name, keys, instanceType === 'vm');
  } else if (d.type === 'nic') {
    checkNicShape(instanceType, name, d);
  } else if (d.type === 'tpm') {
    checkTpmShape(instanceType, name, d);
    checkTarget(where, d);
  } else if (d.type === 'unix-hotplug') {
    checkHotplugShape(name, d);
  } else if (PASSTHROUGH.includes(d.type)) {
    checkPassthroughShape(instanceType, name, d);
  } else {
    if (d.source === undefined && (d.major === undefined || d.minor === undefined)) {
      throw new InvalidArgument(`${where}: a ${d.type} device needs "source" (a host device node) or both "major" and "minor"`);
    }
    if (d.source === undefined) need('path', 'where the node is made inside the container');
    checkTarget(where, d);
  }
}

/** The kernel's filesystems inside an instance: nothing is mounted or made at or below them. */
const KERNEL_FILESYSTEMS = ['/proc', '/sys'];

/**
 * Where a device may not appear inside: the root, /proc and /sys and anything below them, and
 * /dev itself; a disk not below /dev either (only device nodes go there). Paths are compared
 * normalized ("//dev/" is /dev), so no spelling gets past.
 */
function checkTarget(where: string, d: DeviceConfig): void {
  const key = d.path !== undefined ? 'path' : 'source';
  const given = d[key];
  if (given === undefined) return;
  const p = path.posix.normalize(given).replace(/\/+$/, '') || '/';
  const under = (top: string) => p === top || p.startsWith(top + '/');
  let why: string | undefined;
  if (p === '/') why = 'it is the instance\'s root';
  else if (KERNEL_FILESYSTEMS.some(under)) why = `${p.split('/').slice(0, 2).join('/')} is the instance's kernel filesystem; nothing can be put at or below /proc or /sys`;
  else if (p === '/dev') why = 'it is the instance\'s device filesystem; a device goes below it (e.g. /dev/fuse)';
  else if (d.type === 'disk' && under('/dev')) why = 'a disk cannot be mounted below /dev, where the device nodes are';
  if (why) throw new InvalidArgument(`${where}: bad value for "${key}": ${JSON.stringify(given)} is refused: ${why}`);
}

/** Where a device appears inside the instance, if it has a path (unix devices default to their source). */
export function devicePath(d: DeviceConfig): string | undefined {
  const p = d.path ?? (d.type === 'disk' ? undefined : d.source);
  return p === undefined ? undefined : p.replace(/\/+$/, '') || '/';
}

/** Every device of a map, and no two of them on one path. */
export function normalizeDevices(instanceType: InstanceType, input: unknown): Devices {
  if (input === undefined) return {};
  if (input === null || typeof input !== 'object' || Array.isArray(input)) {
    throw new InvalidArgument('devices must be an object of device names to devices, e.g. { data: { type: "disk", source: "/srv", path: "/srv" } }');
  }
  const out: Devices = {};
  for (const [name, d] of Object.entries(input as Record<string, unknown>)) out[name] = normalizeDevice(instanceType, name, d);
  checkPaths(out);
  return out;
}

/** Two devices may not claim one path inside the instance (nor two TPMs be in one). */
export function checkPaths(devices: Devices): void {
  checkOneTpm(devices);
  const seen = new Map<string, string>();
  for (const [name, d] of Object.entries(devices)) {
    const p = devicePath(d);
    if (p === undefined) continue;
    const other = seen.get(p);
    if (other) throw new InvalidArgument(`devices "${other}" and "${name}" both use the path ${p}`);
    seen.set(p, name);
  }
}

/** A stored device with `patch` applied (a null removes the key), checked again whole. */
export function patchDevice(instanceType: InstanceType, name: string, current: DeviceConfig, patch: DevicePatch): DeviceConfig {
  if (patch === null || typeof patch !== 'object' || Array.isArray(patch)) throw new InvalidArgument(`the change of device "${name}" must be an object of keys to values`);
  if ('type' in patch && patch.type !== current.type) throw new InvalidArgument(`device "${name}": the type of a device cannot change (remove it and add a new one)`);
  const next: Record<string, unknown> = { ...current };
  for (const [key, value] of Object.entries(patch)) {
    if (value === null) delete next[key];
    else next[key] = value;
  }
  return normalizeDevice(instanceType, name, next);
}

// ---- what the host has ----

export type SourceKind = 'dir' | 'file' | 'char' | 'block' | 'missing';

/** What a device's source is on the host, read when it is added and at each start. */
export interface DeviceSource {
  kind: SourceKind;
  /** Device numbers of a node (its own `major`/`minor` keys win). */
  major?: number;
  minor?: number;
  /** A VM disk image's format, from its first bytes. */
  format?: 'qcow2' | 'raw';
  /** A custom volume's data on the host (a disk with `pool`): what is mounted instead of `source`. */
  hostPath?: string;
  /** A NIC's type, bridge (`bridged`), lower or moved link (`parent`) and MTU. */
  nictype?: NicType;
  bridge?: string;
  parent?: string;
  mtu?: number;
  /** A disk with I/O limits: "major:minor" of the block device under its source, or the filesystem type that has none. */
  blockDevice?: string;
  fsType?: string;
  /** A disk with raw.mount.options: the flags its source's mount has that a bind of it keeps (lockedFlags). */
  lockedFlags?: string[];
}

/** What probing needs beyond the host's files: the host's networks, and whose devices these are. */
export interface ProbeEnv {
  networks: Networks;
  instance: string;
  /** Custom volumes (disks with `pool`); without it, such disks are refused. */
  volumes?: VolumeResolver;
}

const QCOW2_MAGIC = Buffer.from('QFI\xfb', 'latin1');

export async function probeSource(source: string | undefined): Promise<DeviceSource> {
  if (source === undefined) return { kind: 'missing' };
  const st = await fs.stat(source).catch(() => undefined);
  if (!st) return { kind: 'missing' };
  if (st.isDirectory()) return { kind: 'dir' };
  if (st.isCharacterDevice() || st.isBlockDevice()) {
    // glibc's gnu_dev_major/minor, for the numbers Node's rdev can hold.
    return { kind: st.isCharacterDevice() ? 'char' : 'block', major: Math.floor(st.rdev / 256) & 0xfff, minor: (st.rdev & 0xff) | ((Math.floor(st.rdev / 4096) & 0xfff00)) };
  }
  if (!st.isFile()) return { kind: 'missing' };
  const head = Buffer.alloc(4);
  const h = await fs.open(source, 'r');
  try {
    await h.read(head, 0, 4, 0);
  } finally {
    await h.close();
  }
  return { kind: 'file', format: head.equals(QCOW2_MAGIC) ? 'qcow2' : 'raw' };
}

/** A disk's host path: a custom volume's data, or its `source`. */
export function diskSource(d: DeviceConfig, src: DeviceSource): string {
  return src.hostPath ?? d.source!;
}

/** A custom volume's data as a source (NotSupported where the instance's driver takes none; a block volume is refused at a path). */
async function probeVolume(where: string, d: DeviceConfig, env: ProbeEnv): Promise<DeviceSource> {
  if (!env.volumes) throw new NotSupported(`${where}: custom volumes ("pool") cannot be attached to this instance in this version`);
  const v = await env.volumes.resolve(d.pool!, d.source!);
  if (v.contentType === 'block' && d.path !== undefined) {
    throw new InvalidArgument(`${where}: "${d.source}" is a block volume; it has no "path" (a VM sees it as a disk; LXD attaches block volumes to VMs only)`);
  }
  if (v.contentType === 'filesystem' && d.path === undefined) throw new InvalidArgument(`${where}: "${d.source}" is a filesystem volume; give "path", where the guest mounts it`);
  const src = await probeSource(v.path);
  if (src.kind === 'missing') throw new InvalidArgument(`${where}: the data of volume "${d.source}" of pool "${d.pool}" is missing (${v.path})`);
  return { ...src, hostPath: v.path };
}

/** Busy if a custom volume a disk names is in use by another running instance and not `security.shared`. */
export async function checkVolumesFree(devices: Devices, env: ProbeEnv): Promise<void> {
  for (const d of Object.values(devices)) if (d.type === 'disk' && d.pool !== undefined && env.volumes) await env.volumes.checkFree(d.pool, d.source!, env.instance);
}

/** A disk with I/O limits: the block device under its source too (a container's limits go on it). */
async function withBlockDevice(d: DeviceConfig, src: DeviceSource): Promise<DeviceSource> {
  if (d.type === 'disk' && src.kind !== 'missing' && d['raw.mount.options'] !== undefined) src = { ...src, lockedFlags: await lockedFlags(diskSource(d, src)) };
  if (d.type !== 'disk' || src.kind === 'missing' || !hasIoLimits(d)) return src;
  const found = await backingDevice(diskSource(d, src));
  return 'device' in found ? { ...src, blockDevice: found.device } : { ...src, fsType: found.fstype };
}

/** What each device's source is now, without judging it (for devices already in place). */
export async function readSources(devices: Devices, env: ProbeEnv): Promise<Map<string, DeviceSource>> {
  const entries = await Promise.all(
    Object.entries(devices).map(async ([name, d]): Promise<readonly [string, DeviceSource]> => {
      if (d.type === 'nic') return [name, await probeNic(name, d, env)] as const;
      const src = d.type === 'disk' && d.pool !== undefined ? await probeVolume(`device "${name}"`, d, env) : await probeSource(d.source);
      return [name, await withBlockDevice(d, src)] as const;
    }),
  );
  return new Map(entries);
}

/** A container's disk with I/O limits needs a block device under its source (NotSupported naming the device otherwise). */
export function requireBlockDevice(name: string, d: DeviceConfig, src: DeviceSource): void {
  if (src.fsType !== undefined && src.blockDevice === undefined) refuseUnlimitable(name, d, src.fsType);
}

/**
 * Checks each device's source against the host (exists unless `required` is "false", is the
 * kind the device needs) and returns what each is, by device name.
 */
export async function probeDevices(instanceType: InstanceType, devices: Devices, env: ProbeEnv): Promise<Map<string, DeviceSource>> {
  const out = new Map<string, DeviceSource>();
  for (const [name, d] of Object.entries(devices)) {
    const where = `device "${name}"`;
    if (d.type === 'nic') {
      out.set(name, await probeNic(name, d, env, instanceType));
      continue;
    }
    if (d.type === 'disk' && d.pool !== undefined) {
      out.set(name, await withBlockDevice(d, await probeVolume(where, d, env)));
      if (instanceType === 'container') requireBlockDevice(name, d, out.get(name)!);
      continue;
    }
    if (PASSTHROUGH.includes(d.type)) await probePassthrough(name, d);
    if (d.type === 'tpm' || d.type === 'unix-hotplug') {
      await (d.type === 'tpm' ? probeTpm(instanceType, name) : probeHotplug(name, d));
      out.set(name, { kind: 'missing' });
      continue;
    }
    const src = await withBlockDevice(d, await probeSource(d.source));
    if (instanceType === 'container') requireBlockDevice(name, d, src);
    if (d.source !== undefined && src.kind === 'missing' && deviceFlag(d, 'required')) {
      throw new InvalidArgument(`${where}: "source" ${d.source} does not exist on the host (set required: "false" to skip the device when it is missing)`);
    }
    if (src.kind !== 'missing' && d.type === 'disk') await checkResolvedSource(where, d.source!);
    if (src.kind !== 'missing') {
      if (d.type === 'unix-char' && src.kind !== 'char') throw new InvalidArgument(`${where}: "source" ${d.source} is not a character device`);
      if (d.type === 'unix-block' && src.kind !== 'block') throw new InvalidArgument(`${where}: "source" ${d.source} is not a block device`);
      if (d.type === 'disk' && instanceType === 'vm') {
        if (src.kind === 'dir' && d.path === undefined) throw new InvalidArgument(`${where}: a shared directory needs "path", where the guest mounts it`);
        const blockOnly = BLOCK_ONLY.filter((k) => d[k] !== undefined);
        if (src.kind === 'dir' && blockOnly.length) throw new InvalidArgument(`${where}: ${blockOnly.map((k) => `"${k}"`).join(', ')} apply to block disks, not to a shared directory`);
        if (src.kind === 'file' && d.path !== undefined) {
          throw new InvalidArgument(`${where}: a file cannot be shared into a VM; a disk image file is attached as a block disk: leave "path" out`);
        }
        if (src.kind === 'char' || src.kind === 'block') throw new InvalidArgument(`${where}: "source" of a VM disk must be a directory or a disk image file, not a device node`);
      }
    }
    out.set(name, src);
  }
  return out;
}

/**
 * A disk's source as the mount will see it: symlinks resolved. The host's root is refused, said
 * so whatever the spelling (liblxc would otherwise fail the start with an unrelated message).
 */
async function checkResolvedSource(where: string, source: string): Promise<void> {
  const real = await fs.realpath(source).catch(() => source);
  if (real !== '/') return;
  throw new InvalidArgument(
    `${where}: "source" ${JSON.stringify(source)}${source.replace(/\/+$/, '') === '' ? ' is' : ' resolves to'} /, the host's root: sharing the whole host is refused`,
  );
}

/** The node numbers of a unix device: its own keys, else its source's. */
export function nodeNumbers(d: DeviceConfig, src: DeviceSource): { major: number; minor: number } {
  return { major: Number(d.major ?? src.major), minor: Number(d.minor ?? src.minor) };
}

/** A unix device's mode bits and owner, as seen inside. */
export function nodeOwnership(d: DeviceConfig): { mode: number; uid: number; gid: number } {
  return { mode: parseInt(deviceValue(d, 'mode') ?? '0660', 8), uid: Number(deviceValue(d, 'uid') ?? 0), gid: Number(deviceValue(d, 'gid') ?? 0) };
}

/** The path relative to the instance's root, as liblxc's mount entries take it. */
export function relativeInside(p: string): string {
  return path.posix.relative('/', p);
}
