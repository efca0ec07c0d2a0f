/**
 * LXD's migration group: migration.* options. lxq moves instances between hosts by export and
 * import (stopped), not live: CRIU's iterative memory pre-copy is refused where `criu check`
 * fails (quoted), and a VM's state travels in its stateful snapshots.
 */
import { NotSupported } from '../../core/errors';
import { criuCheckFailure } from '../../core/proc';
import { parseBoolean } from '../../core/units';
import type { OptionSpec } from './spec';

/** Why a container's live migration cannot be: CRIU's own words where it fails, else lxq's lack. */
function noLiveMigration(key: string): NotSupported {
  const criu = criuCheckFailure();
  return new NotSupported(
    criu
      ? `"${key}": live migration of containers needs CRIU, and "criu check" fails on this host: ${criu}`
      : `"${key}": lxq has no live migration of containers (CRIU pre-copy through liblxc is not implemented); criu check passes on this host`,
  );
}

export const MIGRATION_OPTIONS: readonly OptionSpec[] = [
  {
    key: 'migration.incremental.memory',
    type: 'boolean',
    condition: 'container',
    live: true,
    default: 'false',
    description: 'Live migration with iterative memory pre-copy (CRIU): refused when true, quoting why CRIU cannot work here.',
    validate: (v) => {
      if (parseBoolean(v)) throw noLiveMigration('migration.incremental.memory');
    },
  },
  ...['goal', 'iterations'].map(
    (k): OptionSpec => ({
      key: `migration.incremental.memory.${k}`,
      type: 'integer',
      condition: 'container',
      live: true,
      default: k === 'goal' ? '70' : '10',
      description: `Tunes migration.incremental.memory (${k === 'goal' ? 'percent of memory to have synced' : 'pre-copy rounds at most'}).`,
      notSupported: 'lxq has no live migration of containers (CRIU pre-copy; see migration.incremental.memory)',
    }),
  ),
  {
    key: 'migration.stateful',
    type: 'boolean',
    condition: 'vm',
    live: false,
    default: 'true',
    description:
      "Whether a running VM's snapshots keep its RAM and devices (QEMU's saved state; LXD's default is false, lxq's is true as before). False: a running VM's snapshots are stateless and { stateful: true } is refused.",
    validate: (v) => void parseBoolean(v),
  },
];
