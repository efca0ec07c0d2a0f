/**
 * A running container's unix-hotplug devices, served by the instance's device process
 * (lib/host/proxy-process.ts, detached: it keeps serving after the Node program that started the
 * container exits, and ends with it). It reads the kernel's uevents (the addon's watchUevents, no
 * udevd), and for each node a device matches: a node made on the host in `<instance>/devices/`
 * (an unprivileged container cannot mknod), owned by the container's ids, allowed in its
 * devices cgroup and bind-mounted at `/dev/<name>` inside; when the node goes, its mount, rule
 * and file are removed. At its start it puts the container in line with the host (nodes present
 * now added, those a previous process made that no longer match removed), so a restarted
 * process, or one started after a change of the devices, misses nothing and leaves nothing.
 */
import { promises as fs, readdirSync } from 'node:fs';
import * as path from 'node:path';

import type { DeviceConfig } from '../../devices/declarations';
import { deviceFlag, deviceValue } from '../../devices/declarations';
import { type HotplugNode, hotplugMatches, nodeOfUevent, padded, presentNodes, ueventProps } from '../../devices/hotplug';
import { lxc, type LxcContainer } from '../../native/lxc';
import { sys } from '../../native/sys';
import type { ContainerInit } from './proxy-ways';
import type { SetCgroupItem } from './devices';

const PREFIX = 'hotplug.';

/** What a made node is: its device, its name under /dev and its cgroup rule. */
interface Made {
  device: string;
  devname: string;
  rule: string;
  /** The node's device number (0: unknown). */
  rdev?: number;
}

/** The host file of a device's node (a "/" of its devname as "!", as sysfs writes it). */
function fileName(device: string, devname: string): string {
  return `${PREFIX}${device}.${devname.replace(/\//g, '!')}`;
}

function madeOf(file: string, rdev: number, block: boolean): Made | undefined {
  const rest = file.slice(PREFIX.length);
  const dot = rest.indexOf('.');
  if (!file.startsWith(PREFIX) || dot <= 0) return undefined;
  // Linux's dev_t: major in bits 8-19 and 32-43, minor in bits 0-7 and 20-31.
  const major = Math.floor(rdev / 256) % 4096 + Math.floor(rdev / 2 ** 32) * 4096;
  const minor = (rdev % 256) + (Math.floor(rdev / 2 ** 20) % 4096) * 256;
  return { device: rest.slice(0, dot), devname: rest.slice(dot + 1).replace(/!/g, '/'), rule: `${block ? 'b' : 'c'} ${major}:${minor} rwm`, rdev };
}

export class HotplugServer {
  private cancel: (() => void) | undefined;
  private queue: Promise<void> = Promise.resolve();
  private readonly cgroup: LxcContainer;

  constructor(
    private readonly dir: string,
    private readonly devices: Record<string, DeviceConfig>,
    private readonly init: ContainerInit,
    private readonly log: (line: string) => void,
  ) {
    this.cgroup = new (lxc().Container)(path.basename(dir), path.dirname(dir));
  }

  private get nodesDir(): string {
    return path.join(this.dir, 'devices');
  }

  /** Watches first (nothing appearing meanwhile is missed), then puts the container in line with the host. */
  start(): void {
    this.cancel = sys().watchUevents((fields) => this.serial(() => this.onEvent(fields)));
    this.serial(() => this.sync());
  }

  stop(): void {
    this.cancel?.();
    this.cancel = undefined;
    this.cgroup.release();
  }

  /** Events are handled one at a time, in order; a failure is logged, never thrown at the event loop. */
  private serial(task: () => Promise<void>): void {
    this.queue = this.queue.then(task).catch((e: Error) => this.log(`unix-hotplug: ${e.message}`));
  }

  private async onEvent(fields: string[]): Promise<void> {
    if (!fields.length) return this.sync(); // events were lost
    const props = ueventProps(fields);
    const action = props.get('ACTION');
    if (action !== 'add' && action !== 'remove') return;
    const node = await nodeOfUevent(props);
    if (!node) return;
    if (action === 'remove') {
      for (const m of await madeNodes(this.nodesDir)) if (m.devname === node.devname) await this.remove(m);
      return;
    }
    const name = this.deviceFor(padded(node));
    if (name) await this.add(name, node);
  }

  /** The first device (in the instance's order) matching a node: one node, one path inside. */
  private deviceFor(node: HotplugNode): string | undefined {
    return Object.keys(this.devices).find((name) => hotplugMatches(this.devices[name], node));
  }

  /**
   * Puts the container in line with the host: a node made earlier stays while the host has it and
   * its device still matches it as a node that appeared (ids padded); one the host has now that a
   * device matches as present at start (ids as they are) is added; every other made node goes.
   */
  private async sync(): Promise<void> {
    const present = new Map((await presentNodes()).map((n) => [n.devname, n]));
    const kept = new Set<string>();
    for (const m of await madeNodes(this.nodesDir)) {
      const node = present.get(m.devname);
      const d = this.devices[m.device];
      if (node && d && hotplugMatches(d, padded(node)) && m.rule.endsWith(` ${node.major}:${node.minor} rwm`) && !kept.has(m.devname) && (await this.inside(m))) kept.add(m.devname);
      else await this.remove(m);
    }
    for (const node of present.values()) {
      const name = kept.has(node.devname) ? undefined : this.deviceFor(node);
      if (name) await this.add(name, node);
    }
  }

  /** Whether the container has the node now (a new start, or a reboot inside, has not: its /dev is new). */
  private async inside(m: Made): Promise<boolean> {
    const pid = await this.init.pid();
    const st = await fs.lstat(path.join(`/proc/${pid}/root/dev`, m.devname)).catch(() => undefined);
    return st !== undefined && (st.isBlockDevice() || st.isCharacterDevice()) && st.rdev === m.rdev;
  }

  private async add(name: string, node: HotplugNode): Promise<void> {
    const d = this.devices[name];
    const block = node.subsystem === 'block';
    const file = path.join(this.nodesDir, fileName(name, node.devname));
    let ids = { uid: Number(deviceValue(d, 'uid')), gid: Number(deviceValue(d, 'gid')) };
    if (deviceFlag(d, 'ownership.inherit')) {
      const st = await fs.stat(path.join('/dev', node.devname)).catch(() => undefined);
      ids = { uid: d.uid !== undefined ? ids.uid : (st?.uid ?? 0), gid: d.gid !== undefined ? ids.gid : (st?.gid ?? 0) };
    }
    const owner = await this.init.hostIds(ids);
    const root = await this.init.hostIds({ uid: 0, gid: 0 });
    const rule = `${block ? 'b' : 'c'} ${node.major}:${node.minor} rwm`;
    await fs.mkdir(this.nodesDir, { recursive: true, mode: 0o711 });
    await fs.rm(file, { force: true });
    await sys().makeNode(file, block, parseInt(deviceValue(d, 'mode')!, 8), node.major, node.minor, owner.uid!, owner.gid!);
    try {
      await this.cgroup.setCgroupItem('devices.allow', rule);
      await sys().mountInto(await this.init.pid(), file, path.posix.join('dev', node.devname), { dir: false, uid: root.uid!, gid: root.gid! });
    } catch (e) {
      await this.remove({ device: name, devname: node.devname, rule });
      throw new Error(`device "${name}": cannot add /dev/${node.devname}: ${(e as Error).message}`, { cause: e });
    }
    this.log(`unix-hotplug: device "${name}": added /dev/${node.devname} (${rule})`);
  }

  private async remove(m: Made): Promise<void> {
    const pid = await this.init.pid().catch(() => null);
    await removeNode(this.nodesDir, pid, m, (k, v) => this.cgroup.setCgroupItem(k, v), this.log);
  }
}

/** The nodes made in a container, read back from their host files in `nodesDir` (a previous process's too). */
async function madeNodes(nodesDir: string): Promise<Made[]> {
  const out: Made[] = [];
  for (const file of await fs.readdir(nodesDir).catch(() => [] as string[])) {
    if (!file.startsWith(PREFIX)) continue;
    const st = await fs.lstat(path.join(nodesDir, file)).catch(() => undefined);
    const m = st && (st.isBlockDevice() || st.isCharacterDevice()) ? madeOf(file, st.rdev, st.isBlockDevice()) : undefined;
    if (m) out.push(m);
  }
  return out;
}

/** A made node out of the running container whose init is `pid` (null: not running): its mount, its cgroup rule, its host file. */
async function removeNode(nodesDir: string, pid: number | null, m: Made, setCgroup: SetCgroupItem, log: (line: string) => void): Promise<void> {
  if (pid !== null) {
    await sys()
      .umountIn(pid, path.posix.join('dev', m.devname), true)
      .catch((e: { code?: string; message: string }) => {
        if (e.code !== 'EINVAL' && e.code !== 'ENOENT') log(`unix-hotplug: device "${m.device}": cannot remove /dev/${m.devname}: ${e.message}`);
      });
    await setCgroup('devices.deny', m.rule).catch(() => undefined);
  }
  await fs.rm(path.join(nodesDir, fileName(m.device, m.devname)), { force: true });
  log(`unix-hotplug: device "${m.device}": removed /dev/${m.devname}`);
}

/**
 * A unix-hotplug device removed from a running container: the nodes it made go (the device
 * process, restarted without it or ended, no longer looks after them).
 */
export async function unplugHotplug(dir: string, pid: number, name: string, setCgroup: SetCgroupItem): Promise<void> {
  const nodesDir = path.join(dir, 'devices');
  for (const m of await madeNodes(nodesDir)) if (m.device === name) await removeNode(nodesDir, pid, m, setCgroup, () => undefined);
}

/** The /dev paths of the nodes device `name` has made in the container (read from their host files: what state() reports). */
export function hotplugNodes(dir: string, name: string): string[] {
  let files: string[];
  try {
    files = readdirSync(path.join(dir, 'devices'));
  } catch {
    return [];
  }
  const prefix = `${PREFIX}${name}.`;
  return files.filter((f) => f.startsWith(prefix)).map((f) => `/dev/${f.slice(prefix.length).replace(/!/g, '/')}`).sort();
}
