/**
 * How lxq's proxy process reaches a container: its init is found as the child of the container's
 * monitor (looked up again after a reboot inside, which gives a new init and new namespaces);
 * sockets are made in init's network namespace by a thread of the addon; unix paths are
 * resolved inside the container's root (a planted symlink cannot lead to a host path); ids
 * given inside (security.uid, a listener's uid/gid) are mapped to the host's through init's
 * uid_map/gid_map.
 */
import { close as closeCb, constants as C, promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { promisify } from 'node:util';

import { InvalidState } from '../../core/errors';
import { parentPid, processStartTicks } from '../../core/proc';
import { sys } from '../../native/sys';
import { connectedDatagram } from '../../network/datagram';
import type { DatagramEndpoint, Endpoint, StreamEndpoint } from '../../network/proxy-address';
import { O_PATH } from './files';

const closeFd = promisify(closeCb);

/** Ids as seen on one side: undefined leaves the process's own. */
export interface Ids {
  uid?: number;
  gid?: number;
}

/** The container's init: the monitor's child, remembered with its start ticks (a reused pid is not it). */
export class ContainerInit {
  private known: { pid: number; ticks: number } | undefined;

  constructor(private readonly monitor: number) {}

  async pid(): Promise<number> {
    if (this.known && (await processStartTicks(this.known.pid)) === this.known.ticks && (await parentPid(this.known.pid)) === this.monitor) return this.known.pid;
    this.known = undefined;
    for (const entry of await fsp.readdir('/proc')) {
      const pid = Number(entry);
      if (!Number.isInteger(pid) || pid <= 0 || (await parentPid(pid)) !== this.monitor) continue;
      const ticks = await processStartTicks(pid);
      if (ticks === null) continue;
      this.known = { pid, ticks };
      return pid;
    }
    throw new InvalidState('the container is not running (its monitor has no init)', 'stopped');
  }

  /** Ids inside mapped to the host's (an unprivileged container's root is a high id). */
  async hostIds(ids: Ids): Promise<Ids> {
    const pid = await this.pid();
    const map = async (kind: 'uid' | 'gid', v: number | undefined) => {
      if (v === undefined) return undefined;
      for (const line of (await fsp.readFile(`/proc/${pid}/${kind}_map`, 'utf8')).split('\n')) {
        const [inside, outside, count] = line.trim().split(/\s+/).map(Number);
        if (v >= inside && v < inside + count) return outside + (v - inside);
      }
      throw new InvalidState(`${kind} ${v} is not mapped in the container`, 'running');
    };
    return { uid: await map('uid', ids.uid), gid: await map('gid', ids.gid) };
  }
}

/** A stream connection made on the host (pid 0) or in a container's namespace, as `ids` (host ids): its fd. */
async function streamFd(pid: number, to: StreamEndpoint, ids: Ids, root?: string): Promise<number> {
  if (to.proto === 'tcp') return sys().socketInNetns(pid, { host: to.host, port: to.port, ...ids });
  if (to.abstract) return sys().socketInNetns(pid, { path: `\0${to.path}`, ...ids });
  if (root === undefined) return sys().socketInNetns(0, { path: to.path, ...ids });
  const fd = await sys().openInRoot(root, to.path, O_PATH, 0);
  try {
    return await sys().socketInNetns(0, { path: `/proc/self/fd/${fd}`, ...ids });
  } finally {
    await closeFd(fd);
  }
}

/** Connections on the host, as `ids` (security.uid/gid of a proxy bound inside the instance). */
export function hostConnector(ids: Ids) {
  return {
    stream: (to: StreamEndpoint) => streamFd(0, to, ids),
    datagram: (to: DatagramEndpoint) => connectedDatagram(to),
  };
}

/** Connections inside the container, as `ids` (given inside: security.uid/gid). */
export function containerConnector(init: ContainerInit, ids: Ids) {
  return {
    stream: async (to: StreamEndpoint) => {
      const pid = await init.pid();
      return streamFd(pid, to, await init.hostIds(ids), `/proc/${pid}/root`);
    },
    datagram: async (to: DatagramEndpoint) => connectedDatagram(to, await sys().socketInNetns(await init.pid(), { stream: false, host: to.host, port: to.port })),
  };
}

/**
 * A listening unix socket at `where` made with `mode` (LXD's default 0644) and then owned by
 * `ids` (lchown: a symlink put in its place is not followed).
 */
export async function unixListenFd(where: string, ids: Ids, mode = 0o644): Promise<number> {
  const fd = await sys().socketInNetns(0, { listen: true, path: where, mode });
  try {
    if (ids.uid !== undefined || ids.gid !== undefined) await fsp.lchown(where, ids.uid ?? -1, ids.gid ?? -1);
  } catch (e) {
    await closeFd(fd);
    throw e;
  }
  return fd;
}

/** A listener made inside the container (bind: instance): its fd; a unix path is owned by `owner` (ids inside, root's by default) with `mode`. */
export async function containerListenFd(init: ContainerInit, at: Endpoint, owner: Ids & { mode?: number }): Promise<number> {
  const pid = await init.pid();
  if (at.proto !== 'unix') return sys().socketInNetns(pid, { listen: true, stream: at.proto === 'tcp', host: at.host, port: at.port });
  if (at.abstract) return sys().socketInNetns(pid, { listen: true, path: `\0${at.path}` });
  const dir = await sys().openInRoot(`/proc/${pid}/root`, path.posix.dirname(at.path), O_PATH | C.O_DIRECTORY, 0);
  try {
    const where = `/proc/self/fd/${dir}/${path.posix.basename(at.path)}`;
    if ((await fsp.lstat(where).catch(() => undefined))?.isSocket()) await fsp.unlink(where); // a killed listener's, as LXD's forkproxy removes it
    return await unixListenFd(where, await init.hostIds({ uid: owner.uid ?? 0, gid: owner.gid ?? 0 }), owner.mode);
  } finally {
    await closeFd(dir);
  }
}

/** Removes a unix listener's socket made inside the running container (at its proxy's end, as LXD's forkproxy does); anything else there is left. */
export async function removeContainerSocket(init: ContainerInit, at: string): Promise<void> {
  const pid = await init.pid();
  const dir = await sys().openInRoot(`/proc/${pid}/root`, path.posix.dirname(at), O_PATH | C.O_DIRECTORY, 0);
  try {
    const where = `/proc/self/fd/${dir}/${path.posix.basename(at)}`;
    if ((await fsp.lstat(where).catch(() => undefined))?.isSocket()) await fsp.unlink(where);
  } finally {
    await closeFd(dir);
  }
}
