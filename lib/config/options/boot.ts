/** LXD's boot group: boot.* options. */
import { parseBoolean } from '../../core/units';
import type { OptionSpec } from './spec';

/** An integer as LXD's validate.IsInt64 takes it (boot.* orders and delays), within `min`. */
function integer(min: number): (v: string) => void {
  return (v) => {
    if (!/^-?\d+$/.test(v) || !Number.isSafeInteger(Number(v))) throw new Error(`expected an integer, got ${JSON.stringify(v)}`);
    if (Number(v) < min) throw new Error(`expected at least ${min}, got ${v}`);
  };
}
const AUTOSTART = 'Run by `lxq autostart start` (`host.autostart()`), which `lxq system install` has systemd run at boot';
const SHUTDOWN = 'Run by `lxq autostart stop` (`host.shutdown()`), which `lxq system install` has systemd run at shutdown';

const NO_UEFI = 'lxq boots VMs with QEMU\'s direct kernel boot and this host has no UEFI firmware (OVMF/edk2)';

export const BOOT_OPTIONS: readonly OptionSpec[] = [
  {
    key: 'boot.autostart',
    type: 'boolean',
    condition: 'both',
    live: true,
    description: `true: always started at boot (unless security.protection.start); false: never; unset: started if it was running when the host last stopped. ${AUTOSTART}.`,
    validate: (v) => void parseBoolean(v),
  },
  {
    key: 'boot.autostart.delay',
    type: 'integer',
    condition: 'both',
    live: true,
    default: '0',
    description: `Seconds to wait after starting this instance before starting the next. ${AUTOSTART}.`,
    validate: integer(0),
  },
  {
    key: 'boot.autostart.priority',
    type: 'integer',
    condition: 'both',
    live: true,
    default: '0',
    description: `Start order: highest first, then by name. ${AUTOSTART}.`,
    validate: integer(Number.MIN_SAFE_INTEGER),
  },
  {
    key: 'boot.debug_edk2',
    type: 'boolean',
    condition: 'vm',
    lxdCondition: 'both',
    live: false,
    description: "LXD: boot the VM with edk2's debug firmware and keep its log.",
    notSupported: NO_UEFI,
  },
  {
    key: 'boot.mode',
    type: 'enum',
    condition: 'vm',
    live: false,
    default: 'uefi-secureboot',
    description: 'LXD: the firmware a VM boots with (uefi-secureboot, uefi-nosecureboot, bios).',
    notSupported: NO_UEFI,
  },
  {
    key: 'boot.host_shutdown_timeout',
    type: 'integer',
    condition: 'both',
    live: true,
    default: '30',
    description: `Seconds a clean shutdown of the instance may take at the host's shutdown before it is stopped by force (0: at once). ${SHUTDOWN}.`,
    validate: integer(0),
  },
  {
    key: 'boot.stop.priority',
    type: 'integer',
    condition: 'both',
    live: true,
    default: '0',
    description: `Shutdown order: highest first; instances of one priority are stopped together (at most one per CPU). ${SHUTDOWN}.`,
    validate: integer(Number.MIN_SAFE_INTEGER),
  },
];
