/**
 * A local instance's proxy devices (and a container's unix-hotplug devices), served by lxq's
 * proxy process (lib/host/proxy-process.ts, detached, one per running instance, as LXD's forkproxy): started before the instance (its
 * host-side addresses are taken first, so one in use refuses the start before anything runs),
 * bound to the instance's process once it runs, ended at stop, and started again by any lxq
 * process that finds it gone while the instance runs. The process holds `<dir>/proxy.lock` and
 * writes its own "PID STARTTICKS" there, which is how any process ends it.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { closeSync, openSync, promises as fsp } from 'node:fs';
import * as path from 'node:path';

import { InvalidArgument, InvalidState } from '../core/errors';
import { nodeProgramArgs, processStartTicks } from '../core/proc';
import type { DeviceChange } from '../devices/change';
import type { DeviceConfig, Devices } from '../devices/declarations';
import { flockHeld } from '../native/sys';
import { askControl } from '../network/proxy-control';
import { applyProxyNat, natForwards, natForwardsLive, natProxies, removeProxyNat } from '../network/proxy-nat';
import type { ProxyServed } from './device-live';

/** What the proxy process is given: the instance, and its proxy devices served by a process (not nat). */
export interface ProxyJob {
  dir: string;
  name: string;
  type: 'container' | 'vm';
  hostPath: string;
  devices: Record<string, DeviceConfig>;
  /** A VM's NICs (its guest's address is leased to them). */
  nics?: Record<string, DeviceConfig>;
}

/** How long a proxy process may take to say it listens, or to end when told (a loaded machine is slow to start Node). */
const READY_MS = 60_000;
const END_MS = 20_000;

const TRUE = ['true', '1', 'yes', 'on'];

/** The devices among `devices` the process serves: proxies (nat ones are nftables rules) and a container's unix-hotplug devices. */
export function servedProxies(devices: Readonly<Devices>): Record<string, DeviceConfig> {
  return Object.fromEntries(Object.entries(devices).filter(([, d]) => isServed(d)));
}

/** A device of a type the process serves. */
export function servedType(d: DeviceConfig): boolean {
  return d.type === 'proxy' || d.type === 'unix-hotplug';
}

const isServed = (d: DeviceConfig) => servedType(d) && !TRUE.includes(String((d as { nat?: string }).nat ?? ''));

export class ProxyDevices {
  /** Started for a start to come, not bound yet. */
  private pending: ChildProcess | undefined;
  /** The nat proxies' forwards for a start to come, written when it is bound. */
  private pendingNat: ReturnType<typeof natForwards> = [];

  constructor(private readonly job: () => Omit<ProxyJob, 'devices' | 'nics'>) {}

  private get lockFile(): string {
    return path.join(this.job().dir, 'proxy.lock');
  }

  /** The proxy process serving the instance now, if one runs (the pid its lock file names, checked against its start). */
  async servingPid(): Promise<number | null> {
    if (!(await this.serving())) return null;
    const [pid, ticks] = (await fsp.readFile(this.lockFile, 'utf8').catch(() => '')).trim().split(' ').map(Number);
    return pid > 0 && (await processStartTicks(pid)) === ticks ? pid : null;
  }

  /** How the instance's proxies are served now, for state(): `instancePid` is its running process (null: stopped). */
  async served(devices: Readonly<Devices>, instancePid: number | null): Promise<ProxyServed> {
    if (instancePid === null) return { pid: null, netnsPid: null, nat: new Set() };
    const nat = Object.keys(natProxies(devices)).length ? await natForwardsLive(this.job().dir) : new Set<string>();
    const pid = await this.servingPid();
    return { pid, netnsPid: pid, nat };
  }

  /** Whether a proxy process runs for the instance now. */
  serving(): Promise<boolean> {
    return flockHeld(this.lockFile);
  }

  /**
   * Starts the proxy process for the proxies of `devices` (none: nothing), any earlier one ended
   * first; resolves once its host-side listeners listen, rejects (InvalidArgument for an address
   * in use) with nothing left running. `bind` or `cancel` follows.
   */
  async open(devices: Readonly<Devices>): Promise<void> {
    const nat = natForwards(devices, this.job().type === 'vm'); // checked before anything changes
    await this.close();
    this.pendingNat = nat;
    const served = servedProxies(devices);
    if (!Object.keys(served).length) return;
    const base = this.job();
    const nics = base.type === 'vm' ? Object.fromEntries(Object.entries(devices).filter(([, d]) => d.type === 'nic')) : undefined;
    const job: ProxyJob = { ...base, devices: served, nics };
    const log = openSync(path.join(job.dir, 'proxy.log'), 'a', 0o600);
    let child: ChildProcess;
    try {
      // A session of its own (detached): the caller's exit, or its terminal's hang-up, does not end it.
      child = spawn(process.execPath, [...nodeProgramArgs(path.join(__dirname, '../host/proxy-process')), JSON.stringify(job)], { cwd: job.dir, detached: true, stdio: ['pipe', 'pipe', log] });
    } finally {
      closeSync(log);
    }
    const answer = await firstLine(child);
    if (answer === 'ready') {
      this.pending = child;
      return;
    }
    child.stdin?.destroy();
    if (answer.startsWith('error ')) {
      const e = JSON.parse(answer.slice(6)) as { message: string; name: string };
      throw e.name === 'InvalidArgument' ? new InvalidArgument(e.message) : new Error(`proxy devices of ${job.name}: ${e.message}`);
    }
    throw new InvalidState(`proxy devices of ${job.name}: the proxy process ${answer === 'held' ? 'of another lxq process runs' : `ended (${path.join(job.dir, 'proxy.log')})`}`, 'running');
  }

  /** Binds the process started by `open` to the instance's process `pid` (it ends with it); null: cancel. */
  async bind(pid: number | null): Promise<void> {
    const [child, nat] = [this.pending, this.pendingNat];
    this.pending = undefined;
    this.pendingNat = [];
    // The DNAT rules go with the instance's process: the next Host.open sweeps them once it has ended.
    if (pid !== null && nat.length) await applyProxyNat(this.job().dir, nat, pid);
    if (!child) return;
    const ticks = pid === null ? null : await processStartTicks(pid);
    if (ticks === null) child.stdin?.end();
    else child.stdin?.end(`${pid} ${ticks}\n`);
    child.stdout?.destroy();
    child.unref();
  }

  /** Ends the instance's proxy process, if one runs (this process's or another's), and waits until it has let go of its addresses. */
  async close(): Promise<void> {
    await this.bind(null);
    await removeProxyNat(this.job().dir);
    const lock = this.lockFile;
    for (const signal of ['SIGTERM', 'SIGKILL'] as const) {
      if (!(await flockHeld(lock))) return;
      const [pid, ticks] = (await fsp.readFile(lock, 'utf8').catch(() => '')).trim().split(' ').map(Number);
      if (pid > 0 && (await processStartTicks(pid)) === ticks) {
        try {
          process.kill(pid, signal);
        } catch {
          /* ended meanwhile */
        }
      }
      const deadline = Date.now() + END_MS;
      while (Date.now() < deadline && (await flockHeld(lock))) await new Promise((r) => setTimeout(r, 50));
    }
    if (await flockHeld(lock)) throw new InvalidState(`the proxy process of ${this.job().name} did not end`, 'running');
  }

  /** A running instance's proxy process, started again (bound to `pid()`) if it is gone; an address held by another process leaves it so. */
  async ensure(devices: Readonly<Devices>, pid: () => Promise<number | null>): Promise<void> {
    if (!Object.keys(servedProxies(devices)).length || (await this.serving())) return;
    const bound = await pid().catch(() => null);
    if (bound === null) return;
    try {
      await this.open(devices);
      await this.bind(bound);
    } catch {
      await this.bind(null);
    }
  }

  /**
   * Runs `apply` (the driver's part of a device change from `before` to `next`) with the proxy
   * process told first on a running instance (`pid`: its process) when a device it serves changed
   * (it changes those devices' listeners only; restarted if it cannot), and the nat proxies'
   * rules rewritten when they or a NIC changed; put back as it was if either fails. Nat proxies
   * are checked against `next` before anything changes.
   */
  async changing(
    before: Readonly<Devices>,
    next: Readonly<Devices>,
    change: DeviceChange,
    live: { pid: () => Promise<number | null> } | undefined,
    apply: () => Promise<void>,
  ): Promise<void> {
    const changed = Object.values({ ...change.removed, ...change.added });
    const natChanged = changed.some((d) => d.type === 'nic') ? Object.keys({ ...natProxies(before), ...natProxies(next) }).length > 0 : changed.some((d) => d.type === 'proxy' && !isServed(d));
    const nat = natChanged ? natForwards(next, this.job().type === 'vm') : [];
    const served = changed.some((d) => isServed(d));
    if (!live || (!served && !natChanged)) return apply();
    const restart = async (devices: Readonly<Devices>) => {
      const pid = await live.pid();
      // The running process changes only the changed devices' listeners; one that cannot is restarted.
      if (served && !(await askControl(path.join(this.job().dir, 'proxy.sock'), servedProxies(devices)))) {
        await this.open(devices); // its nat rules too, written at bind
        return this.bind(pid);
      }
      if (natChanged && pid !== null) await applyProxyNat(this.job().dir, devices === next ? nat : natForwards(devices, this.job().type === 'vm'), pid);
    };
    try {
      await restart(next);
      await apply();
    } catch (e) {
      await restart(before).catch(() => undefined);
      throw e;
    }
  }
}

/** The proxy process's first line on stdout ("ready", "held", "error …"); "" if it ended without one. */
function firstLine(child: ChildProcess): Promise<string> {
  return new Promise((resolve) => {
    let text = '';
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      done('');
    }, READY_MS);
    const done = (line: string) => {
      clearTimeout(timer);
      child.stdout?.removeAllListeners('data');
      resolve(line);
    };
    child.stdout?.on('data', (b: Buffer) => {
      text += b.toString();
      if (text.includes('\n')) done(text.slice(0, text.indexOf('\n')));
    });
    child.once('exit', () => done(text.split('\n')[0]));
    child.once('error', () => done(''));
  });
}
