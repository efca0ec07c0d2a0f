/** LXD's boot group: boot.* options. */
import type { OptionSpec } from './spec';

const NO_UEFI = 'lxq boots VMs with QEMU\'s direct kernel boot and this host has no UEFI firmware (OVMF/edk2)';

export const BOOT_OPTIONS: readonly OptionSpec[] = [
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
];
