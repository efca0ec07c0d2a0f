/**
 * The native addon's surface, typed. One `LxcContainer` wraps one `struct lxc_container *`;
 * every method runs off the JS thread and calls on one handle run in call order.
 */
import bindings from 'bindings';

import type { NetworkInterface } from '../instance/instance';

/** The liblxc states, as `state()` returns them. */
export type LxcState = 'STOPPED' | 'STARTING' | 'RUNNING' | 'STOPPING' | 'ABORTING' | 'FREEZING' | 'FROZEN' | 'THAWED';

/** A rejected call: `call` is the liblxc function, `log` what the container log gained meanwhile. */
export interface LxcError extends Error {
  call: string;
  errno: number;
  log: string;
}

export interface LxcContainer {
  /** Drops the liblxc handle once queued calls are done; later calls throw. */
  release(): void;
  defined(): Promise<boolean>;
  state(): Promise<LxcState>;
  initPid(): Promise<number>;
  create(template: string | null, bdevtype: string | null, templateArgs: string[]): Promise<boolean>;
  /** Daemonized start from the saved config (made by lxq_runner); resolves when RUNNING. `argv` empty: the configured init. */
  start(argv: string[]): Promise<boolean>;
  /** Sends the halt signal and waits up to `timeoutSeconds`; false if still running. */
  shutdown(timeoutSeconds: number): Promise<boolean>;
  stop(): Promise<boolean>;
  /**
   * With `v1Mount` (where the v1 freezer is mounted): writes the container's freezer.state and
   * waits until it reads FROZEN before liblxc's own freeze, which then never sleeps its second.
   */
  freeze(v1Mount?: string | null, expect?: LxcState): Promise<boolean>;
  /** With `expect`: only in that state; otherwise rejects with call "state", errno ESRCH (both calls). */
  unfreeze(expect?: LxcState): Promise<boolean>;
  wait(state: LxcState, timeoutSeconds: number): Promise<boolean>;
  getConfigItem(key: string): Promise<string>;
  setConfigItem(key: string, value: string): Promise<boolean>;
  clearConfigItem(key: string): Promise<boolean>;
  getRunningConfigItem(key: string): Promise<string>;
  getKeys(prefix?: string): Promise<string[]>;
  saveConfig(file?: string): Promise<boolean>;
  getCgroupItem(key: string): Promise<string>;
  setCgroupItem(key: string, value: string): Promise<boolean>;
  getIps(iface?: string | null, family?: string | null, scope?: number): Promise<string[]>;
  destroy(): Promise<boolean>;
  /** liblxc's console_getfd: the terminal `ttynum` (0: /dev/console); held until `commandSocket` is closed. */
  consoleGetfd(ttynum: number): Promise<[commandSocket: number, ptx: number]>;
  /**
   * Runs argv inside the container with exactly `env` (through lxq_runner, from the saved
   * config); returns at once with the pid, a pidfd, the caller's pipe ends (close-on-exec) and
   * the channel `waitExit` reads the exit status from.
   */
  attach(
    argv: string[],
    env: string[],
    cwd: string | null,
    uid: number,
    gid: number,
    pty?: { cols: number; rows: number } | null,
  ): Promise<[pid: number, pidfd: number, stdin: number, stdout: number, stderr: number, exitChannel: number]>;
}

export interface Native {
  /** Opens nothing yet: the first call opens the liblxc handle (on the pool thread). */
  Container: new (name: string, lxcpath: string) => LxcContainer;
  listAllContainers(lxcpath: string): Promise<{ defined: string[]; active: string[] }>;
  liblxcVersion: string;
  /** Resolves when an attached process exits (watched by the event loop); closes both fds. */
  waitExit(exitChannel: number, pidfd: number): Promise<{ code: number | null; signal: number | null }>;
  /** Calls onExit once when the process exits (a pidfd the event loop watches, unref'd); returns a cancel function. */
  watchPid(pid: number, onExit: () => void): () => void;
  /** false if the process is gone. */
  signalPidfd(pidfd: number, signal: number): boolean;
  /** flock(2) without waiting: "ex"/"sh" true when taken, false when held by another open file; "un" releases. */
  flock(fd: number, mode: 'ex' | 'sh' | 'un'): boolean;
  /** TIOCSWINSZ on a terminal master. */
  setWindowSize(fd: number, cols: number, rows: number): boolean;
  /** The interfaces in the network namespace of `pid`, read from a thread without forking this process. */
  netnsInterfaces(pid: number): Promise<Array<NetworkInterface & { addresses: Array<{ linkLocal: boolean }> }>>;
  /** A TCP connection (or, `datagram`, a UDP socket for the caller to connect) made in the network namespace of `pid`; its fd. */
  connectInNetns(pid: number, host: string, port: number, datagram?: boolean): Promise<number>;
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
  uid: number;
  gid: number;
}

let loaded: Native | undefined;

/** Loads the addon on first use, so that VM-only programs need no liblxc. */
export function native(): Native {
  loaded ??= bindings('lxq_native') as Native;
  return loaded;
}
