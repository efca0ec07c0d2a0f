/**
 * The common base of the local drivers (container, VM), on top of what every instance shares
 * (lib/instance/common.ts) and of the instance as stored (stored.ts: its directory, record, lock
 * and profiles): the changes of options, devices and profiles, the proxy devices this
 * process serves (proxies.ts), freezes made for an operation and thawed after a crash, snapshots,
 * copies, publishing and export (export.ts), and the host's part in devices and addresses. A
 * driver implements the `abstract` primitives only.
 */
import * as path from 'node:path';

import type { InstanceConfig, InstanceConfigPatch, InstanceType } from '../config/options';
import { checkLongOptions, longOperation } from '../core/abort';
import { NotSupported } from '../core/errors';
import { markUnfinished } from '../core/staging';
import { type DeviceChange, deviceChange } from '../devices/change';
import type { Devices } from '../devices/declarations';
import type { ProbeEnv } from '../devices/validate';
import type { LifecycleAction, LifecycleDetail } from '../events/lifecycle';
import type { Networks } from '../network/networks';
import { markFreeze, orphanedFreeze, unmarkFreeze } from '../storage/freeze-mark';
import { hasRun, markRan, unmarkRan } from './ephemeral';
import { markPower, markStarting } from './power';
import { Snapshots } from '../storage/snapshots';
import type { CopyToOptions, InstanceSnapshots, StorageDriver } from '../storage/types';
import { type AddressFamily, protection, type StopOutcome } from './common';
import { ConsoleHub, type ConsoleEndpoint } from './console';
import { instanceConsole, type Stamper, startStamper } from './console-times';
import { DEFAULT_STOP_TIMEOUT_MS, type DeviceState, type DriverState, type ExportOptions, type InstanceConsole, type InstanceRecord, type InstanceStatus } from './instance';
import { checkExpansion, checkProfileList, type Expansion, expand, profilesDirOf, readProfiles, type StoredProfile } from './profiles';
import type { DataSource } from './export';
import { ProxyDevices, servedType } from './proxies';
import { StoredInstance } from './stored';

/* eslint-disable @typescript-eslint/no-require-imports -- what only changes, moves, exports and address searches use is loaded then: `lxq list` and `lxq exec` never load it */
const configOptions = (): typeof import('../config/options') => require('../config/options');
const nic = (): typeof import('../devices/nic') => require('../devices/nic');
const poolMove = (): typeof import('../storage/pool-move') => require('../storage/pool-move');
const addresses = (): typeof import('./addresses') => require('./addresses');
const deviceLive = (): typeof import('./device-live') => require('./device-live');
const exporter = (): typeof import('./export') => require('./export');
/* eslint-enable @typescript-eslint/no-require-imports */

// The record's file names and writer, where the drivers and the host have always found them.
export { RECORD_FILE, writeInstanceRecord } from './record';

/** How often waitForAddress looks (the instance's own state and the network's leases). */
const ADDRESS_POLL_MS = 100;

export abstract class BaseInstance extends StoredInstance {
  /** Where this instance reports its lifecycle changes (set by the Host: see lib/events/). */
  reportLifecycle: ((action: LifecycleAction, detail?: LifecycleDetail) => Promise<void>) | undefined;
  /** The proxy devices, served by lxq's proxy process while the instance runs. */
  private readonly proxies = new ProxyDevices(() => ({ dir: this.dir, name: this.name, type: this.type, hostPath: path.dirname(path.dirname(this.dir)) }));
  protected readonly addressPollMs = ADDRESS_POLL_MS;

  /** The instance's storage primitives (snapshot capture and restore), for lib/storage. */
  protected abstract readonly storage: StorageDriver;

  readonly snapshots: InstanceSnapshots = new Snapshots({
    name: () => this.name,
    type: () => this.type,
    dir: () => this.dir,
    record: () => this.record,
    driver: () => this.storage,
    serialized: (op) => this.serialized(op),
    status: () => this.status(),
    saveRecord: (r) => this.saveRecord(r),
    stop: async () => void (await this.stopNow(DEFAULT_STOP_TIMEOUT_MS, false)),
    start: () => this.startNow(),
    emit: async (event, payload) => {
      this.emit(event as 'snapshot-renamed', payload as { name: string; snapshot: string; previous: string });
      await this.reported(`instance-${event}`, { snapshot: payload.snapshot, ...(payload.previous !== undefined ? { previous: payload.previous } : {}) });
    },
  });

  private readonly consoleHub = new ConsoleHub(
    async () => {
      await this.require('attach to the console of', ['running', 'frozen']);
      return this.openConsole();
    },
    () => new NotSupported(`the console of ${this.name} has no window size (a ${this.type}'s serial port)`),
  );

  get console(): InstanceConsole {
    return instanceConsole(this.consoleLogPath, this.name, this.consoleHub);
  }

  // ---- what a driver provides (besides CommonInstance's primitives) ----
  /** The host file the driver keeps the console output in. */
  protected abstract get consoleLogPath(): string;
  /** The process that writes the console log while the instance runs (liblxc's monitor, QEMU); null if none runs. */
  protected abstract consoleWriterPid(): Promise<number | null>;
  /** Opens the running instance's console (called once for all the streams attached to it). */
  protected abstract openConsole(): Promise<ConsoleEndpoint>;
  /** Resolves once the running instance is frozen (paused); refuses (`refusal`) unless it is running. */
  protected abstract doFreeze(): Promise<void>;
  /** Resolves once the frozen instance runs again; refuses (`refusal`) unless it is frozen (or freezing, with `from` 'freezing'). */
  protected abstract override doUnfreeze(from?: 'frozen' | 'freezing'): Promise<void>;
  protected abstract doDelete(): Promise<void>;
  protected abstract doState(status: InstanceStatus): Promise<DriverState>;
  /** Applies changed options: `live` says whether the instance is running now. */
  protected abstract applyConfig(next: InstanceConfig, previous: InstanceConfig, live: boolean): Promise<void>;
  /** Applies a change of devices: `removed` (as they were) and `added` (as they are in `next`), checked against the host first,
   * hot-plugged when `live`; on failure nothing is left changed. The record is saved by the caller once this resolves. */
  protected abstract applyDevices(next: Devices, change: DeviceChange, live: boolean): Promise<void>;
  /** The host's networks (NICs are checked against them). */
  protected abstract get networks(): Networks;
  /** True where state() always sees the instance's addresses (a container's network namespace): waitForAddress then never answers
   * from a DHCP lease, which the client may not have applied yet (a restart within the second of the previous lease looked granted). */
  protected readonly ownAddressesComplete: boolean = false;
  /** The instance's /proc/net/if_inet6 (its kernel's IPv6 address flags). */
  protected abstract readIfInet6(): Promise<string>;
  /** What checking this instance's devices against the host needs. */
  protected get probeEnv(): ProbeEnv {
    return { networks: this.networks, instance: this.name };
  }
  // ---- CommonInstance's primitives and hooks ----

  protected override async reported(action: LifecycleAction, detail?: LifecycleDetail): Promise<void> {
    await this.reportLifecycle?.(action, detail).catch(() => undefined);
  }

  /** Proxies listen first: an address in use refuses the start before anything runs. An ephemeral instance is marked as having run. */
  protected override async beforeStart(): Promise<void> {
    this.profileSet.refuseMissing(`start ${this.name}`);
    await this.proxies.open(this.expandedDevices);
    if (this.ephemeral) await markRan(this.dir);
    this.undoPower = await markStarting(this.dir);
    // Before the start, so that the first lines get their times (console.log({ since })).
    this.stamper = startStamper(this.consoleLogPath);
  }

  /** The console log's stamper, from beforeStart until the start ended; what puts back the power mark if it fails. */
  private stamper: Stamper | undefined;
  private undoPower: (() => Promise<void>) | undefined;

  protected override async startNow(): Promise<void> {
    await super.startNow();
    const stamper = this.stamper;
    this.stamper = undefined;
    const writer = await this.consoleWriterPid().catch(() => null);
    if (writer === null) await stamper?.cancel();
    else await stamper?.bind(writer);
    // The proxy process ends with the instance's long-lived process: the one that writes its console.
    await this.proxies.bind(writer);
  }

  protected override startProtection(): Error | undefined {
    return protection(this, 'security.protection.start', 'start');
  }

  protected override async startFailed(): Promise<void> {
    await this.stamper?.cancel();
    this.stamper = undefined;
    await this.proxies.close();
    if (this.ephemeral) await unmarkRan(this.dir);
    await this.undoPower?.();
  }

  protected override async stopped(): Promise<void> {
    if (this.ephemeral) await this.deleteNow();
    else await markPower(this.dir, 'STOPPED');
  }

  /** An ephemeral instance that has run and is stopped now (its main process exited, or the process that ran it died) is deleted, under its
   * lock, by whichever process sees it; one that runs again (a reboot inside, a restart, a restore) is kept. Says which: 'pending' while
   * its stop is not final yet (see stillRunning), to be asked again. */
  deleteIfEnded(): Promise<'deleted' | 'kept' | 'pending'> {
    return this.serialized(async () => {
      if (!this.ephemeral || !(await hasRun(this.dir))) return 'kept';
      if (this.observe(await this.currentStatus()) !== 'stopped') return 'kept';
      if (await this.stillRunning()) return 'pending';
      await this.deleteNow();
      return 'deleted';
    });
  }

  /** True while the instance's stop is not final (a container's monitor between a reboot's two inits). */
  protected async stillRunning(): Promise<boolean> {
    return false;
  }

  /** Its proxies end first, while it still runs: the unix sockets they made inside are removed then (they would end with it anyway). */
  protected override async stopNow(timeoutMs: number, force: boolean): Promise<StopOutcome | undefined> {
    await this.proxies.close();
    return super.stopNow(timeoutMs, force);
  }

  /** A proxy's listeners, served by the proxy process (on the host, or inside a container: `insidePid`) or by nat rules. */
  protected override async liveDevices(states: DeviceState[], devices: Devices, s: DriverState): Promise<void> {
    const proxies = states.filter((d) => d.type === 'proxy');
    if (!proxies.length) return;
    const served = await this.proxies.served(devices, s.pid);
    for (const d of proxies) {
      const inside = devices[d.name].bind === 'instance' ? { ...served, netnsPid: this.type === 'container' ? s.pid : null } : served;
      d.proxy = await deviceLive().proxyLive(d.name, devices[d.name], this.type === 'vm', inside).catch(() => undefined);
    }
  }

  protected readState(): Promise<DriverState> {
    return this.currentStatus().then((status) => this.doState(status));
  }

  protected addressSearch(family: AddressFamily): () => Promise<string | undefined> {
    const source = { devices: this.expandedDevices, networks: this.networks, ownAddressesComplete: this.ownAddressesComplete };
    return addresses().localAddressSearch({ ...source, state: () => this.state(), readIfInet6: () => this.readIfInet6() }, family);
  }

  protected changeDevices(change: (devices: Readonly<Devices>) => Devices): Promise<void> {
    return this.changeRecord({ ...this.record, devices: change(this.devices) }, this.profileSet.records);
  }

  /**
   * Takes `record` (its own devices or its profiles changed) expanded with `profiles`: checked
   * first, applied (see applyExpansion; a device that cannot change fails it), saved, reported.
   */
  private async changeRecord(record: InstanceRecord, profiles: StoredProfile[]): Promise<void> {
    checkExpansion(this.type, record, profiles);
    const [before, after] = [this.profileSet.expand(this.record), expand(record, profiles)];
    if (this.type === 'container') configOptions().refuseFixedChange(this.name, before.config, after.config);
    await this.applyExpansion(before, after, true);
    await this.saveRecord(record);
    await this.loadProfiles(profiles);
    await this.reported('instance-updated');
  }

  /**
   * The expanded options and devices change from `before` to `after`: live where the key or
   * device allows it, else at the next start (which always expands the record again). A device
   * that cannot change live fails it when `strict`, else it waits for the next start too.
   */
  private async applyExpansion(before: Expansion, after: Expansion, strict: boolean): Promise<void> {
    const live = (await this.currentStatus()) !== 'stopped';
    await this.changingTogether(after, async () => {
      if (Object.keys({ ...before.config, ...after.config }).some((k) => before.config[k] !== after.config[k])) {
        await this.applyConfig(live ? configOptions().liveChange(this.type, before.config, after.config) : after.config, before.config, live);
      }
      await this.applyDeviceChange(before.devices, after.devices, live).catch((e) => (live && !strict ? undefined : Promise.reject(e)));
    });
  }

  /** Runs `apply`, which changes options and devices together into `after`; a driver that derives a file from both writes it once, at the end. */
  protected async changingTogether(_after: Expansion, apply: () => Promise<void>): Promise<void> {
    await apply();
  }

  /** Applies the change of the expanded devices from `before` to `next` (proxies, the driver's part, the networks' hosts); the caller saves the record. */
  private async applyDeviceChange(before: Readonly<Devices>, next: Devices, live: boolean): Promise<void> {
    const change = deviceChange(before, next);
    if (!Object.keys({ ...change.removed, ...change.added }).length) return;
    const running = live ? { pid: () => this.consoleWriterPid() } : undefined;
    await this.proxies.changing(before, next, change, running, () => this.applyDevices(next, change, live));
    await nic().syncNetworkHosts({ ...change.removed, ...change.added }, this.networks);
  }

  // ---- the rest of the interface ----

  update(patch: InstanceConfigPatch): Promise<void> {
    return this.serialized(async () => {
      const record = { ...this.record, config: configOptions().patchConfig(this.type, this.record.config, patch) };
      checkExpansion(this.type, record, this.profileSet.records);
      await this.applyConfig(expand(record, this.profileSet.records).config, this.expandedConfig, (await this.currentStatus()) !== 'stopped');
      await this.saveRecord(record);
      await this.reported('instance-updated');
    });
  }

  /** @internal For host.profiles: its profiles changed on disk (`previous`: as they were), or one was renamed; live where it can, else at its next start. */
  profilesChanged(previous: StoredProfile[], renamed?: { from: string; to: string }): Promise<void> {
    return this.serialized(async () => {
      if (renamed) await this.saveRecord({ ...this.record, profiles: this.profiles.map((n) => (n === renamed.from ? renamed.to : n)) }).then(() => this.loadProfiles());
      await this.applyExpansion(expand(this.record, renamed ? this.profileSet.records : previous), expand(this.record, this.profileSet.records), false);
      await this.reported('instance-updated');
    });
  }

  /** Replaces its profiles (LXD's `lxc profile add/remove`): see Instance.setProfiles. */
  setProfiles(names: readonly string[]): Promise<void> {
    return this.serialized(async () => {
      const list = checkProfileList(names);
      await this.changeRecord({ ...this.record, profiles: list }, await readProfiles(profilesDirOf(this.dir), list));
    });
  }

  freeze(): Promise<void> {
    return this.serialized(async () => {
      // A mark seen under the lock is an orphan's (a live operation holds the lock): this freeze is the user's.
      await unmarkFreeze(this.dir);
      await this.doFreeze(); // resolves once frozen: no need to ask again
      this.observe('frozen');
      await this.reported('instance-paused');
    });
  }

  unfreeze(): Promise<void> {
    return this.serialized(async () => {
      await this.doUnfreeze();
      await unmarkFreeze(this.dir);
      this.observe('running');
      await this.reported('instance-resumed');
    });
  }

  delete(options: { force?: boolean } = {}): Promise<void> {
    return this.serialized(async () => {
      // As LXD: even with force (which only stops it first); an ephemeral instance's own deletion at its stop is not refused.
      const refused = protection(this, 'security.protection.delete', 'delete');
      if (refused) throw refused;
      const status = await this.currentStatus();
      if (status !== 'stopped') {
        if (!options.force) throw this.deleteRefusal(status);
        const how = await this.stopNow(0, true);
        if (how) await this.reported(how);
      }
      await this.deleteNow();
    });
  }

  /** Deletes the stopped instance (inside serialized()). */
  private async deleteNow(): Promise<void> {
    await this.proxies.close();
    // Before the driver removes the record: a process killed from there on leaves a directory the next Host.open clears.
    await markUnfinished(this.dir, { deleting: true, pool: this.record.pool });
    await this.doDelete();
    await this.closeRecord();
    await nic().syncNetworkHosts(this.expandedDevices, this.networks);
    await this.reported('instance-deleted');
    this.removeAllListeners();
  }

  /**
   * Writes the instance (record, root filesystem or disk, and its snapshots unless
   * `instanceOnly`, as LXD's export) to `file` as a zstd tarball (see export.ts).
   */
  export(file: string, options: ExportOptions = {}): Promise<void> {
    let target: string;
    try {
      target = exporter().checkExport(file, options);
      checkLongOptions(options);
    } catch (e) {
      return Promise.reject(e);
    }
    return longOperation(`exporting ${this.name}`, options, () =>
      this.serialized(async () => {
        const source = await this.dataSource();
        if (source.status !== 'stopped' && source.status !== 'running') throw this.refusal('export', source.status, ['stopped', 'running']);
        await exporter().writeExport({ ...source, status: source.status, freeze: () => this.freezeFor('export'), thaw: () => this.thawAfter() }, target, options.instanceOnly === true);
      }),
    );
  }

  // ---- for the host ----

  /** For Host.copy: fills `into` with a copy of this instance's data, or of one snapshot's, on its pool or `pool`, and says which record it was taken with (export.ts). */
  copyData(into: string, options: { snapshot?: string; snapshots: boolean; flatten: boolean; pool?: string; ownRange?: CopyToOptions['ownRange'] }): Promise<InstanceRecord> {
    return this.serialized(async () => {
      const target = await poolMove().targetPool(this.storage, this.record, options.pool); // NotFound, NotSupported before anything is copied
      return exporter().copyData(await this.dataSource(options.snapshot), into, { ...options, target });
    });
  }

  /** Moves the stopped instance to another pool (lib/storage/pool-move.ts), then lets the driver redo what it derives from its directory. */
  protected async moveToPool(pool: string): Promise<boolean> {
    const target = await poolMove().targetPool(this.storage, this.record, pool);
    if (target) this.record = await poolMove().moveAcrossPools({ dir: this.dir, record: this.record, storage: this.storage, pool: await this.storage.poolNamed(this.record.pool) }, pool, target);
    if (target) await this.renamed();
    return target !== undefined;
  }

  /** For ImageStore.publish: fills `into` with an image of this stopped instance, or of one of its snapshots (export.ts). */
  publishData(into: string, options: { snapshot?: string }): Promise<{ type: InstanceType; meta: Record<string, unknown> }> {
    return this.serialized(async () => exporter().publishData(await this.dataSource(options.snapshot), into));
  }

  /** This instance's data, or one snapshot's, for an export, a copy or a publish (inside serialized()). */
  private async dataSource(snapshot?: string): Promise<DataSource> {
    const ref = snapshot === undefined ? undefined : await (this.snapshots as Snapshots).refOf(snapshot);
    return { name: this.name, type: this.type, dir: this.dir, record: this.record, status: this.observe(await this.currentStatus()), storage: this.storage, snapshot: ref };
  }

  /** For Host.copy: the copy's directory is in place; derive what the driver needs (liblxc's config), then write the record. */
  async completeCopy(): Promise<void> {
    await this.renamed();
    await this.saveRecord(this.record);
  }

  /** Starts the proxy process of a running instance just opened (Host.get) if it is gone (killed). */
  async resumeProxies(): Promise<void> {
    if (Object.values(this.expandedDevices).some(servedType) && (await this.status()) === 'running') await this.proxies.ensure(this.expandedDevices, () => this.consoleWriterPid());
  }


  /**
   * A freeze made for an operation (snapshot, copy, export), recorded in the instance's directory
   * first: if this process dies before thawAfter, the next process to open the instance thaws it
   * (thawOrphaned). Called inside serialized() (the instance's lock is held).
   */
  protected async freezeFor(operation: string): Promise<void> {
    await markFreeze(this.dir, operation);
    await this.doFreeze().catch(async (e) => {
      await unmarkFreeze(this.dir);
      throw e;
    });
  }

  protected async thawAfter(): Promise<void> {
    await this.doUnfreeze().then(() => unmarkFreeze(this.dir));
  }

  /**
   * Thaws the instance if an operation's freeze outlived the process that made it (see
   * freezeFor); resolves to that operation's name, or undefined. A user's freeze() stays.
   */
  async thawOrphaned(): Promise<string | undefined> {
    if ((await orphanedFreeze(this.dir)) === undefined) return undefined;
    return this.serialized(async () => {
      // Under the lock: the mark read again (another process may have thawed it, or made a new one).
      const operation = await orphanedFreeze(this.dir);
      if (operation === undefined) return undefined;
      const status = await this.currentStatus();
      // A process killed while freezing leaves the cgroup FREEZING: thawed from there too.
      if (status === 'frozen' || status === 'freezing') await this.doUnfreeze(status);
      await unmarkFreeze(this.dir);
      this.observe(await this.currentStatus());
      return operation;
    });
  }
}
