/**
 * LXD's passthrough devices, `gpu`, `usb`, `pci` and `infiniband`: declared (declarations.ts),
 * their keys checked as LXD checks them (InvalidArgument naming the key), and what the host has
 * looked for in sysfs. This version passes none of them through: the code would be written blind
 * on a host with no GPU, USB bus, IOMMU or InfiniBand device, so each is refused with NotSupported
 * naming what was looked for and what was (or was not) found.
 */
import { promises as fs } from 'node:fs';
import * as path from 'node:path';

import type { InstanceType } from '../config/options';
import { InvalidArgument, NotSupported } from '../core/errors';
import { DEVICE_TYPES, type DeviceConfig, type DeviceKeySpec } from './declarations';
import { DEVICE_ID } from './hotplug';
import { IFNAME } from './nic-checks';

/** LXD's validate.IsPCIAddress. */
const PCI_ADDRESS = /^(?:[0-9a-fA-F]{4}:)?[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-9a-fA-F]$/;
/** A DRM card id, or a CDI name (vendor/class=name) as LXD takes. */
const GPU_ID = /^(\d{1,9}|[a-z0-9.-]+\/[a-z0-9_.-]+=[A-Za-z0-9_.:-]+)$/;
/** LXD's infinibandValidMAC: 8 or 20 bytes, hex separated by colons. */
const IB_MAC = /^(?:[0-9a-fA-F]{2}:){7}[0-9a-fA-F]{2}$|^(?:[0-9a-fA-F]{2}:){19}[0-9a-fA-F]{2}$/;

/** A PCI address as sysfs names it (domain given, lower case). */
export function normalisePci(address: string): string {
  const a = address.toLowerCase();
  return a.length === 7 ? `0000:${a}` : a;
}

function check(where: string, d: DeviceConfig, key: string, re: RegExp, what: string): void {
  if (d[key] !== undefined && !re.test(d[key])) throw new InvalidArgument(`${where}: bad value for "${key}": expected ${what}, got ${JSON.stringify(d[key])}`);
}

function checkGpu(instanceType: InstanceType, where: string, d: DeviceConfig): void {
  const type = d.gputype ?? 'physical';
  const only = type === 'mig' ? 'container' : type === 'mdev' || type === 'sriov' ? 'vm' : undefined;
  if (only && only !== instanceType) throw new InvalidArgument(`${where}: "gputype" ${type} applies to ${only} instances only, not to a ${instanceType}`);
  for (const key of Object.keys(d)) {
    const types = (DEVICE_TYPES.gpu.keys as Record<string, DeviceKeySpec>)[key]?.gputypes;
    if (types && !types.includes(type)) throw new InvalidArgument(`${where}: "${key}" does not apply to a ${type} GPU (only to ${types.join(', ')})`);
  }
  check(where, d, 'pci', PCI_ADDRESS, 'a PCI address such as "0000:01:00.0"');
  check(where, d, 'id', GPU_ID, 'a DRM card id (a number) or a CDI name');
  for (const [key, excludes] of [['pci', ['id', 'productid', 'vendorid']], ['id', ['pci', 'productid', 'vendorid']]] as const) {
    const both = excludes.find((k) => d[key] !== undefined && d[k] !== undefined);
    if (both) throw new InvalidArgument(`${where}: "${both}" cannot be used when "${key}" is set`);
  }
  if (type === 'mdev' && d.mdev === undefined) throw new InvalidArgument(`${where}: an mdev GPU needs "mdev" (the mdev profile)`);
  for (const key of ['mig.gi', 'mig.ci']) if (d[key] !== undefined && Number(d[key]) > 255) throw new InvalidArgument(`${where}: bad value for "${key}": expected 0 to 255, got ${d[key]}`);
  if (type === 'mig' && d['mig.uuid'] === undefined && d.id === undefined && (d['mig.gi'] === undefined || d['mig.ci'] === undefined)) {
    throw new InvalidArgument(`${where}: a mig GPU needs "mig.uuid", both "mig.gi" and "mig.ci", or a CDI "id"`);
  }
}

/** The passthrough devices' keys beyond single values. */
export function checkPassthroughShape(instanceType: InstanceType, name: string, d: DeviceConfig): void {
  const where = `device "${name}"`;
  for (const key of ['vendorid', 'productid']) check(where, d, key, DEVICE_ID, 'four lower-case hex digits such as "10de"');
  if (d.type === 'gpu') checkGpu(instanceType, where, d);
  if (d.type === 'pci') {
    if (d.address === undefined) throw new InvalidArgument(`${where}: a pci device needs "address" (the host device's PCI address)`);
    check(where, d, 'address', PCI_ADDRESS, 'a PCI address such as "0000:01:00.0"');
  }
  if (d.type === 'infiniband') {
    for (const key of ['nictype', 'parent']) if (d[key] === undefined) throw new InvalidArgument(`${where}: an infiniband device needs "${key}"`);
    check(where, d, 'parent', IFNAME, 'a host link name');
    check(where, d, 'name', IFNAME, 'an interface name (up to 15 characters)');
    check(where, d, 'hwaddr', IB_MAC, 'either 8 or 20 bytes of hex separated by colons');
    if (instanceType === 'container' && d.name === undefined) throw new InvalidArgument(`${where}: a container's infiniband device needs "name" (the interface's name inside)`);
  }
}

const read = (file: string) => fs.readFile(file, 'utf8').then((s) => s.trim(), () => undefined);
const hex4 = (v: string | undefined) => v?.replace(/^0x/, '').toLowerCase();
const notYet = (where: string, found: string, what: string) => new NotSupported(`${where}: found ${found}, but lxq does not pass ${what} through in this version`);
/** "vendorid 10de, pci 0000:01:00.0": the keys a device is matched on, for a message. */
const criteria = (d: DeviceConfig, keys: readonly string[]) => keys.filter((k) => d[k] !== undefined).map((k) => `${k} ${d[k]}`).join(', ') || 'any';

async function probeGpu(where: string, d: DeviceConfig): Promise<never> {
  const cards: Array<{ id: string; pci: string; vendor?: string; product?: string }> = [];
  for (const entry of await fs.readdir('/sys/class/drm').catch(() => [] as string[])) {
    const m = /^card(\d+)$/.exec(entry);
    if (!m) continue;
    const dev = path.join('/sys/class/drm', entry, 'device');
    cards.push({ id: m[1], pci: path.basename(await fs.realpath(dev).catch(() => '')), vendor: hex4(await read(path.join(dev, 'vendor'))), product: hex4(await read(path.join(dev, 'device'))) });
  }
  const match = cards.filter(
    (c) => (d.id === undefined || c.id === d.id) && (d.pci === undefined || c.pci === normalisePci(d.pci)) && (d.vendorid === undefined || c.vendor === d.vendorid) && (d.productid === undefined || c.product === d.productid),
  );
  const type = d.gputype ?? 'physical';
  if (!match.length) {
    const seen = cards.length ? `its cards: ${cards.map((c) => `card${c.id} (${c.pci} ${c.vendor}:${c.product})`).join(', ')}` : 'none: this host has no GPU (no /dev/dri)';
    throw new NotSupported(`${where}: no GPU matching ${criteria(d, ['id', 'pci', 'vendorid', 'productid'])} (a ${type} GPU): looked for DRM cards in /sys/class/drm, ${seen}`);
  }
  throw notYet(where, `card${match[0].id} (${match[0].pci})`, `${type} GPUs`);
}

async function probeUsb(where: string, d: DeviceConfig): Promise<never> {
  const top = '/sys/bus/usb/devices';
  const entries = await fs.readdir(top).catch(() => undefined);
  if (!entries) throw new NotSupported(`${where}: this host has no USB bus: ${top} is missing, so no USB device matching ${criteria(d, ['vendorid', 'productid', 'serial', 'busnum', 'devnum'])} can be there`);
  for (const entry of entries.filter((e) => !e.includes(':'))) {
    const dir = path.join(top, entry);
    const [vendorid, productid, serial, busnum, devnum] = await Promise.all(['idVendor', 'idProduct', 'serial', 'busnum', 'devnum'].map((f) => read(path.join(dir, f))));
    const has: Record<string, string | undefined> = { vendorid, productid, serial, busnum, devnum };
    if (['vendorid', 'productid', 'serial', 'busnum', 'devnum'].every((k) => d[k] === undefined || has[k] === d[k])) throw notYet(where, `the USB device ${vendorid}:${productid} at ${dir}`, 'USB devices');
  }
  throw new NotSupported(`${where}: no USB device matching ${criteria(d, ['vendorid', 'productid', 'serial', 'busnum', 'devnum'])} under ${top} (${entries.length} entries)`);
}

async function probePci(where: string, d: DeviceConfig): Promise<never> {
  const address = normalisePci(d.address);
  const dir = path.join('/sys/bus/pci/devices', address);
  const vendor = hex4(await read(path.join(dir, 'vendor')));
  if (vendor === undefined) throw new NotSupported(`${where}: no PCI device at ${address} on this host (looked in /sys/bus/pci/devices)`);
  const device = `${vendor}:${hex4(await read(path.join(dir, 'device')))}`;
  const driver = path.basename(await fs.readlink(path.join(dir, 'driver')).catch(() => 'none'));
  if (!(await fs.stat(path.join(dir, 'iommu_group')).then(() => true, () => false))) {
    throw new NotSupported(`${where}: the PCI device at ${address} (${device}, driver ${driver}) has no IOMMU group: passing it through (vfio-pci) needs the host's IOMMU, which this host has not enabled`);
  }
  throw notYet(where, `the PCI device at ${address} (${device}, driver ${driver})`, 'PCI devices');
}

async function probeInfiniband(where: string, d: DeviceConfig): Promise<never> {
  const type = await read(path.join('/sys/class/net', d.parent, 'type'));
  const devices = await fs.readdir('/sys/class/infiniband').catch(() => [] as string[]);
  const none = devices.length ? `its InfiniBand devices: ${devices.join(', ')}` : 'this host has no InfiniBand device (/sys/class/infiniband)';
  if (type === undefined) throw new NotSupported(`${where}: no host link "${d.parent}" (looked in /sys/class/net); ${none}`);
  // ARPHRD_INFINIBAND.
  if (type !== '32') throw new NotSupported(`${where}: the host link "${d.parent}" is not an InfiniBand link (its type is ${type}, InfiniBand's is 32); ${none}`);
  throw notYet(where, `the InfiniBand link "${d.parent}"`, `${d.nictype} InfiniBand NICs`);
}

/** What the host has for a passthrough device: always a NotSupported, naming what was looked for. */
export function probePassthrough(name: string, d: DeviceConfig): Promise<never> {
  const where = `device "${name}"`;
  if (d.type === 'gpu') return probeGpu(where, d);
  if (d.type === 'usb') return probeUsb(where, d);
  if (d.type === 'pci') return probePci(where, d);
  return probeInfiniband(where, d);
}

/** The passthrough device types. */
export const PASSTHROUGH = ['gpu', 'usb', 'pci', 'infiniband'];
