/**
 * `unix-hotplug` devices (containers): which host device nodes match one, as LXD matches them.
 * LXD reads udev's properties (ID_VENDOR_ID, ID_MODEL_ID); lxq reads the kernel's uevents and
 * sysfs, as udevd does, so no udevd is needed (this host has none): a node's vendor and product
 * are those of the nearest USB device above it in sysfs (`idVendor`, `idProduct`: what udev's
 * usb_id gives), none for a node with no USB device above it (a loop device, a tty).
 *
 * LXD's two matches are kept as LXD has them: the nodes present when the container starts are
 * matched with their ids as they are, so one without ids never matches a `vendorid`; a node
 * that appears later is matched with its ids zero-padded to four digits, so one without ids is
 * 0000:0000 (LXD's uevent handler pads udev's empty values). USB nodes (the `usb` device type's)
 * and nodes with major 0 never match.
 */
import { promises as fs } from 'node:fs';
import * as path from 'node:path';

import { InvalidArgument } from '../core/errors';
import { type DeviceConfig, deviceFlag } from './declarations';

/** A host device node a unix-hotplug device may match. */
export interface HotplugNode {
  /** Its path under /dev, as the kernel names it (DEVNAME): also its path inside the container. */
  devname: string;
  subsystem: string;
  major: number;
  minor: number;
  /** Four lower-case hex digits, or "" where no USB device is above it. */
  vendor: string;
  product: string;
}

/** LXD's validate.IsDeviceID. */
export const DEVICE_ID = /^[0-9a-f]{4}$/;

/** A unix-hotplug device's keys beyond single values (LXD's checks). */
export function checkHotplugShape(name: string, d: DeviceConfig): void {
  const where = `device "${name}"`;
  for (const key of ['vendorid', 'productid']) {
    if (d[key] !== undefined && !DEVICE_ID.test(d[key])) throw new InvalidArgument(`${where}: bad value for "${key}": expected four lower-case hex digits such as "0a5c", got ${JSON.stringify(d[key])}`);
  }
  if (d.subsystem !== undefined && !/^[A-Za-z0-9_.:-]{1,64}$/.test(d.subsystem)) {
    throw new InvalidArgument(`${where}: bad value for "subsystem": expected a kernel subsystem name such as "block" or "tty", got ${JSON.stringify(d.subsystem)}`);
  }
  if (d.vendorid === undefined && d.productid === undefined && d.subsystem === undefined) {
    throw new InvalidArgument(`${where}: a unix-hotplug device needs "vendorid", "productid" or "subsystem" to match host devices on`);
  }
  if (d.uid !== undefined && d.gid !== undefined && deviceFlag(d, 'ownership.inherit')) {
    throw new InvalidArgument(`${where}: "ownership.inherit" takes the host node's owner: it cannot be set with both "uid" and "gid"`);
  }
}

/** LXD's unixHotplugDeviceMatch. */
export function hotplugMatches(d: DeviceConfig, node: Pick<HotplugNode, 'vendor' | 'product' | 'subsystem' | 'major'>): boolean {
  if (node.major === 0 || node.subsystem.startsWith('usb')) return false;
  if (d.vendorid !== undefined && d.vendorid !== node.vendor) return false;
  if (d.productid !== undefined && d.productid !== node.product) return false;
  return d.subsystem === undefined || d.subsystem === node.subsystem;
}

/** A node as a uevent sees it (ids zero-padded, as LXD's uevent handler pads them). */
export function padded(node: HotplugNode): HotplugNode {
  return { ...node, vendor: node.vendor.padStart(4, '0'), product: node.product.padStart(4, '0') };
}

/** KEY=value lines or fields (a sysfs `uevent` file, a uevent's fields) as a map. */
export function ueventProps(fields: readonly string[]): Map<string, string> {
  const out = new Map<string, string>();
  for (const f of fields) {
    const eq = f.indexOf('=');
    if (eq > 0) out.set(f.slice(0, eq), f.slice(eq + 1));
  }
  return out;
}

/** A devname is a path below /dev: no "..", nothing absolute, no empty part. */
function safeDevname(name: string | undefined): string | undefined {
  if (!name || name.startsWith('/') || name.split('/').some((c) => c === '' || c === '.' || c === '..')) return undefined;
  return name;
}

async function readId(dir: string, file: string): Promise<string | undefined> {
  const v = (await fs.readFile(path.join(dir, file), 'utf8').catch(() => undefined))?.trim().toLowerCase();
  return v !== undefined && DEVICE_ID.test(v) ? v : undefined;
}

/** The ids of the nearest USB device at or above a sysfs device directory ("" where there is none). */
async function usbIds(sysDir: string): Promise<{ vendor: string; product: string }> {
  let dir = await fs.realpath(sysDir).catch(() => sysDir);
  while (dir.startsWith('/sys/devices/')) {
    const vendor = await readId(dir, 'idVendor');
    const product = await readId(dir, 'idProduct');
    if (vendor && product) return { vendor, product };
    dir = path.dirname(dir);
  }
  return { vendor: '', product: '' };
}

/** The node a uevent's properties describe (its ids read from sysfs), or undefined if it has none. */
export async function nodeOfUevent(props: Map<string, string>): Promise<HotplugNode | undefined> {
  const devname = safeDevname(props.get('DEVNAME'));
  const subsystem = props.get('SUBSYSTEM');
  const major = Number(props.get('MAJOR'));
  const minor = Number(props.get('MINOR'));
  const devpath = props.get('DEVPATH');
  if (!devname || !subsystem || !Number.isInteger(major) || !Number.isInteger(minor) || !devpath || devpath.includes('..')) return undefined;
  const ids = props.get('ACTION') === 'remove' ? { vendor: '', product: '' } : await usbIds(path.join('/sys', devpath));
  return { devname, subsystem, major, minor, ...ids };
}

/** The device nodes the host has now (every block and char device in sysfs with a name under /dev). */
export async function presentNodes(): Promise<HotplugNode[]> {
  const out: HotplugNode[] = [];
  for (const kind of ['block', 'char']) {
    const top = `/sys/dev/${kind}`;
    for (const entry of await fs.readdir(top).catch(() => [] as string[])) {
      const dir = path.join(top, entry);
      const text = await fs.readFile(path.join(dir, 'uevent'), 'utf8').catch(() => undefined);
      if (text === undefined) continue;
      const props = ueventProps(text.split('\n'));
      const subsystem = path.basename(await fs.readlink(path.join(dir, 'subsystem')).catch(() => ''));
      if (!subsystem) continue;
      props.set('SUBSYSTEM', subsystem);
      props.set('DEVPATH', (await fs.realpath(dir).catch(() => '/sys')).slice('/sys'.length));
      const node = await nodeOfUevent(props);
      if (node) out.push(node);
    }
  }
  return out;
}

/** The nodes present now that `d` matches (at start, as LXD: ids as they are). */
export async function matchingNodes(d: DeviceConfig): Promise<HotplugNode[]> {
  return (await presentNodes()).filter((n) => hotplugMatches(d, n));
}

/** A unix-hotplug device that is `required` and matches nothing the host has now (LXD: "Required unix hotplug device not found"). */
export async function probeHotplug(name: string, d: DeviceConfig): Promise<void> {
  if (!deviceFlag(d, 'required')) return;
  if ((await matchingNodes(d)).length) return;
  const what = ['vendorid', 'productid', 'subsystem'].filter((k) => d[k] !== undefined).map((k) => `${k} ${d[k]}`);
  throw new InvalidArgument(`device "${name}": required, and no device node of this host matches ${what.join(', ')} (set required: "false" to have it added when one appears)`);
}
