/**
 * What `instance.state()` reports of an instance, the same for every driver: its status, its
 * processes and usage, its network interfaces and addresses, its devices.
 */
import type { InstanceConfig } from '../config/options';
import type { Devices, DeviceType } from '../devices/declarations';

/**
 * Lifecycle status, as LXD names it (lower case).
 *
 * @example
 * ```ts
 * if ((await c.status()) === 'running') await c.stop();
 * ```
 */
export type InstanceStatus = 'stopped' | 'starting' | 'running' | 'stopping' | 'freezing' | 'frozen' | 'error';

/**
 * What `instance.state()` reports: status, pid, CPU, memory, processes, network and devices.
 *
 * @example
 * ```ts
 * const s = await c.state();
 * console.log(s.status, s.processes, s.memory.usageBytes, s.network.addresses);
 * ```
 */
export interface InstanceState {
  status: InstanceStatus;
  /** The init process (container) or the QEMU process (VM); null when stopped. */
  pid: number | null;
  cpu: { usageNs: number };
  /**
   * Bytes in use, and the limit (null: none set). `usageBytes` is null where the driver has no
   * figure: LXD sends 0 for a running instance whose memory it could not read (its cgroup read
   * failed, as once just after a start under load; a VM without LXD's agent), and since a running
   * instance never uses 0 bytes, lxq does not pass that on as a usage. A stopped instance uses 0.
   * The local drivers always have a figure.
   */
  memory: { usageBytes: number | null; limitBytes: number | null };
  processes: number;
  network: {
    /** Every address but loopback and IPv6 link-local ones, as liblxc's get_ips reports them. */
    addresses: string[];
    /** Each interface, loopback included. */
    interfaces: NetworkInterface[];
  };
  /** Each device of the instance, in name order. */
  devices: DeviceState[];
  /** Deleted when it stops (LXD's `ephemeral`): see CreateOptions.ephemeral. */
  ephemeral: boolean;
  /** The profiles it takes options and devices from, in order (see Instance.profiles). */
  profiles: string[];
  /** The options in effect: its profiles', then its own (see Instance.expandedConfig). */
  expandedConfig: InstanceConfig;
  /** The devices in effect: its profiles', then its own (see Instance.expandedDevices). */
  expandedDevices: Devices;
}

/** @internal What a driver reports of its state; the common base adds the devices and what the record says. */
export type DriverState = Omit<InstanceState, 'devices' | 'ephemeral' | 'profiles' | 'expandedConfig' | 'expandedDevices'>;

/**
 * One network interface of an instance, as `state()` reports it.
 *
 * @example
 * ```ts
 * for (const i of (await c.state()).network.interfaces) console.log(i.name, i.hwaddr, i.addresses.map((a) => `${a.address}/${a.prefix}`));
 * ```
 */
export interface NetworkInterface {
  name: string;
  hwaddr: string;
  /** 0 where not known (a VM's agent does not say). */
  mtu: number;
  addresses: Array<{ family: 'inet' | 'inet6'; address: string; prefix: number }>;
  counters: { bytesReceived: number; bytesSent: number; packetsReceived: number; packetsSent: number };
}

/** Where `state().network.addresses` come from: interfaces but lo, without IPv6 link-local addresses. */
export function reportedAddresses(interfaces: NetworkInterface[]): string[] {
  return interfaces
    .filter((i) => i.name !== 'lo')
    .flatMap((i) => i.addresses.filter((a) => !(a.family === 'inet6' && a.address.toLowerCase().startsWith('fe80:'))).map((a) => a.address));
}

/**
 * What `state()` says of a device.
 *
 * @example
 * ```ts
 * for (const d of (await c.state()).devices) console.log(d.name, d.type, d.source ?? '-', d.path ?? '-');
 * ```
 */
export interface DeviceState {
  name: string;
  type: DeviceType;
  /** The host path (disks, unix devices). */
  source?: string;
  /** Where it is inside the instance. */
  path?: string;
  /** VMs: the QEMU device id, and for block disks the block node name. */
  qemuDevice?: string;
  qemuNode?: string;
  /** `unix-hotplug` on a running container: the host's nodes it has made inside now (their /dev paths). */
  nodes?: string[];
}
