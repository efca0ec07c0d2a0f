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
];
