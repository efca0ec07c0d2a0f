/**
 * The device types, declared once: their keys (value form, default, which instance types each
 * key applies to), which instance types the device applies to, and whether it is hot-plugged.
 * Validation (validate.ts), the TypeScript types below and the README's table (`describeDevices`)
 * all read this table. Names and string forms follow LXD (`readonly: 'true'`).
 */
import type { Condition } from '../config/options';

/** How a key's value is written: LXD's string forms. */
export type DeviceValueForm = 'path' | 'string' | 'boolean' | 'size' | 'integer' | 'mode' | 'enum' | 'iolimit';

export interface DeviceKeySpec {
  readonly form: DeviceValueForm;
  /** Which instance types the key means something for; other types refuse it. */
  readonly condition: Condition;
  readonly description: string;
  readonly default?: string;
  /** For `enum`: the accepted values. */
  readonly values?: readonly string[];
  /** For `nic` keys: the NIC types the key applies to (default: all). */
  readonly nictypes?: readonly string[];
  /** For `gpu` keys: the GPU types the key applies to (default: all). */
  readonly gputypes?: readonly string[];
}

export interface DeviceTypeSpec {
  readonly condition: Condition;
  /** Added to and removed from a running instance (hot-plug), for the types it applies to. */
  readonly live: boolean;
  readonly description: string;
  readonly keys: Readonly<Record<string, DeviceKeySpec>>;
}

const PROPAGATION = ['private', 'shared', 'slave', 'unbindable', 'rprivate', 'rshared', 'rslave', 'runbindable'] as const;
const BUSES = ['virtio-blk', 'virtio-scsi', 'nvme', 'usb'] as const;
/** A disk's I/O limit keys (LXD's): bytes or operations per second. */
export const DISK_LIMITS = ['limits.read', 'limits.write', 'limits.max'] as const;
/** A container's root disk's I/O limits (LXD's `limits.*` keys of its `root` disk device), kept in its record. */
export type RootLimits = Partial<Record<(typeof DISK_LIMITS)[number], string>>;
/** LXD's NIC types that lxq knows (`ovn`, `sriov` need what this project has not). */
export const NIC_TYPES = ['bridged', 'macvlan', 'p2p', 'routed', 'physical', 'ipvlan'] as const;
/** The NIC types with a host end of lxq's (a veth's or tap's), where rate limits go. */
const LIMITED = ['bridged', 'p2p', 'routed'];
/** LXD's GPU types. */
export const GPU_TYPES = ['physical', 'mdev', 'mig', 'sriov'] as const;
/** A NIC's type: `bridged`, `macvlan`, `p2p`, `routed`, `physical` or `ipvlan`. */
export type NicType = (typeof NIC_TYPES)[number];

/** Keys the two unix device types share. */
const UNIX_KEYS = {
  source: { form: 'path', condition: 'container', description: 'Host device node to take the type, major and minor from.' },
  path: { form: 'path', condition: 'container', description: 'Where the node is made inside the instance (default: `source`).' },
  major: { form: 'integer', condition: 'container', description: 'Device major number (default: that of `source`).' },
  minor: { form: 'integer', condition: 'container', description: 'Device minor number (default: that of `source`).' },
  mode: { form: 'mode', condition: 'container', default: '0660', description: 'Permission bits of the node inside, in octal.' },
  uid: { form: 'integer', condition: 'container', default: '0', description: 'Owner of the node, as seen inside.' },
  gid: { form: 'integer', condition: 'container', default: '0', description: 'Group of the node, as seen inside.' },
  required: { form: 'boolean', condition: 'container', default: 'true', description: 'Refuse (and fail the start) when `source` is missing; "false" skips the device instead.' },
} as const satisfies Record<string, DeviceKeySpec>;

/**
 * The device types and their keys, declared once (LXD's names and string forms): what
 * validation, the `DeviceInput` type and the README's table read.
 *
 * @example
 * ```ts
 * for (const [type, spec] of Object.entries(DEVICE_TYPES)) console.log(type, spec.condition, Object.keys(spec.keys));
 * ```
 */
export const DEVICE_TYPES = {
  disk: {
    condition: 'both',
    live: true,
    description:
      'A host directory or file at `path` (containers: a bind mount; VMs: a virtiofs share mounted by the guest agent), ' +
      'or, for VMs, an extra block disk: `source` a raw or qcow2 image file, or `size` for a new qcow2 made by lxq.',
    keys: {
      source: {
        form: 'path',
        condition: 'both',
        description: 'Host path: a directory or file to share, or (VMs) a raw or qcow2 disk image; with `pool`, the name of a custom volume on that pool.',
      },
      pool: {
        form: 'string',
        condition: 'both',
        description:
          'A storage pool: `source` names a custom volume on it (`host.storage.pool(name).volumes`): containers, a filesystem volume bind-mounted idmapped (its root is the container\'s root); ' +
          'VMs, a filesystem volume shared with virtiofs (`path`), a block volume a disk (no `path`).',
      },
      path: { form: 'path', condition: 'both', description: 'Where it appears inside the instance (not for VM block disks).' },
      readonly: { form: 'boolean', condition: 'both', default: 'false', description: 'Read-only inside the instance.' },
      required: { form: 'boolean', condition: 'both', default: 'true', description: 'Refuse (and fail the start) when `source` is missing; "false" skips the device instead.' },
      shift: {
        form: 'boolean',
        condition: 'container',
        default: 'false',
        description: 'Idmapped mount: an unprivileged container sees the host\'s own owners (host root is root inside).',
      },
      propagation: { form: 'enum', condition: 'container', values: PROPAGATION, default: 'private', description: 'Mount propagation of the bind mount.' },
      recursive: { form: 'boolean', condition: 'container', default: 'false', description: 'Bind the mounts below `source` too (rbind).' },
      'raw.mount.options': {
        form: 'string',
        condition: 'container',
        description:
          'Mount options, comma-separated, applied in order: the per-mount flags a bind mount takes (`ro`, `rw`, `nosuid`, `suid`, `nodev`, `dev`, `noexec`, `exec`), with those the source\'s mount locks; ' +
          '`readonly: "true"` wins over `rw`. NotSupported: atime flags (locked in the container\'s user namespace) and a filesystem\'s own options (lxq mounts no block device\'s filesystem).',
      },
      size: { form: 'size', condition: 'vm', description: 'Size of a new, empty qcow2 block disk made by lxq (instead of `source`).' },
      'io.bus': { form: 'enum', condition: 'vm', values: BUSES, default: 'virtio-blk', description: 'Bus of a VM block disk (`nvme`: an NVMe controller of its own, serial = the name\'s first 20 characters; `usb`: a `usb-storage` disk on a `qemu-xhci` controller: the guest\'s kernel needs USB storage, which Debian\'s cloud kernel has not).' },
      'io.cache': {
        form: 'enum',
        condition: 'vm',
        values: ['none', 'writeback', 'unsafe'],
        description: 'Host caching of a VM block disk: `none` (O_DIRECT), `writeback`, `unsafe` (flushes ignored). Unset: QEMU\'s default, writeback (LXD\'s default is none, which tmpfs cannot do).',
      },
      'boot.priority': { form: 'integer', condition: 'vm', description: 'Boot order of a VM block disk (higher first): its bootindex in QEMU.' },
      'limits.read': {
        form: 'iolimit',
        condition: 'both',
        description:
          'Read limit: bytes/s (`10MB`, `1MiB`) or operations/s (`100iops`), changed live. VMs: QEMU\'s I/O throttling of the block disk. ' +
          'Containers: a block I/O cgroup rule (v1 blkio throttle, v2 io.max) on the block device under `source` (NotSupported on tmpfs, overlay…); disks on one device share the average.',
      },
      'limits.write': { form: 'iolimit', condition: 'both', description: 'Write limit, as `limits.read` (containers on cgroup v1: direct I/O only, as writeback is not charged to the container).' },
      'limits.max': { form: 'iolimit', condition: 'both', description: 'Both `limits.read` and `limits.write` (instead of them).' },
    },
  },
  nic: {
    condition: 'both',
    live: true,
    description:
      'A network interface, of one of LXD\'s NIC types (`nictype`): `bridged` (an lxq network, DHCP and DNS from its dnsmasq, or a host ' +
      'bridge as `parent`; containers: a veth pair, VMs: a tap), `macvlan` (on `parent`; containers: a macvlan link, VMs: a macvtap), ' +
      '`p2p` (a veth pair or tap whose host end stays on the host, on no bridge), `routed` (a veth or tap with host routes and proxy ' +
      'ARP/NDP for its static addresses), `physical` (a host link moved into a container and given back on stop). `ipvlan` and `vlan` ' +
      'need kernel features that are probed for and refused with NotSupported where missing.',
    keys: {
      network: { form: 'string', condition: 'both', nictypes: ['bridged'], description: 'The lxq network (see `host.networks`) to attach to.' },
      nictype: { form: 'enum', condition: 'both', values: NIC_TYPES, default: 'bridged', description: 'The kind of NIC (with `network`: `bridged`).' },
      parent: {
        form: 'string',
        condition: 'both',
        nictypes: ['bridged', 'macvlan', 'physical', 'routed', 'ipvlan'],
        description: 'The host link: a bridge (`bridged`), the lower link (`macvlan`, `ipvlan`), the link moved in (`physical`), the link answering ARP/NDP for the addresses (`routed`).',
      },
      name: { form: 'string', condition: 'both', description: 'The interface name inside the instance (default: the device name).' },
      hwaddr: { form: 'string', condition: 'both', description: 'MAC address (default: one made by lxq, 00:16:3e:…, kept in the record; `physical`: the link\'s own).' },
      host_name: { form: 'string', condition: 'both', nictypes: ['bridged', 'p2p', 'routed'], description: 'The host end\'s name (default: `lxq` and 8 hex digits, stable per instance and device).' },
      'ipv4.address': {
        form: 'string',
        condition: 'both',
        nictypes: ['bridged', 'routed', 'ipvlan'],
        description: '`bridged`: a static DHCP lease on the lxq network; `routed`, `ipvlan`: the instance\'s static addresses (comma-separated), routed to it by the host.',
      },
      'ipv6.address': {
        form: 'string',
        condition: 'both',
        nictypes: ['bridged', 'routed', 'ipvlan'],
        description:
          '`routed`, `ipvlan`: the instance\'s static IPv6 addresses (comma-separated), routed to it by the host; `bridged`: the one address `security.ipv6_filtering` lets it send from (lxq\'s networks give IPv6 by SLAAC: the instance configures it).',
      },
      'ipv4.gateway': { form: 'enum', condition: 'both', values: ['auto', 'none'], default: 'auto', nictypes: ['routed'], description: '`auto`: a default route inside via the host end (169.254.0.1); `none`: no default route.' },
      'ipv6.gateway': { form: 'enum', condition: 'both', values: ['auto', 'none'], default: 'auto', nictypes: ['routed'], description: '`auto`: a default route inside via the host end (fe80::1); `none`: no default route.' },
      'ipv4.routes': { form: 'string', condition: 'both', nictypes: ['p2p', 'routed'], description: 'IPv4 subnets (comma-separated) the host routes to the host end.' },
      'ipv6.routes': { form: 'string', condition: 'both', nictypes: ['p2p', 'routed'], description: 'IPv6 subnets (comma-separated) the host routes to the host end.' },
      mtu: { form: 'integer', condition: 'both', description: 'MTU (default: the network\'s `bridge.mtu`, or the parent\'s; `p2p`, `routed` without parent: 1500).' },
      'queue.tx.length': { form: 'integer', condition: 'both', nictypes: ['bridged', 'p2p', 'routed'], description: 'Transmit queue length of the host end.' },
      'limits.ingress': { form: 'string', condition: 'both', nictypes: LIMITED, description: 'Rate limit of what comes in to the instance (`100Mbit`, `1Gbit`…): an htb class on the host end.' },
      'limits.egress': { form: 'string', condition: 'both', nictypes: LIMITED, description: 'Rate limit of what the instance sends: redirected from the host end\'s ingress to an ifb link of lxq\'s own and shaped there by htb (NotSupported where the kernel has no ifb link or tc mirred action).' },
      'limits.max': { form: 'string', condition: 'both', nictypes: LIMITED, description: 'Both `limits.ingress` and `limits.egress` (instead of them).' },
      'security.mac_filtering': { form: 'boolean', condition: 'both', default: 'false', nictypes: ['bridged'], description: 'Drop what the instance sends with another source MAC than `hwaddr` (nftables rules of lxq\'s own on the host end, as LXD\'s).' },
      'security.ipv4_filtering': {
        form: 'boolean',
        condition: 'both',
        default: 'false',
        nictypes: ['bridged'],
        description: 'Drop IPv4 and ARP the instance sends from another address than its static `ipv4.address` (required); DHCP still passes. Implies MAC filtering.',
      },
      'security.ipv6_filtering': {
        form: 'boolean',
        condition: 'both',
        default: 'false',
        nictypes: ['bridged'],
        description: 'Drop IPv6 and NDP the instance sends from another address than its static `ipv6.address` (required), and its router advertisements; DHCPv6 and router solicitations still pass. Implies MAC filtering.',
      },
      vlan: { form: 'integer', condition: 'both', nictypes: ['bridged', 'macvlan', 'physical', 'ipvlan', 'routed'], description: '802.1Q VLAN id (refused where the kernel has no 802.1Q links).' },
      mode: { form: 'enum', condition: 'container', values: ['l2', 'l3s'], default: 'l3s', nictypes: ['ipvlan'], description: 'The ipvlan mode.' },
    },
  },
  proxy: {
    condition: 'both',
    live: true,
    description:
      'Forwards connections between the host and the instance (`bind: host`: the host listens and the connection is made inside; ' +
      '`bind: instance`: the reverse), served by lxq\'s proxy process (one per running instance, detached: it outlives the Node ' +
      'program that started the instance and ends with its stop). Containers: sockets ' +
      'inside are made in their network namespace; VMs: the guest is reached at its address on an lxq network.',
    keys: {
      listen: { form: 'string', condition: 'both', description: 'Where to listen: `tcp:<address>:<ports>`, `udp:<address>:<ports>` (ports: `80`, `8000-8010` or a list of both) or `unix:<path>` / `unix:@<abstract name>`.' },
      connect: {
        form: 'string',
        condition: 'both',
        description: 'Where to connect: `tcp:<address>:<ports>`, `udp:<address>:<ports>` (one port, or as many as `listen`; a VM: 127.0.0.1 is the guest\'s address) or `unix:<path>` / `unix:@<name>` (not inside a VM). udp goes to udp only.',
      },
      bind: { form: 'enum', condition: 'both', values: ['host', 'instance', 'guest', 'container'], default: 'host', description: 'Which side listens: `host` or `instance` (containers; `guest`, `container` are LXD\'s aliases).' },
      nat: { form: 'boolean', condition: 'both', default: 'false', description: 'Forward with nftables DNAT rules (a table of lxq\'s own per running instance) instead of a process: tcp or udp from a host address (not a loopback one) to one of the instance\'s static addresses (`ipv4.address`/`ipv6.address` of a bridged or routed NIC; `0.0.0.0`/`::` takes the first). Turns the host\'s forwarding of the listen address\'s family on, as LXD\'s bridges do (IPv6 forwarding stops the host from taking router advertisements on links with `accept_ra` 1).' },
      proxy_protocol: { form: 'boolean', condition: 'both', default: 'false', description: 'Send a PROXY protocol (v1) line with the client\'s address before its bytes, to a tcp `connect` (as LXD\'s forkproxy).' },
      'security.uid': { form: 'integer', condition: 'both', default: '0', description: 'The user id the connections to `connect` are made as (on the connecting side: inside a container for `bind: host`).' },
      'security.gid': { form: 'integer', condition: 'both', default: '0', description: 'The group id the connections to `connect` are made as.' },
      uid: { form: 'integer', condition: 'both', default: '0', description: 'The owner of a listening unix socket path (on the listening side).' },
      gid: { form: 'integer', condition: 'both', default: '0', description: 'The group of a listening unix socket path.' },
      mode: { form: 'string', condition: 'both', default: '0644', description: 'The mode of a listening unix socket path (octal).' },
    },
  },
  'unix-char': {
    condition: 'container',
    live: true,
    description: 'A character device node inside the container (e.g. /dev/fuse), allowed in its devices cgroup.',
    keys: UNIX_KEYS,
  },
  'unix-block': {
    condition: 'container',
    live: true,
    description: 'A block device node inside the container, allowed in its devices cgroup.',
    keys: UNIX_KEYS,
  },
  'unix-hotplug': {
    condition: 'container',
    live: true,
    description:
      'Host device nodes matched by `vendorid`, `productid` and `subsystem` (LXD\'s match), made in the container\'s /dev at their host name, and allowed in its devices cgroup, ' +
      'as they appear (the kernel\'s uevents, read without udevd) and removed as they go, while the container runs; served by the instance\'s device process (as proxies are). ' +
      'Ids are the nearest USB device\'s above the node in sysfs; a node with none matches no `vendorid` at start and is 0000:0000 when it appears later (as LXD pads udev\'s). USB nodes are the `usb` type\'s: never matched.',
    keys: {
      vendorid: { form: 'string', condition: 'container', description: 'Vendor id to match: four lower-case hex digits.' },
      productid: { form: 'string', condition: 'container', description: 'Product id to match: four lower-case hex digits.' },
      subsystem: { form: 'string', condition: 'container', description: 'Kernel subsystem to match (`block`, `tty`, `input`…); a node\'s is block for block nodes, else its class.' },
      uid: UNIX_KEYS.uid,
      gid: UNIX_KEYS.gid,
      mode: UNIX_KEYS.mode,
      required: { form: 'boolean', condition: 'container', default: 'false', description: 'Refuse the start (and the device\'s addition) when no node matches.' },
      'ownership.inherit': { form: 'boolean', condition: 'container', default: 'false', description: 'The nodes get the host node\'s owner and group (as ids inside) instead of `uid`/`gid`.' },
    },
  },
  gpu: {
    condition: 'both',
    live: false,
    description:
      'LXD\'s GPU passthrough, declared and checked: `physical` (containers and VMs), `mdev` and `sriov` (VMs), `mig` (containers). lxq looks for the GPU ' +
      '(DRM cards in /sys/class/drm and their PCI devices) and refuses with NotSupported naming what it looked for; the passthrough itself is not written.',
    keys: {
      gputype: { form: 'enum', condition: 'both', values: GPU_TYPES, default: 'physical', description: 'The kind of GPU device.' },
      vendorid: { form: 'string', condition: 'both', description: 'Vendor id of the GPU (four lower-case hex digits).' },
      productid: { form: 'string', condition: 'both', description: 'Product id of the GPU (four lower-case hex digits).' },
      id: { form: 'string', condition: 'both', description: 'The DRM card id (a number) of the GPU.' },
      pci: { form: 'string', condition: 'both', description: 'The PCI address of the GPU (`0000:01:00.0` or `01:00.0`).' },
      uid: { ...UNIX_KEYS.uid, gputypes: ['physical'] },
      gid: { ...UNIX_KEYS.gid, gputypes: ['physical'] },
      mode: { ...UNIX_KEYS.mode, gputypes: ['physical'] },
      mdev: { form: 'string', condition: 'vm', gputypes: ['mdev'], description: 'The mdev profile (e.g. `i915-GVTg_V5_4`): required.' },
      'mig.ci': { form: 'integer', condition: 'container', gputypes: ['mig'], description: 'Existing MIG compute instance id.' },
      'mig.gi': { form: 'integer', condition: 'container', gputypes: ['mig'], description: 'Existing MIG GPU instance id.' },
      'mig.uuid': { form: 'string', condition: 'container', gputypes: ['mig'], description: 'Existing MIG device UUID (instead of `mig.ci` and `mig.gi`).' },
    },
  },
  usb: {
    condition: 'both',
    live: false,
    description:
      'LXD\'s USB passthrough, declared and checked: lxq looks for a USB device matching the keys under /sys/bus/usb/devices and refuses with NotSupported naming ' +
      'what it looked for (the bus itself where the host has none); the passthrough itself is not written.',
    keys: {
      vendorid: { form: 'string', condition: 'both', description: 'Vendor id of the USB device (four lower-case hex digits).' },
      productid: { form: 'string', condition: 'both', description: 'Product id of the USB device (four lower-case hex digits).' },
      serial: { form: 'string', condition: 'both', description: 'Serial number of the USB device.' },
      busnum: { form: 'integer', condition: 'both', description: 'Bus number the USB device is on.' },
      devnum: { form: 'integer', condition: 'both', description: 'Device number on its bus.' },
      uid: UNIX_KEYS.uid,
      gid: UNIX_KEYS.gid,
      mode: UNIX_KEYS.mode,
      required: { form: 'boolean', condition: 'both', default: 'false', description: 'LXD: refuse the start when the device is absent.' },
    },
  },
  pci: {
    condition: 'vm',
    live: false,
    description:
      'LXD\'s PCI passthrough (VMs), declared and checked: lxq looks for the address under /sys/bus/pci/devices and its IOMMU group (vfio-pci needs one) and refuses ' +
      'with NotSupported naming what it looked for; the passthrough itself is not written.',
    keys: {
      address: { form: 'string', condition: 'vm', description: 'PCI address of the device (`0000:01:00.0` or `01:00.0`): required.' },
    },
  },
  infiniband: {
    condition: 'both',
    live: false,
    description:
      'LXD\'s InfiniBand NICs, declared and checked: lxq looks for the `parent` InfiniBand link (/sys/class/net, of type InfiniBand) and the host\'s InfiniBand devices ' +
      '(/sys/class/infiniband) and refuses with NotSupported naming what it looked for; the NIC itself is not written.',
    keys: {
      nictype: { form: 'enum', condition: 'both', values: ['physical', 'sriov'], description: 'The kind of InfiniBand NIC: required.' },
      parent: { form: 'string', condition: 'both', description: 'The host\'s InfiniBand link: required.' },
      name: { form: 'string', condition: 'both', description: 'The interface name inside the instance (LXD requires it for a container).' },
      hwaddr: { form: 'string', condition: 'both', description: 'MAC address: 20 bytes, or the last 8 bytes of the parent\'s, hex separated by colons.' },
      mtu: { form: 'integer', condition: 'both', description: 'MTU of the new interface (default: the parent\'s).' },
    },
  },
  tpm: {
    condition: 'both',
    live: false,
    description:
      'A TPM 2.0 (at most one per instance). VMs: a `tpm-crb` device backed by Debian\'s `swtpm`, started beside QEMU and ended with it; ' +
      'its state is kept with the VM (`<vm>/tpm/`) and carried by snapshots, copies and exports. Containers: need the host kernel\'s vTPM ' +
      'proxy (`/dev/vtpmx`, CONFIG_TCG_VTPM_PROXY), refused with NotSupported where it is missing.',
    keys: {
      path: { form: 'path', condition: 'container', description: 'Where the TPM\'s node is made inside the container (e.g. /dev/tpm0).' },
      pathrm: { form: 'path', condition: 'container', description: 'Where the TPM resource manager\'s node is made inside the container (e.g. /dev/tpmrm0).' },
    },
  },
} as const satisfies Record<string, DeviceTypeSpec>;

/**
 * A device type: 'disk', 'nic', 'proxy', 'unix-char', 'unix-block', 'unix-hotplug', 'gpu', 'usb', 'pci', 'infiniband' or 'tpm' (LXD's names).
 *
 * @example
 * ```ts
 * const disks = Object.entries(c.devices).filter(([, d]) => d.type === ('disk' satisfies DeviceType));
 * ```
 */
export type DeviceType = keyof typeof DEVICE_TYPES;

/**
 * A device key's value as users may write it: the string form, or a number/boolean stored as its string.
 *
 * @example
 * ```ts
 * const readonly: DeviceKeyInput<(typeof DEVICE_TYPES)['disk']['keys']['readonly']> = true; // stored as 'true'
 * ```
 */
export type DeviceKeyInput<K> = K extends { form: 'boolean' }
  ? 'true' | 'false' | boolean
  : K extends { form: 'integer' }
    ? string | number
    : K extends { form: 'enum'; values: readonly (infer V)[] }
      ? V
      : string;

/**
 * A device as users write it, typed per device type: `{ type: 'disk', source: '/srv', path: '/srv' }`.
 *
 * @example
 * ```ts
 * const data: DeviceInput = { type: 'disk', source: '/srv/data', path: '/data', readonly: true };
 * await c.addDevice('data', data);
 * ```
 */
export type DeviceInput = {
  [T in DeviceType]: { type: T } & { -readonly [K in keyof (typeof DEVICE_TYPES)[T]['keys']]?: DeviceKeyInput<(typeof DEVICE_TYPES)[T]['keys'][K]> };
}[DeviceType];
export type DiskDevice = Extract<DeviceInput, { type: 'disk' }>;
export type UnixCharDevice = Extract<DeviceInput, { type: 'unix-char' }>;
export type NicDevice = Extract<DeviceInput, { type: 'nic' }>;
export type ProxyDevice = Extract<DeviceInput, { type: 'proxy' }>;
export type UnixBlockDevice = Extract<DeviceInput, { type: 'unix-block' }>;
export type TpmDevice = Extract<DeviceInput, { type: 'tpm' }>;
export type UnixHotplugDevice = Extract<DeviceInput, { type: 'unix-hotplug' }>;

/**
 * A device as stored: every value a string, as in LXD.
 *
 * @example
 * ```ts
 * const data: Readonly<DeviceConfig> = c.devices['data'];
 * console.log(data.type, data.source, data.readonly); // 'disk' '/srv/data' 'true'
 * ```
 */
export type DeviceConfig = { type: DeviceType } & Record<string, string>;
/**
 * The instance's devices by name, as stored in its record.
 *
 * @example
 * ```ts
 * const devices: Readonly<Devices> = c.devices;
 * for (const [name, d] of Object.entries(devices)) console.log(name, d.type);
 * ```
 */
export type Devices = Record<string, DeviceConfig>;
/**
 * Devices by name as `create` takes them.
 *
 * @example
 * ```ts
 * const devices: DevicesInput = { data: { type: 'disk', source: '/srv/data', path: '/data' }, eth0: { type: 'nic', network: 'lxqbr0' } };
 * await host.create('web1', { image: 'busybox', devices });
 * ```
 */
export type DevicesInput = Record<string, DeviceInput>;
/**
 * A change of a device: a value sets the key, `null` removes it; the type cannot change.
 *
 * @example
 * ```ts
 * await c.updateDevice('data', { readonly: true, required: null });
 * ```
 */
export type DevicePatch = Record<string, string | number | boolean | null>;

/** A device's key with its default applied. */
export function deviceValue(device: DeviceConfig, key: string): string | undefined {
  return device[key] ?? (DEVICE_TYPES[device.type].keys as Record<string, DeviceKeySpec>)[key]?.default;
}

/** True when a boolean key is "true" (after its default). */
export function deviceFlag(device: DeviceConfig, key: string): boolean {
  return deviceValue(device, key) === 'true';
}

/** A Markdown table of the device types and their keys, for the README. */
export function describeDevices(): string {
  const rows: string[] = [];
  for (const [type, spec] of Object.entries(DEVICE_TYPES) as [DeviceType, DeviceTypeSpec][]) {
    rows.push(`| **\`${type}\`** | | ${spec.condition} | ${spec.live ? 'yes' : 'next start'} | | ${spec.description} |`);
    for (const [key, k] of Object.entries(spec.keys)) {
      const form = k.form === 'enum' ? (k.values ?? []).map((v) => `\`${v}\``).join(' \\| ') : k.form;
      const subtypes = k.nictypes ?? k.gputypes;
      const only = subtypes ? ` (${subtypes.map((n) => `\`${n}\``).join(', ')})` : '';
      rows.push(`| | \`${key}\` | ${k.condition}${only} | | ${k.default ?? ''} | ${form}: ${k.description} |`);
    }
  }
  return ['| type | key | applies to | hot-plug | default | description |', '|---|---|---|---|---|---|', ...rows].join('\n');
}
