/** LXD's security group: security.* options. */
import { parseBoolean } from '../../core/units';
import type { OptionSpec } from './spec';

export const SECURITY_OPTIONS: readonly OptionSpec[] = [
  {
    key: 'security.privileged',
    type: 'boolean',
    condition: 'container',
    live: false,
    default: 'false',
    description: 'Run the container without a user namespace (root inside is root outside). Off by default.',
    validate: (v) => void parseBoolean(v),
  },
  {
    key: 'security.protection.delete',
    type: 'boolean',
    condition: 'both',
    live: true,
    default: 'false',
    description: "When true, delete() is refused (PermissionDenied naming the key), even with force; snapshots can still be deleted and an ephemeral instance still goes at its stop (as LXD).",
    validate: (v) => void parseBoolean(v),
  },
  {
    key: 'security.protection.start',
    type: 'boolean',
    condition: 'both',
    live: true,
    default: 'false',
    description: 'When true, start() and restart() are refused (PermissionDenied naming the key; a running instance is left running) and autostart skips the instance (as LXD).',
    validate: (v) => void parseBoolean(v),
  },
];
