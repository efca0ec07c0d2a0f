/** LXD's resource-limits group: limits.* options. */
import * as os from 'node:os';

import { parseCpus, parseMemory, parsePositiveInteger } from '../../core/units';
import type { OptionSpec } from './spec';

/** The smallest memory limit each type can boot with. */
export const MEMORY_FLOOR = { container: 4 * 2 ** 20, vm: 64 * 2 ** 20 };

function memoryValidator(value: string): void {
  parseMemory(value, os.totalmem());
}

export const LIMITS_OPTIONS: readonly OptionSpec[] = [
  {
    key: 'limits.cpu',
    type: 'cpus',
    condition: 'both',
    live: 'container',
    description: 'CPUs: a count ("2") or, for containers, a CPU set ("0-1,3"). For VMs, the number of vCPUs.',
    validate: (v) => void parseCpus(v, os.cpus().length),
  },
  {
    key: 'limits.memory',
    type: 'size',
    condition: 'both',
    live: 'container',
    description: 'Memory limit: a size ("256MiB", "1GiB") or a percentage of host memory ("50%").',
    validate: memoryValidator,
  },
  {
    key: 'limits.processes',
    type: 'integer',
    condition: 'container',
    live: true,
    description: 'Maximum number of processes in the container (pids cgroup).',
    validate: (v) => void parsePositiveInteger(v),
  },
];
