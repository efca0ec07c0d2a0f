/**
 * A container read and driven by name without its ContainerInstance, through the driver's own
 * calls (status.ts, streams.ts' attachCommand): for the CLI's quick path (lib/host/quick.ts),
 * which loads this instead of the driver and its ~60 modules, and of this only what the command
 * uses (`list` the status, `exec` the hand-over: BENCHMARKS.md, "CLI start-up").
 */
import type { InstanceStatus } from '../../instance/instance';
import type { InstanceProcess, SpawnOptions } from '../../instance/process';

// eslint-disable-next-line @typescript-eslint/no-require-imports -- loaded by the command that uses it (see above)
const liblxc = (): typeof import('../../native/lxc') => require('../../native/lxc');

/** The status of the container `name` of `lxcpath`, as ContainerInstance.status() reads it. */
export async function quickStatus(lxcpath: string, name: string): Promise<InstanceStatus> {
  // eslint-disable-next-line @typescript-eslint/no-require-imports -- see above
  const { containerStatus } = require('./status') as typeof import('./status');
  const h = new (liblxc().lxc().Container)(name, lxcpath);
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
  const h = new (liblxc().lxc().Container)(name, lxcpath);
  try {
    return await attachCommand(h, config, argv, options, (e) => Promise.reject(e));
  } finally {
    h.release();
  }
}

/**
 * Runs `argv` as quickSpawn would, in place of this process (sys' handOver: lxq_runner attaches it
 * on this process's fds 0-2 and exits with its status; `fallback` runs if the container refuses
 * it). Returns false, nothing done, if one of fds 0-2 is a terminal; throws (nothing done) on bad
 * options or if the runner cannot be run.
 */
export function quickHandOver(lxcpath: string, name: string, config: Readonly<Record<string, string>>, argv: string[], options: SpawnOptions, fallback: string[]): false {
  // eslint-disable-next-line @typescript-eslint/no-require-imports -- see above
  const { checkSpawn, instanceEnvironment } = require('../../instance/process') as typeof import('../../instance/process');
  const env = checkSpawn(argv, options, instanceEnvironment(config));
  const uid = options.user ?? 0;
  // eslint-disable-next-line @typescript-eslint/no-require-imports -- see above
  const { helperPath, sys } = require('../../native/sys') as typeof import('../../native/sys');
  return sys().handOver(helperPath('lxq_runner'), fallback, name, lxcpath, argv, env, options.cwd ?? '', uid, options.group ?? uid);
}
