/**
 * The one interface both instance types implement. A container (liblxc) and a VM (QEMU) are
 * driven through the same calls; what a type cannot do is refused with NotSupported, naming
 * the condition, never done silently differently.
 */
import type { RootDiskDevice } from '../storage/pools/types';
import type { ConsoleStream } from './console';
import type { ConsoleFollowOptions, ConsoleLogOptions } from './console-log';
import type { InstanceStats, StatsOptions } from './metrics';
import type { EventEmitter } from 'eventemitter3';

import type { InstanceConfig, InstanceConfigInput, InstanceConfigPatch, InstanceType } from '../config/options';
import type { DeviceConfig, DeviceInput, DevicePatch, Devices, DevicesInput, RootLimits } from '../devices/declarations';
import type { InstanceSnapshots, MoveOptions, SnapshotEvent, SnapshotRenamedEvent } from '../storage/types';
import type { InstanceFiles } from './files';
import { checkLongOptions, LONG_OPTION_KEYS, type LongOptions } from '../core/abort';
import { Aborted, InvalidArgument } from '../core/errors';
import { optionKeys, refuseUnknownKeys } from '../core/keys';
import type { ExecOptions, ExecResult, InstanceProcess, SpawnOptions } from './process';
import { checkWait, type WaitSpec } from './wait';
import { validateName } from './names';
import type { InstanceState, InstanceStatus } from './state';

export type { InstanceType };

// What state() reports (state.ts), where the drivers and lib/index.ts have always found it.
export type { BlockState, DeviceState, DriverState, InstanceState, InstanceStatus, MountState, NetworkInterface, NicLiveState, ProxyLiveState } from './state';
export { reportedAddresses } from './state';

/**
 * What `waitForAddress` takes: the address family, a timeout and an abort signal.
 *
 * @example
 * ```ts
 * const v6 = await c.waitForAddress({ family: 'inet6', timeout: 30_000 });
 * ```
 */
export interface WaitForAddressOptions {
  /** Default 'inet' (IPv4). */
  family?: 'inet' | 'inet6';
  /** Milliseconds; default 60 000. */
  timeout?: number;
  signal?: AbortSignal;
}

export const WAIT_FOR_ADDRESS_KEYS = optionKeys<WaitForAddressOptions>({ family: true, timeout: true, signal: true });

/** Checks waitForAddress's options; returns them with their defaults. */
export function checkWaitForAddress(options: WaitForAddressOptions = {}): { family: 'inet' | 'inet6'; timeout: number } {
  refuseUnknownKeys('waitForAddress', options ?? {}, WAIT_FOR_ADDRESS_KEYS);
  const family = options?.family ?? 'inet';
  const timeout = options?.timeout ?? 60_000;
  if (family !== 'inet' && family !== 'inet6') throw new InvalidArgument(`family must be "inet" or "inet6", got ${JSON.stringify(family)}`);
  if (!Number.isFinite(timeout) || timeout <= 0) throw new InvalidArgument(`timeout must be a positive number of ms, got ${timeout}`);
  return { family, timeout };
}

/**
 * How `stop` and `restart` end an instance: a graceful shutdown with a timeout, or at once.
 *
 * @example
 * ```ts
 * await c.stop({ timeout: 5000 }); // a clean shutdown for 5 s, then forced
 * await c.stop({ force: true });
 * ```
 */
export interface StopOptions {
  /** Milliseconds to wait for a graceful shutdown before forcing it. Default 10 000. */
  timeout?: number;
  /** Kill at once, without asking the instance to shut down. */
  force?: boolean;
  /** Aborting cuts the graceful shutdown short: the instance is stopped by force, and stop rejects with Aborted. */
  signal?: AbortSignal;
}
/**
 * What `start` takes.
 *
 * @example
 * ```ts
 * await c.start({ wait: 'systemd' });
 * await c.start({ wait: { for: 'port', port: 80, timeout: 30_000 } });
 * ```
 */
export interface StartOptions {
  /** Resolve only once the instance is ready this way (see `wait`). */
  wait?: WaitSpec;
  /** Aborting rejects with Aborted and leaves the instance stopped (killed if it had started). */
  signal?: AbortSignal;
}
export const START_OPTION_KEYS = optionKeys<StartOptions>({ wait: true, signal: true });

const MOVE_OPTION_KEYS = optionKeys<MoveOptions>({ pool: true, name: true, ...LONG_OPTION_KEYS });

/** move()'s options checked before anything is done. */
export function checkMove(options: MoveOptions): void {
  if (options === null || typeof options !== 'object') throw new InvalidArgument('move options must be an object');
  refuseUnknownKeys('move', options, MOVE_OPTION_KEYS);
  checkLongOptions(options);
  if (options.pool === undefined && options.name === undefined) throw new InvalidArgument('move needs a pool, a name or both');
  if (options.pool !== undefined && typeof options.pool !== 'string') throw new InvalidArgument('pool must be a storage pool\'s name');
  if (options.name !== undefined) validateName(options.name);
}

/** start()'s options checked before anything is done; the wait to make after it, if any. */
export function checkStart(options: StartOptions | undefined): WaitSpec | undefined {
  if (options === undefined) return undefined;
  if (options === null || typeof options !== 'object') throw new InvalidArgument('start options must be an object');
  refuseUnknownKeys('start', options, START_OPTION_KEYS);
  checkLongOptions(options, false);
  if (options.wait !== undefined) checkWait(options.wait);
  return options.wait;
}

/**
 * What `export` takes. Snapshots travel with the instance unless `instanceOnly` (as LXD's and
 * `lxq export`).
 *
 * @example
 * ```ts
 * await c.export('/srv/backups/web.tar.zst');                       // with its snapshots
 * await c.export('/tmp/web-now.tar.zst', { instanceOnly: true });   // its current state alone
 * ```
 */
export interface ExportOptions extends LongOptions {
  /** Leave the snapshots out. Default false. */
  instanceOnly?: boolean;
}
export const EXPORT_OPTION_KEYS = optionKeys<ExportOptions>({ instanceOnly: true, ...LONG_OPTION_KEYS });

/**
 * LXD's launch over any host's `create`: the wait checked before anything is made, then create and
 * start (with the wait). An instance that fails to start or become ready is left, as LXD leaves it.
 */
export async function launchWith<I extends Instance, C extends { image: string }>(
  create: (name: string, options: C) => Promise<I>,
  image: string,
  name: string,
  options: Omit<C, 'image'> & StartOptions,
): Promise<I> {
  if (options === null || typeof options !== 'object') throw new InvalidArgument('launch options must be an object');
  const { wait, ...rest } = options;
  const { signal } = rest as { signal?: AbortSignal };
  checkStart({ wait, signal });
  const instance = await create(name, { ...rest, image } as unknown as C);
  // An aborted launch leaves nothing: the instance it made is deleted (start left it stopped).
  await instance.start({ wait, signal }).catch(async (e) => {
    if (e instanceof Aborted) await instance.delete({ force: true }).catch(() => undefined);
    throw e;
  });
  return instance;
}

export const STOP_OPTION_KEYS = optionKeys<StopOptions>({ timeout: true, force: true, signal: true });
export const DEFAULT_STOP_TIMEOUT_MS = 10_000;

/** The timeout of a stop (or restart), checked before anything is done. */
export function checkStopTimeout(op: string, options: StopOptions): number {
  refuseUnknownKeys(op, options, STOP_OPTION_KEYS);
  checkLongOptions(options, false);
  const timeout = options.timeout ?? DEFAULT_STOP_TIMEOUT_MS;
  if (!Number.isFinite(timeout) || timeout < 0) throw new InvalidArgument(`${op} timeout must be a non-negative number of ms, got ${timeout}`);
  return timeout;
}

/**
 * An instance changed status (`previous` to `status`).
 *
 * @example
 * ```ts
 * c.on('status', (e: StatusEvent) => console.log(e.status));
 * ```
 */
export interface StatusEvent {
  name: string;
  status: InstanceStatus;
  previous: InstanceStatus;
}

/**
 * Events every instance emits; listen with `instance.on('status', …)`.
 *
 * @example
 * ```ts
 * c.on('status', (e) => console.log(`${e.name}: ${e.previous} -> ${e.status}`));
 * ```
 */
export interface InstanceEvents {
  status: (event: StatusEvent) => void;
  'snapshot-created': (event: SnapshotEvent) => void;
  'snapshot-restored': (event: SnapshotEvent) => void;
  'snapshot-deleted': (event: SnapshotEvent) => void;
  'snapshot-renamed': (event: SnapshotRenamedEvent) => void;
  renamed: (event: RenamedEvent) => void;
  copied: (event: CopiedEvent) => void;
}

/**
 * An instance was renamed (`name` is the new name).
 *
 * @example
 * ```ts
 * c.on('renamed', (e: RenamedEvent) => console.log(`${e.previous} is now ${e.name}`));
 * ```
 */
export interface RenamedEvent {
  /** The new name. */
  name: string;
  previous: string;
}

/**
 * On the source instance: a copy of it was made.
 *
 * @example
 * ```ts
 * c.on('copied', (e: CopiedEvent) => console.log(`${e.name} copied to ${e.target}`, e.snapshot ?? ''));
 * ```
 */
export interface CopiedEvent {
  name: string;
  target: string;
  snapshot?: string;
}

/**
 * What lxq keeps about an instance (its `lxq.json`), written atomically.
 *
 * @example
 * ```ts
 * const { record }: { record: InstanceRecord } = await c.snapshots.get('first');
 * console.log(record.image, record.config);
 * ```
 */
export interface InstanceRecord {
  version: 1;
  name: string;
  type: InstanceType;
  image: string;
  /** What the image said about running it, copied at create so the image can later go. */
  imageMeta: Record<string, unknown>;
  config: InstanceConfig;
  /** The devices by name (absent in records written before devices existed). */
  devices?: Devices;
  createdAt: string;
  /** A systemd VM's machine id, handed to its guest at boot (see lib/storage/move.ts): new for each create and copy. */ machineId?: string;
  /** The storage pool of the instance's root or disk (absent: the dir pool, for records made before pools). */
  pool?: string;
  /** LXD's root disk `size`: the bytes a container's root may hold, enforced by its pool (btrfs qgroups), absent: no limit; a VM's disk size, given at create. */
  rootSize?: number;
  /** A container's root disk I/O limits (LXD's `limits.*` on its `root` device), given at create: on the block device under its root at each start. */ rootLimits?: RootLimits;
  /** Deleted when it stops (absent: false). */ ephemeral?: boolean;
  /** The profiles it takes options and devices from, in order (absent: `default` alone, as records made before profiles). */
  profiles?: string[];
  /** A container's own id range (security.idmap.isolated), allocated at create; absent: the shared one. */ idmap?: { base: number; size: number };
}

/**
 * What `host.create` takes: the type, the image, options and devices.
 *
 * @example
 * ```ts
 * await host.create('web1', { type: 'container', image: 'busybox', config: { 'limits.memory': '256MiB' } });
 * ```
 */
export interface CreateOptions {
  /** Default 'container'. */
  type?: InstanceType;
  /** An image name from the host's image store, such as 'busybox' or 'vm/default'. */
  image: string;
  config?: InstanceConfigInput;
  /** Devices by name: `{ data: { type: 'disk', source: '/srv/data', path: '/data' } }`. */
  devices?: Record<string, DevicesInput[string] | RootDiskDevice>;
  /** The storage pool of the instance's root or disk (default: the host's `default` pool); the same as a `root` disk device `{ type: 'disk', path: '/', pool }`. */
  pool?: string;
  /** Aborting rejects with Aborted and leaves no instance (nor staging) behind. */
  signal?: AbortSignal;
  /**
   * LXD's ephemeral instance: deleted when it stops (a `stop()`, a poweroff inside, its init or
   * QEMU exiting), by whichever process sees it; kept across `restart()`, a reboot inside and a
   * snapshot's restore. A never-started one stays until it has run. Default false.
   */
  ephemeral?: boolean;
  /** The host's profiles it takes options and devices from, in order, before its own (LXD's): default `['default']`, `[]` for none. */
  profiles?: string[];
}
export const CREATE_OPTION_KEYS = optionKeys<CreateOptions>({ type: true, image: true, config: true, devices: true, pool: true, signal: true, ephemeral: true, profiles: true });

/** `ephemeral` of create and copy options: a boolean or absent. */
export function checkEphemeral(value: unknown): boolean {
  if (value !== undefined && typeof value !== 'boolean') throw new InvalidArgument(`ephemeral must be a boolean, got ${JSON.stringify(value)}`);
  return value === true;
}

/**
 * A container or a VM, one interface for both: lifecycle, exec, files, consoles, snapshots, devices and options.
 *
 * @example
 * ```ts
 * const i = await host.get('web1');
 * await i.start();
 * const { stdout } = await i.exec(['cat', '/etc/hostname']);
 * await i.stop({ timeout: 5000 });
 * ```
 */
export interface Instance extends EventEmitter<InstanceEvents> {
  readonly name: string;
  readonly type: InstanceType;
  readonly image: string;
  readonly createdAt: Date;
  /** Its own options as stored (strings); its profiles' are in expandedConfig. */
  readonly config: Readonly<InstanceConfig>;
  /** The profiles it takes options and devices from, in order (LXD's `profiles`). */
  readonly profiles: readonly string[];
  /** The options in effect: those of its profiles in order, then its own (LXD's `expanded_config`). */
  readonly expandedConfig: Readonly<InstanceConfig>;
  /** The devices in effect: those of its profiles in order, then its own (LXD's `expanded_devices`). */
  readonly expandedDevices: Readonly<Record<string, Readonly<DeviceConfig>>>;
  /** Deleted when it stops (LXD's `ephemeral`, see CreateOptions.ephemeral). */
  readonly ephemeral: boolean;

  /** Starts it; with `wait`, resolves once it is also ready (see `wait`). */
  start(options?: StartOptions): Promise<void>;
  /** Graceful, then forced after `timeout`; `{ force: true }` kills at once. `restart` is a stop then a start. */
  stop(options?: StopOptions): Promise<void>;
  restart(options?: StopOptions): Promise<void>;
  freeze(): Promise<void>;
  unfreeze(): Promise<void>;
  /** Removes the instance and everything it stored. It must be stopped unless `force` is set. */
  delete(options?: { force?: boolean }): Promise<void>;
  /** The status alone: cheaper than `state()`. */
  status(): Promise<InstanceStatus>;
  state(): Promise<InstanceState>;
  /**
   * Usage samples every `interval` ms (default 1000; the first at once) until `signal` aborts:
   * CPU time and the share of a CPU used since the previous sample, memory, processes, and each
   * disk's and network interface's counters with their rates per second (see InstanceStats).
   */
  stats(options?: StatsOptions): AsyncIterable<InstanceStats>;
  /** Changes options: validated first, applied live where the option allows it, else at the next start. */
  update(config: InstanceConfigPatch): Promise<void>;
  /** Replaces its profiles (LXD's `lxc profile add/remove`): checked first (NotFound naming a missing one), applied as a profile's change is (live where it can, else at the next start). */ setProfiles(names: readonly string[]): Promise<void>;
  /**
   * Resolves with the instance's first address of `family` that its DHCP lease (on an lxq
   * network) or the instance itself (its network namespace, or a VM's guest agent) reports. An
   * IPv6 address counts once duplicate detection has passed inside, and the host can reach it at
   * once: on an lxq network the host's neighbour entry for it (left unresolved by dnsmasq's probe
   * of the address before the instance had it) is brought up to date first. */
  waitForAddress(options?: WaitForAddressOptions): Promise<string>;

  /**
   * Resolves once the instance is ready in the way asked: running, its agent up, systemd's boot
   * ended, an address, a TCP port listening inside, a console line, a command exiting 0 (see
   * WaitFor). Timeout, Aborted, or InvalidState if it is or becomes stopped.
   */
  wait(spec: WaitSpec): Promise<void>;

  /** Its own devices as stored (strings), by name; its profiles' are in expandedDevices. */
  readonly devices: Readonly<Record<string, Readonly<DeviceConfig>>>;
  /** Adds a device: checked first, hot-plugged into a running instance, kept for the next starts. */
  addDevice(name: string, device: DeviceInput): Promise<void>;
  /** Removes a device, from a running instance too. NotFound if there is none of that name. */
  removeDevice(name: string): Promise<void>;
  /** Changes a device's keys (`null` removes a key); a running instance gets the new device at once. */
  updateDevice(name: string, patch: DevicePatch): Promise<void>;

  /** Runs a command to completion; output of any size is collected as Buffers. */
  exec(argv: string[], options?: ExecOptions): Promise<ExecResult>;
  /** Starts a command with streaming stdin/stdout/stderr. */
  spawn(argv: string[], options?: SpawnOptions): Promise<InstanceProcess>;
  /** Files inside the instance, resolved inside its own root (running or stopped). */
  readonly files: InstanceFiles;
  /** What the instance's init or kernel printed on its console, and where that log is kept. */
  readonly console: InstanceConsole;
  /** Renames a stopped instance (Busy if it runs; AlreadyExists onto a taken name). `move` also takes it to another pool (`lxc move -s`). */
  rename(newName: string): Promise<void>;
  move(options: MoveOptions): Promise<void>;
  /** Writes the instance to a zstd tarball, its snapshots too unless `instanceOnly`, for `host.import`. */
  export(file: string, options?: ExportOptions): Promise<void>;
  /** Snapshots of the instance's files or disk and record (see lib/storage). */
  readonly snapshots: InstanceSnapshots;
  /** `await using c = await host.launch(…)`: stops it (a short grace, then killed) and deletes it at the scope's end; no error if it is gone. */
  [Symbol.asyncDispose](): Promise<void>;
}

/**
 * An instance's console: the log of what it printed, and interactive streams to it.
 *
 * @example
 * ```ts
 * const s = await c.console.attach();
 * s.pipe(process.stdout);
 * console.log(await c.console.log());
 * console.log(await c.console.log({ since: '10m', tail: 20 }));
 * for await (const line of c.console.follow({ tail: 0, signal: AbortSignal.timeout(10_000) })) console.log(line);
 * ```
 */
export interface InstanceConsole {
  /** The console log file on the host. */
  readonly path: string;
  /**
   * The log's content so far ('' before the first start); `since` keeps the lines written at or
   * after a time ('10m', a Date: `docker logs --since`), `tail` the last lines (see
   * ConsoleLogOptions for since's precision; NotSupported on an LXD server, whose log has no times).
   */
  log(options?: ConsoleLogOptions): Promise<string>;
  /**
   * The log's lines as they are written (as `docker logs --follow`): `tail` of those already
   * there first (default all; of those since `since` if given), then each new line, until `signal` aborts (the iteration then
   * ends, and nothing is left watching the log). It follows the instance through stops and
   * starts: a log made anew or cut is read again from its start. The log file is polled every
   * `interval` ms; on an LXD server, which has no follow, the log is fetched whole and compared.
   */
  follow(options?: ConsoleFollowOptions): AsyncIterable<string>;
  /**
   * An interactive stream to the running console (a container's /dev/console, a VM's serial
   * port); the log keeps growing meanwhile. Several streams may be attached at once; InvalidState
   * if the instance is not running.
   */
  attach(): Promise<ConsoleStream>;
}
