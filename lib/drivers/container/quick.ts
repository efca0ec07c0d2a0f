/**
 * A container read and driven by name without its ContainerInstance, through the driver's own
 * calls (status.ts, streams.ts' attachCommand): for the CLI's quick path (lib/host/quick.ts),
 * which loads this instead of the driver and its ~60 modules.
 */
import type { InstanceStatus } from '../../instance/instance';
import type { InstanceProcess, SpawnOptions } from '../../instance/process';
import { lxc } from '../../native/lxc';
import { containerStatus } from './status';

/** The status of the container `name` of `lxcpath`, as ContainerInstance.status() reads it. */
export async function quickStatus(lxcpath: string, name: string): Promise<InstanceStatus> {
  const h = new (lxc().Container)(name, lxcpath);
  try {
    return await containerStatus(h);
  } finally {
    h.release();
  }
}

/** ContainerInstance.spawn's command, with the runner's refusal (a container not running) as it comes. */
export async function quickSpawn(lxcpath: string, name: string, config: Readonly<Record<string, string>>, argv: string[], options: SpawnOptions): Promise<InstanceProcess> {
  // Streams (net, tty) only for a command: `lxq list` never loads them.
  // eslint-disable-next-line @typescript-eslint/no-require-imports -- see above
  const { attachCommand } = require('./streams') as typeof import('./streams');
  const h = new (lxc().Container)(name, lxcpath);
  try {
    return await attachCommand(h, config, argv, options, (e) => Promise.reject(e));
  } finally {
    h.release();
  }
}
