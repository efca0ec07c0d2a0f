/**
 * Devices added to and removed from a running VM: onto the free PCIe root ports made at start
 * (SPARE_PORTS of them), a NIC with its tap, a share with its virtiofsd (then mounted by the
 * guest agent), a disk as a block node; removal waits until the guest lets go of the device.
 */
import { OperationFailed } from '../../core/errors';
import { type DeviceConfig, type Devices, deviceValue } from '../../devices/declarations';
import { throttleArgs } from './disk-io';
import { hasIoLimits, onlyLimitsChanged } from '../../devices/disk-limits';
import { refuseTpmHotplug, releaseTpm } from './tpm';
import { type DeviceSource, diskSource } from '../../devices/validate';
import type { DeviceChange } from '../../devices/change';
import { type QmpCommands, QmpError, QmpTimeoutError } from '../../qmp';
import type { GuestAgent } from './agent';
import {
  blockdevArgs,
  chardevArgs,
  deviceArgs,
  freePorts,
  guestUmountCommand,
  nicDeviceArgs,
  prepareVmDevice,
  qemuDeviceId,
  qemuNodeName,
  releaseVmDevice,
  BUS_CONTROLLERS,
  SPARE_PORTS,
  startVirtiofsd,
  vmDeviceKind,
} from './devices';
import { agentRun, mountShare } from './guest';
import { makeVmNic, releaseVmNic } from './nics';
import type { VmMonitor } from './monitor';

/** How long the guest has to release a device being unplugged. */
const UNPLUG_MS = 20_000;

/** What hot-plug needs of its VM. */
export interface HotplugHooks {
  readonly monitor: VmMonitor;
  dir(): string;
  name(): string;
  agent(): GuestAgent;
  /** A NIC was plugged: with agent.nic_config, its interface gets the device's name and MTU. */
  nicPlugged(name: string, d: DeviceConfig, src: DeviceSource): Promise<void>;
}

/** The sources of the devices a change adds and removes, as probed and read by the VM. */
export interface ChangeSources {
  added: Map<string, DeviceSource>;
  removed: Map<string, DeviceSource>;
}

export class HotPlug {
  constructor(private readonly vm: HotplugHooks) {}

  /**
   * New devices are made first (a `size` disk's qcow2); on a running VM the removed ones are
   * unplugged and the new ones plugged. A failure undoes what this call did.
   */
  async apply(whole: DeviceChange, sources: ChangeSources, live: boolean): Promise<void> {
    const dir = this.vm.dir();
    if (live) refuseTpmHotplug(this.vm.name(), whole);
    const change = live ? await this.throttleChanged(whole) : whole;
    for (const [name, d] of Object.entries(change.added)) await prepareVmDevice(dir, name, d);
    const plugged: string[] = [];
    try {
      if (live) {
        for (const [name, d] of Object.entries(change.removed)) await this.unplug(name, d, sources.removed.get(name)!);
        for (const [name, d] of Object.entries(change.added)) {
          await this.plug(name, d, sources.added.get(name)!);
          plugged.push(name);
        }
      }
    } catch (e) {
      for (const name of plugged) await this.unplug(name, change.added[name], sources.added.get(name)!).catch(() => undefined);
      for (const [name, d] of Object.entries(change.removed)) await this.plug(name, d, sources.removed.get(name)!).catch(() => undefined);
      for (const name of Object.keys(change.added)) if (!(name in change.removed)) await releaseVmDevice(dir, name);
      throw e;
    }
    for (const name of Object.keys(change.removed)) if (!(name in change.added)) await releaseVmDevice(dir, name);
    await releaseTpm(dir, change);
  }

  /** A free PCIe root port, or OperationFailed when the spare ones are all taken. */
  private async port(name: string): Promise<string> {
    const free = freePorts(await this.vm.monitor.command('query-pci'));
    if (!free.length) throw new OperationFailed(`${this.vm.name()} has no free PCIe port for device "${name}" (${SPARE_PORTS} spare ones are made at start): restart it to add more`);
    return free[0];
  }

  /** Hot-plugs a device into the running VM. */
  private async plug(name: string, d: DeviceConfig, src: DeviceSource): Promise<void> {
    const kind = vmDeviceKind(d, src);
    if (kind === 'skip') return;
    const { monitor } = this.vm;
    const dir = this.vm.dir();
    if (kind === 'nic') {
      await monitor.command('netdev_add', await makeVmNic(dir, name, d, src));
      await monitor.command('device_add', nicDeviceArgs(name, d, src, await this.port(name))).catch(async (e) => {
        await monitor.command('netdev_del', { id: `net-${name}` }).catch(() => undefined);
        throw e;
      });
      await this.vm.nicPlugged(name, d, src);
      return;
    }
    if (kind === 'share') {
      await startVirtiofsd(dir, name, d, diskSource(d, src));
      await monitor.command('chardev-add', chardevArgs(dir, name));
      await monitor.command('device_add', deviceArgs(dir, name, d, src, await this.port(name)));
      await mountShare(this.vm.agent(), name, d, this.vm.name());
      return;
    }
    const controller = BUS_CONTROLLERS[deviceValue(d, 'io.bus') ?? ''];
    if (controller && !(await this.hasDevice(controller.id))) await monitor.command('device_add', { ...controller, bus: await this.port(name) });
    await monitor.command('blockdev-add', blockdevArgs(dir, name, d, src));
    await monitor.command('device_add', deviceArgs(dir, name, d, src, await this.port(name))).catch(async (e) => {
      await monitor.command('blockdev-del', { 'node-name': qemuNodeName(name) }).catch(() => undefined);
      throw e;
    });
    if (hasIoLimits(d)) await this.throttle(name, d);
  }

  /**
   * Sets a disk's limits on its block backend, named by the QOM path query-block gives (a
   * virtio-blk-pci's backend is its inner virtio-backend, not the device itself); false when QEMU has no such disk.
   */
  private async throttle(name: string, d: DeviceConfig, blocks?: QmpCommands['query-block']['returns']): Promise<boolean> {
    const id = qemuDeviceId(name);
    const qdev = (blocks ?? (await this.vm.monitor.command('query-block'))).find((b) => b.qdev === id || b.qdev?.startsWith(`/machine/peripheral/${id}/`))?.qdev;
    if (qdev === undefined) return false;
    await this.vm.monitor.command('block_set_io_throttle', throttleArgs(qdev, d));
    return true;
  }

  /** The block disks of `devices` with I/O limits get them (after a start: QEMU's command line has none). */
  async throttleAll(devices: Devices): Promise<void> {
    const limited = Object.entries(devices).filter(([, d]) => d.type === 'disk' && hasIoLimits(d));
    if (!limited.length) return;
    const blocks = await this.vm.monitor.command('query-block');
    for (const [name, d] of limited) await this.throttle(name, d, blocks);
  }

  /** A disk whose limits alone changed gets its new ones in place (no unplug); the rest of the change is returned. */
  private async throttleChanged(change: DeviceChange): Promise<DeviceChange> {
    const removed = { ...change.removed };
    const added = { ...change.added };
    for (const [name, d] of Object.entries(change.added)) {
      const before = change.removed[name];
      if (!before || d.type !== 'disk' || !onlyLimitsChanged(before, d) || !(await this.throttle(name, d))) continue;
      delete removed[name];
      delete added[name];
    }
    return { removed, added };
  }

  /** Hot-unplugs a device from the running VM: the guest lets go of it first. */
  private async unplug(name: string, d: DeviceConfig, src: DeviceSource): Promise<void> {
    const kind = vmDeviceKind(d, src);
    if (kind === 'skip' || !(await this.hasDevice(qemuDeviceId(name)))) return;
    if (kind === 'share') await agentRun(this.vm.agent(), guestUmountCommand(d), this.vm.name()).catch(() => undefined);
    if (!(await this.deviceDel(name))) return;
    const { monitor } = this.vm;
    if (kind === 'share') await monitor.command('chardev-remove', { id: `chr-${name}` }).catch(() => undefined);
    else if (kind === 'nic') {
      await monitor.command('netdev_del', { id: `net-${name}` }).catch(() => undefined);
      await releaseVmNic(this.vm.dir(), name, d);
    } else await monitor.command('blockdev-del', { 'node-name': qemuNodeName(name) }).catch(() => undefined);
  }

  /** `device_del`, resolved once the guest released the device (DEVICE_DELETED); false when QEMU does not run. */
  private async deviceDel(name: string): Promise<boolean> {
    const qmp = await this.vm.monitor.forChange();
    if (!qmp) return false;
    const id = qemuDeviceId(name);
    // Listening before device_del: the guest may release the device before its reply is read.
    const stop = new AbortController();
    const deleted = qmp.waitEvent('DEVICE_DELETED', { filter: (e) => e.device === id, timeout: UNPLUG_MS, signal: stop.signal }).catch((e) => {
      if (e instanceof QmpTimeoutError) throw new OperationFailed(`the guest of ${this.vm.name()} did not release device "${name}" within ${UNPLUG_MS} ms`, { call: 'qmp:device_del' });
      throw e instanceof QmpError ? new OperationFailed(`QMP device_del on ${this.vm.name()}: ${e.message}`, { call: 'qmp:device_del' }, { cause: e }) : e;
    });
    try {
      await Promise.all([this.vm.monitor.command('device_del', { id }), deleted]);
    } finally {
      stop.abort();
    }
    return true;
  }

  private async hasDevice(id: string): Promise<boolean> {
    const list = await this.vm.monitor.command('qom-list', { path: '/machine/peripheral' });
    return list.some((p) => p.name === id);
  }
}
