/** LXD's miscellaneous group (environment, user metadata, the VM agent) and lxq's own vm.* keys. */
import { NotSupported } from '../../core/errors';
import { parseBoolean } from '../../core/units';
import type { OptionSpec } from './spec';

export const MISC_OPTIONS: readonly OptionSpec[] = [
  {
    key: 'environment.*',
    type: 'string',
    condition: 'both',
    live: false,
    description: 'Environment variables for the instance\'s processes ("environment.GREETING": "hi").',
  },
  {
    key: 'user.*',
    type: 'string',
    condition: 'both',
    live: true,
    description: 'Free-form user metadata, stored with the instance and never interpreted (but for `user.user-data`, `user.vendor-data`, `user.network-config`: cloud-init\'s, above).',
  },
  {
    key: 'agent.nic_config',
    type: 'boolean',
    condition: 'vm',
    live: false,
    default: 'false',
    description:
      "LXD's key: when true, lxq's guest agent names each NIC's interface in the guest as the device says (its `name`, else the device's name) " +
      'and sets its MTU, at each start and when a NIC is plugged (as a container\'s are). Off: the guest names them (enp5s0…). Needs an image with the lxq agent.',
    validate: (v) => void parseBoolean(v),
  },
  {
    key: 'ubuntu_pro.guest_attach',
    type: 'enum',
    condition: 'both',
    live: true,
    default: 'off',
    description:
      'Ubuntu Pro guest attachment ("off", "available", "on"): LXD hands the host\'s Pro token to the guest through /dev/lxd. lxq has no /dev/lxd, so only "off" is accepted; the others are refused (NotSupported).',
    validate: (v) => {
      if (!['off', 'available', 'on'].includes(v)) throw new Error(`expected "off", "available" or "on", got ${JSON.stringify(v)}`);
      if (v !== 'off') throw new NotSupported(`"ubuntu_pro.guest_attach": lxq has no daemon to serve /dev/lxd, through which LXD attaches a guest to Ubuntu Pro`);
    },
  },
  {
    key: 'vm.accel',
    type: 'enum',
    condition: 'vm',
    live: false,
    default: 'auto',
    description: 'Accelerator: "auto" (KVM when it really works on this host, else TCG), "kvm" or "tcg".',
    validate: (v) => {
      if (!['auto', 'kvm', 'tcg'].includes(v)) throw new Error(`expected "auto", "kvm" or "tcg", got ${JSON.stringify(v)}`);
    },
  },
  {
    key: 'vm.saved_boot',
    type: 'boolean',
    condition: 'vm',
    live: false,
    default: 'false',
    description:
      "lxq's: the VM's first start loads its image's saved boot (a VM of the same shape booted once and saved, made at the first such start) " +
      'instead of booting, and the lxq agent renews the identity (machine id, hostname, clock, random pool, MACs). Only for a VM whose devices are its root disk ' +
      'and bridged NICs without host-side options (its QEMU command line must be the saved one\'s, MACs and taps aside); any other start boots cold. `state().boot` says which happened.',
    validate: (v) => void parseBoolean(v),
  },
];
