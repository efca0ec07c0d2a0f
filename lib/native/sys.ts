/**
 * The system-call layer of the addon (lxq_sys, native/sys_addon.cc), typed: pidfds, flock,
 * terminals, network namespaces, openat2 and mounts. It links no liblxc and is always built, so
 * the host's locks and events, VMs and remote hosts load only this; liblxc's container API is
 * lib/native/lxc.ts. Nothing here imports lxq but lib/core/errors.ts (the house rules).
 */
import { promises as fsp } from 'node:fs';

import { loadAddon, nativeFile } from './load';

/** One interface of a network namespace, as `netnsInterfaces` reads it. */
export interface NetnsInterface {
  name: string;
  hwaddr: string;
  mtu: number;
  addresses: Array<{ family: 'inet' | 'inet6'; address: string; prefix: number; linkLocal: boolean }>;
  counters: { bytesReceived: number; bytesSent: number; packetsReceived: number; packetsSent: number };
}

export interface Sys {
  /** Resolves when an attached process exits (watched by the event loop); closes both fds. */
  waitExit(exitChannel: number, pidfd: number): Promise<{ code: number | null; signal: number | null }>;
  /** Calls onExit once when the process exits (a pidfd the event loop watches, unref'd); returns a cancel function. */
  watchPid(pid: number, onExit: () => void): () => void;
  /**
   * Calls onEvent with each kernel uevent's "KEY=value" fields (NETLINK_KOBJECT_UEVENT, the
   * kernel's own messages only; no udevd needed); an empty array when events were lost. Keeps the
   * event loop alive; returns a cancel function.
   */
  watchUevents(onEvent: (fields: string[]) => void): () => void;
  /** false if the process is gone. */
  signalPidfd(pidfd: number, signal: number): boolean;
  /** flock(2) without waiting: "ex"/"sh" true when taken, false when held by another open file; "un" releases. */
  flock(fd: number, mode: 'ex' | 'sh' | 'un'): boolean;
  /** posix_spawn of a program that daemonizes itself, in a session of its own, stdin a pipe (its write end returned), other output /dev/null: no fork of this process. */
  spawnDetached(file: string, args: string[], cwd: string): { pid: number; stdin: number };
  /**
   * Becomes `runner` (lxq_runner, execve: never returns then), which runs `argv` with `env` in the
   * container `name` of `lxcpath` on this process's fds 0-2 and exits as it does, or, if the
   * container refuses it (not running, gone), becomes `fallback` (an argv) with LXQ_NO_QUICK=1.
   * False, nothing done, if one of fds 0-2 is a terminal (a container never gets the host's).
   */
  handOver(runner: string, fallback: string[], name: string, lxcpath: string, argv: string[], env: string[], cwd: string, uid: number, gid: number): false;
  /** TIOCSWINSZ on a terminal master. */
  setWindowSize(fd: number, cols: number, rows: number): boolean;
  /** The interfaces in the network namespace of `pid`, read from a thread without forking this process. */
  netnsInterfaces(pid: number): Promise<NetnsInterface[]>;
  /**
   * A socket made in the network namespace of `pid` (0: this process's), its fd: connected to
   * `host`:`port` or the unix `path` ("\0name": abstract), or bound and listening (`listen`); a
   * datagram one (`stream: false`) not listening is left for the caller to connect. `uid`/`gid`
   * (host ids) are taken by the making thread alone; `mode` is a listening unix path's.
   */
  socketInNetns(pid: number, spec: { stream?: boolean; listen?: boolean; host?: string; port?: number; path?: string; uid?: number; gid?: number; mode?: number }): Promise<number>;
  /**
   * Copies stream sockets `a`→`b` and `b`→`a` in the kernel (splice through a pipe, on a thread
   * of its own) until both directions have ended; both fds are duplicated (close yours at once).
   * `head` is written to `b` first. An EOF is passed on as shutdown(SHUT_WR) (half-close); an
   * error on either side ends both. onEnd once at the end ("" or what failed); returns a cancel
   * function that ends both sides at once.
   */
  spliceStreams(a: number, b: number, head: Buffer, onEnd: (error: string) => void): () => void;
  /** openat2 of `path` with `root` as "/" (RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS); an fd. */
  openInRoot(root: string, path: string, flags: number, mode: number): Promise<number>;
  /**
   * Binds the host's `source` at `target` (relative to the container's "/", resolved inside it;
   * made if missing, owned by uid:gid on the host) in the mount namespace of `pid`, with the new
   * mount API: `idmap` maps it through the user namespace of `pid` (an idmapped mount).
   */
  mountInto(pid: number, source: string, target: string, options: MountOptions): Promise<void>;
  /**
   * Detaches the mount at `target` (relative to the container's "/") in the mount namespace of
   * `pid`; `remove` also unlinks the file it was mounted on.
   */
  umountIn(pid: number, target: string, remove: boolean): Promise<void>;
  /**
   * Mounts an overlay at `target` in the host's mount namespace: `layers` (read-only, topmost
   * first) over `image`; with `idmap`, the image is seen through an idmapped, read-only clone
   * (ids 0..size-1 shown as base..), attached at `stage` (an empty directory) only while the
   * overlay is mounted; without `upper`, the overlay is read-only. Layer paths may not hold
   * `,`, `:`, `\\` or `=` (EINVAL).
   */
  mountOverlay(options: OverlayMountOptions): Promise<void>;
  /** umount2 on the host, never following a symlink at `target`; `detach` is MNT_DETACH. Rejects with code EINVAL when nothing is mounted there. */
  unmount(target: string, detach: boolean): Promise<void>;
  /** A bind mount of `source` at `target` on the host, read-only with `readOnly`. */
  bindMount(source: string, target: string, readOnly: boolean): Promise<void>;
  /** A snapshot of the btrfs subvolume `source` at `target` (which must not exist; EEXIST), read-only with `readOnly` (the ioctl `btrfs subvolume snapshot` makes). */
  btrfsSnapshot(source: string, target: string, readOnly: boolean): Promise<void>;
  /** mknod + chown + chmod on the host. */
  makeNode(path: string, block: boolean, mode: number, major: number, minor: number, uid: number, gid: number): Promise<void>;
}

export interface MountOptions {
  /** The target is (made as) a directory; else a file. */
  dir: boolean;
  readonly?: boolean;
  idmap?: boolean;
  recursive?: boolean;
  propagation?: string;
  /** mount_setattr's MOUNT_ATTR_* bits set and cleared on the new mount (a disk's raw.mount.options). */
  attrSet?: number;
  attrClear?: number;
  uid: number;
  gid: number;
}

export interface OverlayMountOptions {
  target: string;
  layers: string[];
  image: string;
  upper?: string;
  work?: string;
  stage: string;
  /** The image seen through a container's range, or through its whole map (extents of each kind). */
  idmap?: { base: number; size: number } | { uid: IdExtent[]; gid: IdExtent[] };
}

/** One extent of an id map: `count` ids from `ns` are `host`… on the host. */
export interface IdExtent {
  ns: number;
  host: number;
  count: number;
}

let loaded: Sys | undefined;

/** Loads lxq_sys on first use. */
export function sys(): Sys {
  loaded ??= loadSys();
  return loaded;
}

/** Loads lxq_sys from the build under `moduleRoot` (default: this package's). */
export function loadSys(moduleRoot?: string): Sys {
  return loadAddon<Sys>('lxq_sys', moduleRoot);
}

/** The path of a helper executable built beside lxq_sys (build/Release), e.g. `lxq_stamper`. */
export function helperPath(name: string, moduleRoot?: string): string {
  return nativeFile(name, moduleRoot);
}

/** Whether another process holds an exclusive flock on `file` (a detached helper's sign that it runs); false if there is no file. */
export async function flockHeld(file: string): Promise<boolean> {
  // fs.promises only when called: the CLI's quick path loads this module and never reads through it.
  const fh = await fsp.open(file, 'r').catch(() => undefined);
  if (!fh) return false;
  try {
    const free = sys().flock(fh.fd, 'sh');
    if (free) sys().flock(fh.fd, 'un');
    return !free;
  } finally {
    await fh.close();
  }
}
