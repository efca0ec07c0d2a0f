/**
 * The liblxc layer of the addon (lxq_lxc, native/lxc_addon.cc), typed. One `LxcContainer` wraps
 * one `struct lxc_container *`; every method runs off the JS thread and calls on one handle run in
 * call order. lxq_lxc is built only where liblxc's headers are present and is loaded on first
 * use, so a program that uses only VMs or remote hosts never maps liblxc; where it was not built,
 * the first use throws NotSupported. Nothing here imports lxq but lib/core/errors.ts (the house rules).
 */
import { NotSupported } from '../core/errors';
import { AddonMissing, loadAddon } from './load';

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

export interface Lxc {
  /** Opens nothing yet: the first call opens the liblxc handle (on the pool thread). */
  Container: new (name: string, lxcpath: string) => LxcContainer;
  listAllContainers(lxcpath: string): Promise<{ defined: string[]; active: string[] }>;
  liblxcVersion: string;
}

/** What a host without liblxc installs before `npm rebuild lxq` (Debian, Ubuntu). */
export const LIBLXC_PACKAGES = 'apt-get install -y lxc lxc-dev pkg-config';

let loaded: Lxc | NotSupported | undefined;

/** Loads lxq_lxc on first use; throws NotSupported where lxq was built without liblxc. */
export function lxc(): Lxc {
  loaded ??= tryLoad();
  if (loaded instanceof NotSupported) throw loaded;
  return loaded;
}

function tryLoad(): Lxc | NotSupported {
  try {
    return loadLxc();
  } catch (e) {
    if (e instanceof NotSupported) return e;
    throw e;
  }
}

/**
 * Loads lxq_lxc from the build under `moduleRoot` (default: this package's). Absent (built
 * without liblxc's headers) or unloadable for want of liblxc itself: NotSupported, naming the
 * packages to install.
 */
export function loadLxc(moduleRoot?: string): Lxc {
  try {
    return loadAddon<Lxc>('lxq_lxc', moduleRoot);
  } catch (e) {
    const missing = e instanceof AddonMissing || /liblxc/.test((e as Error).message);
    if (!missing) throw e;
    throw new NotSupported(
      'containers need liblxc, and lxq was built without it (its native layer lxq_lxc is missing or cannot load liblxc); ' +
        `install it as root with \`${LIBLXC_PACKAGES}\`, then \`npm rebuild lxq\``,
    );
  }
}
