/**
 * Devices of containers. At start they come from the generated liblxc config (mount entries,
 * devices cgroup rules); on a running container they are mounted into its mount namespace by
 * the addon (mountInto: the new mount API, the target resolved inside the container's root).
 *
 * - `disk`: a bind mount of the host's source; `shift` makes it an idmapped mount over the
 *   container's user namespace (liblxc's `idmap=container` at start).
 * - `nic`: by NIC type (nics.ts).
 * - `unix-char` / `unix-block`: a node made on the host in `<instance>/devices/` (an
 *   unprivileged container cannot mknod), owned by the container's ids, bind-mounted at its
 *   path, and allowed in the devices cgroup.
 */
import { promises as fs } from 'node:fs';
import * as path from 'node:path';

import { InvalidArgument, OperationFailed } from '../../core/errors';
import type { CgroupLayout, IdMap } from './host-facts';
import { hostId } from './idmap';
import type { LxcItem } from './lxc-config';
import { sys } from '../../native/sys';
import { type DeviceConfig, deviceFlag, deviceValue } from '../../devices/declarations';
import { lxcNicItems, plugContainerNic, unplugContainerNic } from './nics';
import { unplugHotplug } from './hotplug';
export { hotplugNodes } from './hotplug';
import { applyBlkioLive, blkioItems, ROOT_DISK } from './blkio';
import type { DeviceChange } from '../../devices/change';
import { onlyLimitsChanged } from '../../devices/disk-limits';
import { mountAttrs, mountOptions } from '../../devices/mount-options';

export { releaseHostEnds, tuneHostEnds } from './nics';
export { rootDisk } from './blkio';
import { type DeviceSource, devicePath, diskSource, nodeNumbers, nodeOwnership, type ProbeEnv, relativeInside } from '../../devices/validate';
import type { Devices } from '../../devices/declarations';

export interface ContainerDeviceHost {
  /** The instance's directory. */
  dir: string;
  /** The container's id map; null for a privileged container. */
  idmap: IdMap | null;
  layout: CgroupLayout;
}

export const NODES_DIR = 'devices';

function nodeFile(host: ContainerDeviceHost, name: string): string {
  return path.join(host.dir, NODES_DIR, `unix.${name}`);
}

/** fstab's escapes, which liblxc's mount entries decode. */
function fstabEscape(s: string): string {
  return s.replace(/\\/g, '\\134').replace(/ /g, '\\040').replace(/\t/g, '\\011');
}

function cgroupRule(d: DeviceConfig, src: DeviceSource): string {
  const { major, minor } = nodeNumbers(d, src);
  return `${d.type === 'unix-block' ? 'b' : 'c'} ${major}:${minor} rwm`;
}

function cgroupKey(layout: CgroupLayout, verb: 'allow' | 'deny'): string {
  return `${layout.version('devices') === 1 ? 'lxc.cgroup' : 'lxc.cgroup2'}.devices.${verb}`;
}

/**
 * Devices that are no mount or node of the container's config: NICs (nics.ts), and those the
 * instance's device process serves (lib/host/proxy-process.ts): proxies and unix-hotplug nodes.
 */
function servedElsewhere(d: DeviceConfig): boolean {
  return d.type === 'nic' || d.type === 'proxy' || d.type === 'unix-hotplug';
}

/** A device whose source is missing and not required is skipped, at start and when added. */
export function skipped(d: DeviceConfig, src: DeviceSource): boolean {
  return d.source !== undefined && src.kind === 'missing' && !deviceFlag(d, 'required');
}

/**
 * An idmapped mount: `shift`, or a custom volume (`pool`), whose files keep the host's own ids
 * (its root is 0 on disk): every container sees them owned by its own root, whatever its id map.
 */
function shifted(d: DeviceConfig): boolean {
  return deviceFlag(d, 'shift') || d.pool !== undefined;
}

/**
 * A disk's raw.mount.options at start: liblxc 5.0 remounts a bind mount with its flags only when
 * it is read-only, so a mount hook (run in the container's mount namespace after its mounts,
 * before its init) remounts it with them, `ro` last when `readonly` (it wins over `rw`, as in
 * LXD), and the flags the source's mount locks (as liblxc keeps them). liblxc appends its own
 * arguments to a hook: the target is sh's $0 and they are $1….
 */
function flagsHook(name: string, d: DeviceConfig, src: DeviceSource): string | undefined {
  const raw = mountOptions(`device "${name}"`, d['raw.mount.options']);
  if (!raw.length) return undefined;
  const opts = [...raw, ...(src.lockedFlags ?? []), ...(deviceFlag(d, 'readonly') ? ['ro'] : [])];
  const target = relativeInside(devicePath(d)!).replace(/'/g, `'\\''`);
  return `/bin/sh -c 'exec mount -o remount,bind,${opts.join(',')} -- "$LXC_ROOTFS_MOUNT/$0"' '${target}'`;
}

/** The liblxc items a container's devices need at start. */
export function lxcDeviceItems(devices: Record<string, DeviceConfig>, sources: Map<string, DeviceSource>, host: ContainerDeviceHost): LxcItem[] {
  const items: LxcItem[] = lxcNicItems(host.dir, devices, sources);
  for (const [name, d] of Object.entries(devices)) {
    const src = sources.get(name) ?? { kind: 'missing' };
    if (servedElsewhere(d) || name === ROOT_DISK || skipped(d, src)) continue;
    const target = fstabEscape(relativeInside(devicePath(d)!));
    if (d.type === 'disk') {
      const opts = [deviceFlag(d, 'recursive') ? 'rbind' : 'bind', src.kind === 'dir' ? 'create=dir' : 'create=file'];
      if (deviceFlag(d, 'readonly')) opts.push('ro');
      if (!deviceFlag(d, 'required')) opts.push('optional');
      if (shifted(d) && host.idmap) opts.push('idmap=container');
      opts.push(deviceValue(d, 'propagation')!);
      items.push(['lxc.mount.entry', `${fstabEscape(diskSource(d, src))} ${target} none ${opts.join(',')} 0 0`]);
      const hook = flagsHook(name, d, src);
      if (hook) items.push(['lxc.hook.mount', hook]);
    } else {
      items.push(['lxc.mount.entry', `${fstabEscape(nodeFile(host, name))} ${target} none bind,create=file 0 0`]);
      items.push([cgroupKey(host.layout, 'allow'), cgroupRule(d, src)]);
    }
  }
  return [...items, ...blkioItems(devices, sources, host.layout)];
}

/**
 * liblxc makes the bind mounts (idmapped ones too) inside the container's user namespace, as
 * its root: a source that root (a high, unmapped uid on the host) cannot reach fails the start
 * with EACCES. Refused when the device is added instead, naming the directory in the way.
 */
export async function checkReachable(name: string, d: DeviceConfig, src: DeviceSource, host: ContainerDeviceHost): Promise<void> {
  if (d.type !== 'disk' || !host.idmap || src.kind === 'missing') return;
  let dir = path.dirname(await fs.realpath(diskSource(d, src)));
  for (;;) {
    const { mode } = await fs.stat(dir);
    if ((mode & 0o001) === 0) {
      throw new InvalidArgument(
        `device "${name}": the container's root (uid ${host.idmap.base} on the host) cannot reach "source" ${d.source}: ` +
          `${dir} is not searchable by others (mode ${(mode & 0o777).toString(8).padStart(4, '0')}); chmod o+x it`,
      );
    }
    if (dir === '/') return;
    dir = path.dirname(dir);
  }
}

/** What a device needs on the host before any start or plug: the node of a unix device. */
export async function prepareContainerDevice(name: string, d: DeviceConfig, src: DeviceSource, host: ContainerDeviceHost): Promise<void> {
  if ((d.type !== 'unix-char' && d.type !== 'unix-block') || skipped(d, src)) return;
  const file = nodeFile(host, name);
  await fs.mkdir(path.dirname(file), { recursive: true, mode: 0o711 });
  await fs.rm(file, { force: true });
  const { major, minor } = nodeNumbers(d, src);
  const { mode, uid, gid } = nodeOwnership(d);
  await sys()
    .makeNode(file, d.type === 'unix-block', mode, major, minor, hostId(host.idmap, 'uid', uid), hostId(host.idmap, 'gid', gid))
    .catch((e) => {
      throw new OperationFailed(`cannot make the node of device "${name}": ${(e as Error).message}`, { call: 'mknod', errno: (e as { errno?: number }).errno });
    });
}

/** Removes what prepareContainerDevice made. */
export async function releaseContainerDevice(name: string, host: ContainerDeviceHost): Promise<void> {
  await fs.rm(nodeFile(host, name), { force: true });
}

/** How a running container's devices cgroup is changed: `set(key, value)` on its cgroup. */
export type SetCgroupItem = (key: string, value: string) => Promise<unknown>;

/** Adds a device to the running container whose init is `pid`. */
export async function plugContainerDevice(pid: number, name: string, d: DeviceConfig, src: DeviceSource, host: ContainerDeviceHost, setCgroup: SetCgroupItem): Promise<void> {
  if (d.type === 'nic') return plugContainerNic(host.dir, pid, name, d, src);
  if (servedElsewhere(d) || skipped(d, src)) return;
  const target = relativeInside(devicePath(d)!);
  const owner = { uid: host.idmap?.base ?? 0, gid: host.idmap?.base ?? 0 };
  const fail = (e: unknown): never => {
    throw new OperationFailed(`cannot add device "${name}" to the running container: ${(e as Error).message}`, { call: 'mount', errno: (e as { errno?: number }).errno });
  };
  if (d.type === 'disk') {
    const { readonly, ...attrs } = mountAttrs(mountOptions(`device "${name}"`, d['raw.mount.options']));
    await sys()
      .mountInto(pid, diskSource(d, src), target, {
        dir: src.kind === 'dir',
        readonly: deviceFlag(d, 'readonly') || readonly,
        ...attrs,
        idmap: shifted(d) && host.idmap !== null,
        recursive: deviceFlag(d, 'recursive'),
        propagation: deviceValue(d, 'propagation'),
        ...owner,
      })
      .catch(fail);
    return;
  }
  await setCgroup('devices.allow', cgroupRule(d, src)).catch(fail);
  await sys().mountInto(pid, nodeFile(host, name), target, { dir: false, ...owner }).catch(async (e) => {
    await setCgroup('devices.deny', cgroupRule(d, src)).catch(() => undefined);
    fail(e);
  });
}

/** Removes a device from the running container whose init is `pid`. */
export async function unplugContainerDevice(pid: number, name: string, d: DeviceConfig, src: DeviceSource, host: ContainerDeviceHost, setCgroup: SetCgroupItem): Promise<void> {
  if (d.type === 'nic') return unplugContainerNic(host.dir, pid, name, d, src);
  if (d.type === 'unix-hotplug') return unplugHotplug(host.dir, pid, name, setCgroup);
  if (servedElsewhere(d) || skipped(d, src)) return;
  await sys()
    .umountIn(pid, relativeInside(devicePath(d)!), d.type !== 'disk')
    .catch((e) => {
      // Already gone (unmounted from inside): nothing is left to remove.
      if ((e as { code?: string }).code !== 'EINVAL' && (e as { code?: string }).code !== 'ENOENT') {
        throw new OperationFailed(`cannot remove device "${name}" from the running container: ${(e as Error).message}`, { call: 'umount', errno: (e as { errno?: number }).errno });
      }
    });
  if (d.type !== 'disk') await setCgroup('devices.deny', cgroupRule(d, src)).catch(() => undefined);
}


/** A device change on a running container: the devices before and after, and each one's source. */
export interface LiveChange {
  before: Devices;
  next: Devices;
  change: DeviceChange;
  added: Map<string, DeviceSource>;
  removed: Map<string, DeviceSource>;
}

/**
 * Applies a device change to the running container whose init is `pid`: the removed devices
 * unmounted, the added ones mounted (a disk whose limits alone changed stays mounted), then the
 * disks' block I/O rules. A failure undoes what was done; the returned function undoes it all.
 */
export async function changeLive(pid: number, c: LiveChange, host: ContainerDeviceHost, env: ProbeEnv, setCgroup: SetCgroupItem): Promise<() => Promise<void>> {
  const inPlace = new Set(Object.keys(c.change.added).filter((n) => c.change.removed[n] && onlyLimitsChanged(c.change.removed[n], c.change.added[n])));
  const removed = Object.entries(c.change.removed).filter(([n]) => !inPlace.has(n));
  const added = Object.entries(c.change.added).filter(([n]) => !inPlace.has(n));
  const plugged: string[] = [];
  const unplugged: string[] = [];
  const undo = async () => {
    for (const name of plugged) await unplugContainerDevice(pid, name, c.change.added[name], c.added.get(name)!, host, setCgroup).catch(() => undefined);
    for (const name of unplugged) await plugContainerDevice(pid, name, c.change.removed[name], c.removed.get(name)!, host, setCgroup).catch(() => undefined);
  };
  try {
    for (const [name, d] of removed) {
      await unplugContainerDevice(pid, name, d, c.removed.get(name)!, host, setCgroup);
      unplugged.push(name);
    }
    for (const [name, d] of added) {
      await plugContainerDevice(pid, name, d, c.added.get(name)!, host, setCgroup);
      plugged.push(name);
    }
    const undoLimits = await applyBlkioLive(c.before, c.next, env, host.layout, setCgroup);
    return async () => {
      await undoLimits();
      await undo();
    };
  } catch (e) {
    await undo();
    throw e;
  }
}
