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
  /**
   * `unix-char`, `unix-block` (running container: its node inside, if there) and `unix-hotplug`
   * (running container: the host's nodes it has made inside now): their /dev paths.
   */
  nodes?: string[];
  /** A NIC of a running instance (see NicLiveState). */
  nic?: NicLiveState;
  /** A container's disk while it runs: what is mounted at its path inside now (none: null). */
  mount?: MountState | null;
  /** A VM's disk while QEMU runs: its block node or virtiofs share as QEMU and the host have them now. */
  block?: BlockState | null;
  /** A VM's TPM: swtpm's control socket and whether swtpm runs now. */
  tpm?: { socket: string; alive: boolean };
  /** A proxy of a running local instance: its listeners and whether lxq's proxy process (or nftables, `nat`) serves them now. */
  proxy?: ProxyLiveState;
}

/**
 * A NIC's live status in `state().devices[].nic`. `interface` is the instance's interface for
 * the NIC (found by its name inside a container, by its MAC in a VM, whose agent must answer;
 * over LXD by its `volatile.<device>.hwaddr`), null where it is not found (stopped, the agent
 * silent). `hostName` is the host link the NIC's traffic goes through, read from the host's
 * links now: a container's veth host end (bridged, p2p, routed), a VM's tap or macvtap; null
 * where there is none on the host (a container's macvlan or ipvlan link and a physical NIC are
 * inside the instance) or it is gone. Over LXD, LXD's `host_name`.
 *
 * @example
 * ```ts
 * const eth0 = (await c.state()).devices.find((d) => d.name === 'eth0')?.nic;
 * console.log(eth0?.hostName, eth0?.interface?.counters.bytesReceived);
 * ```
 */
export interface NicLiveState {
  nictype: string;
  interface: NetworkInterface | null;
  hostName: string | null;
}

/**
 * What is mounted at a container disk's path now, from the container init's
 * `/proc/<pid>/mountinfo` (the last mount at that path: the one seen inside).
 *
 * @example
 * ```ts
 * const m = (await c.state()).devices.find((d) => d.name === 'data')?.mount;
 * if (m) console.log(m.target, m.readOnly, m.fstype, m.source, m.root);
 * ```
 */
export interface MountState {
  /** The path inside. */
  target: string;
  readOnly: boolean;
  fstype: string;
  /** The filesystem's source as the kernel names it (a block device, `tmpfs`, `overlay`…). */
  source: string;
  /** The directory of that filesystem mounted there (a bind mount's source within it). */
  root: string;
}

/**
 * A VM disk as QEMU has it now: a block disk's node from QMP `query-named-block-nodes` (its
 * image file, format, read-only, and whether a device holds it, from `query-block`), or a
 * virtiofs share's socket and whether its virtiofsd runs.
 *
 * @example
 * ```ts
 * const b = (await vm.state()).devices.find((d) => d.name === 'data')?.block;
 * if (b?.kind === 'block') console.log(b.node, b.file, b.readOnly);
 * ```
 */
export type BlockState =
  | { kind: 'block'; node: string; file: string; format: string; readOnly: boolean; attached: boolean }
  | { kind: 'virtiofs'; socket: string; alive: boolean };

/**
 * A proxy's live status: each listen address and whether a socket of lxq's proxy process listens
 * there now (read from the proxy process's descriptors and the kernel's socket tables: the
 * host's for `bind: host`, the container's for `bind: instance`); a `nat` proxy's, whether
 * lxq's nftables table for the instance holds its rule.
 *
 * @example
 * ```ts
 * const p = (await c.state()).devices.find((d) => d.type === 'proxy')?.proxy;
 * console.log(p?.pid, p?.listeners.map((l) => `${l.address} ${l.listening}`));
 * ```
 */
export interface ProxyLiveState {
  /** The process serving it (null: none, or a `nat` proxy). */
  pid: number | null;
  /** `listening`: null where lxq cannot see it from the host (a VM's `bind: instance` listener, in the guest). */
  listeners: Array<{ address: string; listening: boolean | null }>;
}
