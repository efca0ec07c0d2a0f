/**
 * The QMP commands this client knows the shape of (those lxq sends, after QEMU's QAPI schema,
 * qapi/*.json of QEMU 7.2): `QmpClient.execute` checks their arguments and types their results.
 * Any other command is still sent as is, its result untyped. The results list the members a
 * caller is likely to read; QEMU sends more than is listed.
 */

/**
 * A QEMU version as QMP reports it.
 *
 * @example
 * ```ts
 * const v: QmpVersionInfo = qmp.version!;
 * console.log(`${v.qemu.major}.${v.qemu.minor}`);
 * ```
 */
export interface QmpVersionInfo {
  qemu: { major: number; minor: number; micro: number };
  package: string;
}

/**
 * Result of `query-status`.
 *
 * @example
 * ```ts
 * const s: QmpStatusInfo = await qmp.execute('query-status');
 * console.log(s.status, s.running);
 * ```
 */
export interface QmpStatusInfo {
  status: string;
  running: boolean;
  singlestep?: boolean;
}

/**
 * One PCI device of `query-pci`, with the devices behind it when it is a bridge or a root port.
 *
 * @example
 * ```ts
 * const buses = await qmp.execute('query-pci');
 * const ids: string[] = buses.flatMap((b) => b.devices.map((d: QmpPciDeviceInfo) => d.qdev_id));
 * ```
 */
export interface QmpPciDeviceInfo {
  bus: number;
  slot: number;
  function: number;
  /** The `id` it was created with ('' when it had none). */
  qdev_id: string;
  class_info: { class: number; desc?: string };
  id: { device: number; vendor: number; subsystem?: number; 'subsystem-vendor'?: number };
  /** A bridge's (or a PCIe root port's) bus and what is plugged into it. */
  pci_bridge?: { bus: { number: number; secondary: number; subordinate: number }; devices?: QmpPciDeviceInfo[] };
}

/**
 * The commands `execute` types: for each, its `args` (`undefined` when it takes none) and what
 * it `returns` (`{}` when it answers only that it was done). Arguments of the open-ended commands (`device_add`, `netdev_add`, `blockdev-add`)
 * are a driver or type and that driver's own properties.
 *
 * @example
 * ```ts
 * const args: QmpCommands['device_del']['args'] = { id: 'dev-disk1' };
 * await qmp.execute('device_del', args);
 * const status: QmpCommands['query-status']['returns'] = await qmp.execute('query-status');
 * ```
 */
export interface QmpCommands {
  qmp_capabilities: { args: { enable?: Array<'oob'> } | undefined; returns: Record<string, never> };
  'query-status': { args: undefined; returns: QmpStatusInfo };
  'query-version': { args: undefined; returns: QmpVersionInfo };
  'query-name': { args: undefined; returns: { name?: string } };
  stop: { args: undefined; returns: Record<string, never> };
  cont: { args: undefined; returns: Record<string, never> };
  /** Presses the ACPI power button: the guest decides what to do. */
  system_powerdown: { args: undefined; returns: Record<string, never> };
  /** QEMU answers, then exits. */
  quit: { args: undefined; returns: Record<string, never> };
  'query-pci': { args: undefined; returns: Array<{ bus: number; devices: QmpPciDeviceInfo[] }> };
  'query-cpus-fast': { args: undefined; returns: Array<{ 'cpu-index': number; 'qom-path': string; 'thread-id': number; target: string }> };
  /** I/O counters of each block device: `device` names a -drive's (`virtio0`), `qdev` the guest device's id or QOM path. */
  'query-blockstats': {
    args: undefined;
    returns: Array<{ device: string; qdev?: string; 'node-name'?: string; stats: { rd_bytes: number; wr_bytes: number; rd_operations: number; wr_operations: number } }>;
  };
  'query-memory-size-summary': { args: undefined; returns: { 'base-memory': number; 'plugged-memory'?: number } };
  'qom-list': { args: { path: string }; returns: Array<{ name: string; type: string; description?: string }> };
  device_add: { args: { driver: string; id?: string; bus?: string; [property: string]: unknown }; returns: Record<string, never> };
  /** The guest is asked to release the device; DEVICE_DELETED tells when it did. */
  device_del: { args: { id: string }; returns: Record<string, never> };
  netdev_add: { args: { type: string; id: string; [property: string]: unknown }; returns: Record<string, never> };
  netdev_del: { args: { id: string }; returns: Record<string, never> };
  'chardev-add': { args: { id: string; backend: { type: string; data: Record<string, unknown> } }; returns: { pty?: string } };
  'chardev-remove': { args: { id: string }; returns: Record<string, never> };
  'blockdev-add': { args: { driver: string; 'node-name'?: string; 'read-only'?: boolean; [property: string]: unknown }; returns: Record<string, never> };
  'blockdev-del': { args: { 'node-name': string }; returns: Record<string, never> };
  'blockdev-snapshot-internal-sync': { args: { device: string; name: string }; returns: Record<string, never> };
  'blockdev-backup': {
    args: {
      'job-id'?: string;
      device: string;
      target: string;
      sync: 'top' | 'full' | 'none' | 'incremental' | 'bitmap';
      speed?: number;
      'auto-finalize'?: boolean;
      'auto-dismiss'?: boolean;
    };
    returns: Record<string, never>;
  };
  /** A job (QEMU 6.0+): the VM's state into `vmstate`'s qcow2, and a snapshot of each of `devices`. */
  'snapshot-save': { args: { 'job-id': string; tag: string; vmstate: string; devices: string[] }; returns: Record<string, never> };
  'snapshot-load': { args: { 'job-id': string; tag: string; vmstate: string; devices: string[] }; returns: Record<string, never> };
  'snapshot-delete': { args: { 'job-id': string; tag: string; devices: string[] }; returns: Record<string, never> };
  'query-jobs': {
    args: undefined;
    returns: Array<{ id: string; type: string; status: string; 'current-progress': number; 'total-progress': number; error?: string }>;
  };
  'job-dismiss': { args: { id: string }; returns: Record<string, never> };
  'job-cancel': { args: { id: string }; returns: Record<string, never> };
  'query-block-jobs': {
    args: undefined;
    returns: Array<{ type: string; device: string; len: number; offset: number; busy: boolean; paused: boolean; speed: number; ready: boolean; status: string; error?: string }>;
  };
  'query-block': {
    args: undefined;
    returns: Array<{
      device: string;
      qdev?: string;
      type: string;
      removable: boolean;
      locked: boolean;
      inserted?: {
        file: string;
        'node-name'?: string;
        ro: boolean;
        drv: string;
        backing_file?: string;
        /** I/O throttling: bytes and operations per second, 0 for none. */
        bps_rd?: number;
        bps_wr?: number;
        iops_rd?: number;
        iops_wr?: number;
        cache?: { writeback: boolean; direct: boolean; 'no-flush': boolean };
      };
    }>;
  };
  /** Every named block node (attached to a device or not): its image file, format and read-only flag. */
  'query-named-block-nodes': {
    args: { flat?: boolean } | undefined;
    returns: Array<{ 'node-name': string; file: string; ro: boolean; drv: string }>;
  };
  /** Sets a block device's I/O limits (all six numbers; 0 is none). */
  block_set_io_throttle: { args: { id: string; bps: number; bps_rd: number; bps_wr: number; iops: number; iops_rd: number; iops_wr: number }; returns: Record<string, never> };
}
