/**
 * Devices of VMs, on QEMU's q35 machine.
 *
 * - A `disk` whose source is a directory is a **virtiofs share**: a `virtiofsd` per share
 *   (Debian's, in qemu-system-common) serves it on a socket in the VM's directory, QEMU's
 *   `vhost-user-fs-pci` device (tag = the device name) connects to it, and the guest agent mounts
 *   it at `path`. virtiofs needs the guest's RAM shared with virtiofsd: every VM's RAM is a
 *   `memory-backend-memfd,share=on`. `readonly` is enforced on the host: virtiofsd runs in a
 *   mount namespace of its own where the source is a read-only bind mount. (9p is no fallback
 *   here: Debian's cloud kernel has no 9p.)
 * - A `nic` is a tap on its bridge (made by lxq, opened by QEMU by name) and a `virtio-net-pci`.
 * - A `disk` whose source is a disk image file (raw or qcow2, told by its first bytes), or that
 *   has a `size` (a new qcow2 that lxq makes in `<vm>/devices/<name>.qcow2`), is a **block disk**:
 *   `-blockdev` + `virtio-blk-pci` (or `scsi-hd` on a virtio-scsi controller), the device name as
 *   its serial (`/dev/disk/by-id/virtio-<name>`).
 *
 * Every device sits on a PCIe root port of its own, so that each can be unplugged; a few spare
 * ports take hot-plugged ones (`device_add`, and `device_del` waited on through DEVICE_DELETED).
 * The command line at launch and the hot-plug commands are built from the same objects.
 */
import { promises as fs } from 'node:fs';
import * as path from 'node:path';

import { InvalidArgument, OperationFailed } from '../../core/errors';
import { qemuOptionValue, refuseControlChars } from '../../core/guard';
import { execHelper } from '../../core/run';
import { parseSize } from '../../core/units';
import { type DeviceConfig, type Devices, deviceFlag, deviceValue } from '../../devices/declarations';
import { nics, nicType } from '../../devices/nic';
import { makeVmNic, releaseVmNic } from './nics';
import { type DeviceSource, devicePath, diskSource } from '../../devices/validate';
import type { QmpCommands } from '../../qmp';
import { removeVmCpuCgroup } from './cgroup';
import { helperAlive, type HostHelper, startHostHelper, stopHostHelper } from './host-helper';
import { stopSwtpm, tpmLaunchArgs, tpmSocket } from './tpm';
import type { DeviceState } from '../../instance/instance';
import { bootIndexes, cacheOptions } from './disk-io';
import { memoryBackendOptions, type VmMemory } from './limits';

const run = (cmd: string, args: string[]) => execHelper(cmd, args);

export const VIRTIOFSD = '/usr/lib/qemu/virtiofsd';
/** Root ports beyond the devices present at launch, for hot-plug. */
export const SPARE_PORTS = 4;
export const MEMORY_BACKEND = 'lxq-mem';
const SCSI_CONTROLLER = 'lxq-scsi';
const USB_CONTROLLER = 'lxq-xhci';
/** The controllers a disk's `io.bus` needs beside it (one per VM, on a root port of its own): QEMU driver and id. */
export const BUS_CONTROLLERS: Readonly<Record<string, { driver: string; id: string }>> = {
  'virtio-scsi': { driver: 'virtio-scsi-pci', id: SCSI_CONTROLLER },
  usb: { driver: 'qemu-xhci', id: USB_CONTROLLER },
};

export type VmDeviceKind = 'share' | 'block' | 'nic' | 'skip';

export function vmDeviceKind(d: DeviceConfig, src: DeviceSource): VmDeviceKind {
  if (d.type === 'nic') return src.kind !== 'missing' && (nicType(d) !== 'bridged' || src.bridge) ? 'nic' : 'skip';
  if (d.type !== 'disk') return 'skip';
  if (d.size !== undefined) return 'block';
  if (src.kind === 'dir') return 'share';
  if (src.kind === 'file') return 'block';
  return 'skip'; // a missing source that is not required
}

export const qemuDeviceId = (name: string) => `dev-${name}`;
export const qemuNodeName = (name: string) => `lxq-${name}`;
const chardevId = (name: string) => `chr-${name}`;
const portId = (i: number) => `lxq-port${i}`;

/** Where lxq keeps what it makes for a VM's devices (new disks, virtiofsd sockets). */
export function devicesDir(vmDir: string): string {
  return path.join(vmDir, 'devices');
}
export function newDiskFile(vmDir: string, name: string): string {
  return path.join(devicesDir(vmDir), `${name}.qcow2`);
}
function shareSocket(vmDir: string, name: string): string {
  return path.join(devicesDir(vmDir), `virtiofs-${name}.sock`);
}

/** `-blockdev` / QMP `blockdev-add` arguments of a block disk. */
export function blockdevArgs(vmDir: string, name: string, d: DeviceConfig, src: DeviceSource): QmpCommands['blockdev-add']['args'] {
  const readOnly = deviceFlag(d, 'readonly');
  const filename = src.hostPath ?? d.source ?? newDiskFile(vmDir, name);
  const format = d.source === undefined ? 'qcow2' : src.format ?? 'raw';
  return { 'node-name': qemuNodeName(name), driver: format, 'read-only': readOnly, ...cacheOptions(d), file: { driver: 'file', filename, 'read-only': readOnly } };
}

/** `-device` / QMP `device_add` arguments of a device, on root port `bus` (a block disk first in boot order at `bootindex`). */
export function deviceArgs(vmDir: string, name: string, d: DeviceConfig, src: DeviceSource, bus: string, bootindex?: number): QmpCommands['device_add']['args'] {
  if (vmDeviceKind(d, src) === 'share') {
    return { driver: 'vhost-user-fs-pci', id: qemuDeviceId(name), chardev: chardevId(name), tag: name, bus };
  }
  const boot = bootindex !== undefined ? { bootindex } : {};
  const ioBus = deviceValue(d, 'io.bus');
  if (ioBus === 'virtio-scsi') return { driver: 'scsi-hd', id: qemuDeviceId(name), drive: qemuNodeName(name), serial: name, bus: `${SCSI_CONTROLLER}.0`, ...boot };
  if (ioBus === 'usb') return { driver: 'usb-storage', id: qemuDeviceId(name), drive: qemuNodeName(name), serial: name, bus: `${USB_CONTROLLER}.0`, ...boot };
  // An NVMe serial is 20 bytes.
  if (ioBus === 'nvme') return { driver: 'nvme', id: qemuDeviceId(name), drive: qemuNodeName(name), serial: name.slice(0, 20), bus, ...boot };
  return { driver: 'virtio-blk-pci', id: qemuDeviceId(name), drive: qemuNodeName(name), serial: name, bus, ...boot };
}

/**
 * A `-device`/`-netdev` option string from its object form: each value with its ',' doubled
 * (QEMU's escape) and no control character; the keys and the leading driver are lxq's own words.
 */
export function optionString(o: Record<string, unknown>, first: string): string {
  const parts = [qemuOptionValue(first, String(o[first]))];
  for (const [k, v] of Object.entries(o)) {
    if (k === first) continue;
    if (!/^[A-Za-z0-9_.-]+$/.test(k)) throw new InvalidArgument(`the QEMU command line: ${JSON.stringify(k)} is not an option key`);
    parts.push(`${k}=${qemuOptionValue(`${String(o[first])} ${k}`, String(v))}`);
  }
  return parts.join(',');
}

/** Makes what a device needs before QEMU sees it: a new qcow2 for a `size` disk. */
export async function prepareVmDevice(vmDir: string, name: string, d: DeviceConfig): Promise<void> {
  if (d.type !== 'disk' || d.size === undefined) return;
  const file = newDiskFile(vmDir, name);
  await fs.mkdir(devicesDir(vmDir), { recursive: true, mode: 0o700 });
  if (await fs.stat(file).then(() => true, () => false)) return; // kept from an earlier add: the data stays
  await run('qemu-img', ['create', '-q', '-f', 'qcow2', file, String(parseSize(d.size))]).catch((e) => {
    throw new OperationFailed(`cannot make the disk of device "${name}": ${(e as { stderr?: string }).stderr?.trim() || (e as Error).message}`, { call: 'qemu-img create' });
  });
}

/** Removes what prepareVmDevice made (a removed `size` disk's data goes with it, as in LXD). */
export async function releaseVmDevice(vmDir: string, name: string): Promise<void> {
  await fs.rm(newDiskFile(vmDir, name), { force: true });
}

/** A share's virtiofsd as a host helper (its pid checked against its socket argument). */
function virtiofsd(vmDir: string, name: string, d: DeviceConfig, source: string): HostHelper {
  const socket = shareSocket(vmDir, name);
  const args = [`--socket-path=${socket}`, '-o', `source=${source}`, '-o', 'cache=auto', '-o', 'xattr'];
  // readonly: a read-only bind of the source in a mount namespace of virtiofsd's own.
  const argv = deviceFlag(d, 'readonly')
    ? ['unshare', '--mount', '--propagation', 'private', 'sh', '-c', 'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" "$0" && exec "$@"', source, VIRTIOFSD, ...args]
    : [VIRTIOFSD, ...args];
  const file = (ext: string) => path.join(devicesDir(vmDir), `virtiofs-${name}.${ext}`);
  return { what: `virtiofsd for device "${name}"`, argv, socket, log: file('log'), pidfile: file('pid'), marker: args[0] };
}

/** A share's socket, and whether its virtiofsd runs now (state()). */
export async function shareLive(vmDir: string, name: string): Promise<{ socket: string; alive: boolean }> {
  const socket = shareSocket(vmDir, name);
  return { socket, alive: await helperAlive({ pidfile: path.join(devicesDir(vmDir), `virtiofs-${name}.pid`), marker: `--socket-path=${socket}` }) };
}

/**
 * Starts the virtiofsd of a share, detached (it outlives Node as QEMU does, and exits when QEMU
 * disconnects); resolves once its socket accepts.
 */
export async function startVirtiofsd(vmDir: string, name: string, d: DeviceConfig, source: string): Promise<string> {
  await fs.mkdir(devicesDir(vmDir), { recursive: true, mode: 0o700 });
  await startHostHelper(virtiofsd(vmDir, name, d, source));
  return shareSocket(vmDir, name);
}

/** Stops a share's virtiofsd if it still runs (QEMU never started, or was killed). */
async function stopVirtiofsd(vmDir: string, name: string): Promise<void> {
  const marker = `--socket-path=${shareSocket(vmDir, name)}`;
  await stopHostHelper({ pidfile: path.join(devicesDir(vmDir), `virtiofs-${name}.pid`), marker });
}

/** QMP `chardev-add` arguments connecting QEMU to a share's virtiofsd. */
export function chardevArgs(vmDir: string, name: string): QmpCommands['chardev-add']['args'] {
  return { id: chardevId(name), backend: { type: 'socket', data: { addr: { type: 'unix', data: { path: shareSocket(vmDir, name) } }, server: false } } };
}

/** What QEMU's command line gets for the devices present at launch; virtiofsds are started first. */
export async function launchArgs(vmDir: string, devices: Devices, sources: Map<string, DeviceSource>, memory: VmMemory, busPorts?: number, fds: fs.FileHandle[] = []): Promise<string[]> {
  const args = ['-object', `memory-backend-memfd,id=${MEMORY_BACKEND},size=${memory.mib}M,share=on${memoryBackendOptions(memory)}`, '-machine', `memory-backend=${MEMORY_BACKEND}`];
  const present = Object.entries(devices).filter(([name, d]) => vmDeviceKind(d, sources.get(name)!) !== 'skip');
  const controllers = Object.entries(BUS_CONTROLLERS).filter(([bus]) => present.some(([, d]) => d.type === 'disk' && deviceValue(d, 'io.bus') === bus));
  const needed = present.length + controllers.length;
  // limits.max_bus_ports: that many root ports, the devices present at start on the first ones.
  if (busPorts !== undefined && busPorts < needed) throw new InvalidArgument(`limits.max_bus_ports=${busPorts} is fewer than the ${needed} PCIe ports the VM's devices take at start`);
  const ports = busPorts ?? present.length + SPARE_PORTS;
  for (let i = 0; i < ports; i++) args.push('-device', `pcie-root-port,id=${portId(i)},bus=pcie.0,chassis=${i + 1}`);
  let port = 0;
  const boot = bootIndexes(devices);
  for (const [, c] of controllers) args.push('-device', `${c.driver},id=${c.id},bus=${portId(port++)}`);
  try {
    for (const [name, d] of present) {
      const src = sources.get(name)!;
      const kind = vmDeviceKind(d, src);
      if (kind === 'nic') {
        args.push('-netdev', optionString(await makeVmNic(vmDir, name, d, src, fds), 'type'));
        args.push('-device', optionString(nicDeviceArgs(name, d, src, portId(port++)), 'driver'));
        continue;
      }
      if (kind === 'share') {
        await startVirtiofsd(vmDir, name, d, diskSource(d, src));
        args.push('-chardev', `socket,id=${qemuOptionValue('-chardev id', chardevId(name))},path=${qemuOptionValue('-chardev path', shareSocket(vmDir, name))}`);
      } else {
        // JSON: its strings escape ',' and control characters themselves.
        args.push('-blockdev', JSON.stringify(blockdevArgs(vmDir, name, d, src)));
      }
      args.push('-device', optionString(deviceArgs(vmDir, name, d, src, portId(port++), boot.get(name)), 'driver'));
    }
    args.push(...(await tpmLaunchArgs(vmDir, devices, qemuDeviceId)));
    for (const a of args) refuseControlChars('the QEMU command line', a);
  } catch (e) {
    // A tap made or a virtiofsd or swtpm started before the failing device: nothing stays behind.
    await releaseHostParts(vmDir, devices);
    throw e;
  }
  return args;
}

/** What a VM's devices have on the host while it runs (its NICs' taps, its shares' virtiofsds, its swtpm), removed once its QEMU is gone. */
export async function releaseHostParts(vmDir: string, devices: Devices): Promise<void> {
  for (const [name, d] of nics(devices)) await releaseVmNic(vmDir, name, d);
  for (const name of Object.keys(devices)) await stopVirtiofsd(vmDir, name);
  await stopSwtpm(vmDir);
  await removeVmCpuCgroup(vmDir);
}

/** The guest's command that mounts a share at its path (run through the agent). */
export function guestMountCommand(name: string, d: DeviceConfig): string[] {
  const p = devicePath(d)!;
  return ['sh', '-c', `mkdir -p "$1" && mount -t virtiofs ${deviceFlag(d, 'readonly') ? '-o ro ' : ''}"$0" "$1"`, name, p];
}

export function guestUmountCommand(d: DeviceConfig): string[] {
  return ['umount', devicePath(d)!];
}

/** The root ports with nothing on them, from `query-pci`. */
export function freePorts(buses: QmpCommands['query-pci']['returns']): string[] {
  const out: string[] = [];
  for (const bus of buses) for (const dev of bus.devices) if (/^lxq-port\d+$/.test(dev.qdev_id) && (dev.pci_bridge?.devices?.length ?? 0) === 0) out.push(dev.qdev_id);
  return out;
}

export { SCSI_CONTROLLER };

/** What state() says of a VM's device: its QEMU device (and a block disk's node), a TPM's swtpm socket. */
export function vmDeviceState(vmDir: string, name: string, d: DeviceConfig, s: DeviceState): DeviceState {
  if (d.type === 'tpm') return { ...s, source: tpmSocket(vmDir), qemuDevice: qemuDeviceId(name) };
  if (d.type !== 'disk') return s;
  return { ...s, qemuDevice: qemuDeviceId(name), ...(d.path === undefined ? { qemuNode: qemuNodeName(name) } : {}) };
}

/** QMP `device_add` / `-device` arguments of a VM's NIC, on root port `bus`. */
export function nicDeviceArgs(name: string, d: DeviceConfig, src: DeviceSource, bus: string): QmpCommands['device_add']['args'] {
  return { driver: 'virtio-net-pci', id: `dev-${name}`, netdev: `net-${name}`, mac: d.hwaddr, host_mtu: src.mtu ?? 1500, bus };
}
