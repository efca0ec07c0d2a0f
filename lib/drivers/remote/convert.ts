/**
 * LXD's shapes and lxq's: statuses, types, the options LXD has no key for, and an instance's
 * state and record read from LXD's JSON.
 */
import { findOption, type InstanceConfig, type InstanceType } from '../../config/options';
import { NotSupported } from '../../core/errors';
import type { DeviceConfig, Devices } from '../../devices/declarations';
import { byHwaddr } from '../../instance/device-live';
import type { InstanceRecord, InstanceStatus, NetworkInterface, NicLiveState } from '../../instance/instance';

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- LXD's JSON: its fields are read where they are used
export type LxdObject = Record<string, any>;

/** Names LXD accepts for cluster members and profiles (instance names: lib/instance/names.ts, the same rule). */
export const LXD_NAME = /^[a-zA-Z][a-zA-Z0-9-]{0,62}$/;

const STATUS: Record<string, InstanceStatus> = {
  Running: 'running', Stopped: 'stopped', Frozen: 'frozen', Error: 'error', Starting: 'starting', Stopping: 'stopping', Freezing: 'freezing',
};
export const lxdStatus = (s: string): InstanceStatus => STATUS[s] ?? 'error';
export const lxdType = (t: string): InstanceType => (t === 'virtual-machine' ? 'vm' : 'container');
/** LXD's name of an lxq instance type. */
export const lxdTypeName = (t: InstanceType): string => (t === 'vm' ? 'virtual-machine' : 'container');

/** lxq options LXD has no equivalent of. */
const NOT_ON_LXD = ['vm.accel'];

/** lxq options LXD has no key for are NotSupported (checked after the option values). */
export function refuseNotOnLxd(config: object | null | undefined): void {
  const unsupported = Object.keys(config ?? {}).filter((k) => NOT_ON_LXD.includes(k));
  if (unsupported.length) throw new NotSupported(`option ${unsupported.map((k) => `"${k}"`).join(', ')} has no equivalent on an LXD server`);
}

/** The keys of an LXD config that are lxq options. */
export function lxqConfig(config: Record<string, string>): InstanceConfig {
  return Object.fromEntries(Object.entries(config).filter(([k]) => findOption(k) !== undefined && !NOT_ON_LXD.includes(k)));
}

/**
 * LXD's memory figure for an instance in `status`. LXD reports a memory reading it could not make
 * (its cgroup read failed) as 0, which for a running or frozen instance cannot be true: that is
 * null, "no figure", never a usage of 0 bytes. A stopped instance uses 0.
 */
export function lxdMemoryUsage(status: InstanceStatus, usage: unknown): number | null {
  if (status === 'stopped') return 0;
  return typeof usage === 'number' && Number.isFinite(usage) && usage > 0 ? usage : null;
}

/** The interfaces of LXD's instance state (its `network`). */
export function lxdInterfaces(network: LxdObject | undefined): NetworkInterface[] {
  return Object.entries<LxdObject>(network ?? {}).map(([name, n]) => ({
    name,
    hwaddr: n.hwaddr ?? '',
    mtu: n.mtu ?? 0,
    addresses: (n.addresses ?? []).map((a: LxdObject) => ({ family: a.family === 'inet6' ? 'inet6' : 'inet', address: a.address, prefix: Number(a.netmask) })),
    counters: {
      bytesReceived: n.counters?.bytes_received ?? 0,
      bytesSent: n.counters?.bytes_sent ?? 0,
      packetsReceived: n.counters?.packets_received ?? 0,
      packetsSent: n.counters?.packets_sent ?? 0,
    },
  }));
}

/**
 * A NIC's live status from LXD's state: the interface with the MAC LXD gave the NIC
 * (`volatile.<device>.hwaddr`, or its `hwaddr` key; else its name inside), and LXD's `host_name`
 * for it (the server's host link: lxq cannot look at that host).
 */
export function lxdNicLive(name: string, d: DeviceConfig, network: LxdObject | undefined, config: Record<string, string>, interfaces: NetworkInterface[]): NicLiveState {
  const found = byHwaddr(interfaces, d.hwaddr ?? config[`volatile.${name}.hwaddr`]) ?? interfaces.find((i) => i.name === (d.name ?? name));
  const hostName: unknown = found ? network?.[found.name]?.host_name : undefined;
  return { nictype: d.nictype ?? 'bridged', interface: found ?? null, hostName: typeof hostName === 'string' && hostName !== '' ? hostName : null };
}

/** The record lxq would keep of the instance `of` (its name, type, image), from LXD's instance or snapshot object `m`. */
export function lxdRecord(of: { name: string; type: InstanceType; image: string; createdAt: Date }, m: LxdObject): InstanceRecord {
  return {
    version: 1,
    name: of.name,
    type: of.type,
    image: of.image,
    imageMeta: {},
    config: lxqConfig(m.config ?? {}),
    devices: (m.devices ?? {}) as Devices,
    createdAt: new Date(m.created_at ?? of.createdAt).toISOString(),
  };
}
