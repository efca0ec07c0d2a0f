/**
 * A running container's devices as they are now, for state(): each NIC's interface in its
 * network namespace (by its name inside) and its veth host end if the host has it, each disk's
 * mount in its init's mount namespace, each unix-char/unix-block device's node inside.
 */
import { close as closeCb, constants as C, fstat as fstatCb } from 'node:fs';
import { promisify } from 'node:util';

import type { Devices } from '../../devices/declarations';
import { hostEnd, nicName, nicType } from '../../devices/nic';
import { mountsOf, nicLive } from '../../instance/device-live';
import type { DeviceState, DriverState } from '../../instance/instance';
import { sys } from '../../native/sys';
import { O_PATH } from './files';

const closeFd = promisify(closeCb);
const fstatFd = promisify(fstatCb);

/** NIC types whose host side is a veth end of lxq's on the host. */
const VETH = new Set(['bridged', 'p2p', 'routed']);

/** Whether `path` inside the root of `pid` is a char or block device node (resolved in that root: a symlink cannot reach the host). */
async function nodeInside(pid: number, path: string, block: boolean): Promise<boolean> {
  let fd: number;
  try {
    fd = await sys().openInRoot(`/proc/${pid}/root`, path, O_PATH | C.O_NOFOLLOW, 0);
  } catch {
    return false;
  }
  try {
    const st = await fstatFd(fd);
    return block ? st.isBlockDevice() : st.isCharacterDevice();
  } catch {
    return false;
  } finally {
    await closeFd(fd).catch(() => undefined);
  }
}

/** Adds the live status of the container's devices to `states` (s: its driver state, read just before). */
export async function containerLiveDevices(dir: string, states: DeviceState[], devices: Devices, s: DriverState): Promise<void> {
  if (s.pid === null) return;
  const pid = s.pid;
  const mounts = states.some((d) => d.type === 'disk') ? await mountsOf(pid) : new Map();
  for (const st of states) {
    const d = devices[st.name];
    if (d.type === 'nic') {
      const found = s.network.interfaces.find((i) => i.name === nicName(st.name, d));
      st.nic = await nicLive(d, found, VETH.has(nicType(d)) ? hostEnd(dir, st.name, d) : undefined);
    } else if (d.type === 'disk' && st.path !== undefined) {
      st.mount = mounts.get(st.path) ?? null;
    } else if ((d.type === 'unix-char' || d.type === 'unix-block') && st.path !== undefined) {
      st.nodes = (await nodeInside(pid, st.path, d.type === 'unix-block')) ? [st.path] : [];
    }
  }
}
