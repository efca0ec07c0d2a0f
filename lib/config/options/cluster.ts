/**
 * LXD's keys for its cluster's scheduling (`cluster.evacuate` of its miscellaneous group, and its
 * placement group): they mean something only to an LXD cluster. A local host is no cluster
 * member, so lxq refuses them there (NotSupported); over an LXD server they are checked as LXD
 * checks them and passed on, the server deciding what they do.
 */
import type { OptionSpec } from './spec';

const NO_CLUSTER = 'a local host is no member of an LXD cluster';

/** LXD's evacuation modes (shared/api ClusterEvacuateMode*). */
const EVACUATE_MODES = ['auto', 'migrate', 'live-migrate', 'stop'];

export const CLUSTER_OPTIONS: readonly OptionSpec[] = [
  {
    key: 'cluster.evacuate',
    type: 'enum',
    condition: 'both',
    live: false,
    default: 'auto',
    description:
      'What an LXD cluster does with the instance when its member is evacuated ("auto", "migrate", "live-migrate", "stop"). ' +
      'Checked as LXD checks it and passed to an LXD server; refused on a local host (there is no cluster to evacuate it to).',
    localRefusal: `${NO_CLUSTER}: there is no other member to move the instance to when this one is evacuated`,
    validate: (v) => {
      if (!EVACUATE_MODES.includes(v)) throw new Error(`expected one of ${EVACUATE_MODES.map((m) => JSON.stringify(m)).join(', ')}, got ${JSON.stringify(v)}`);
    },
  },
  {
    key: 'placement.group',
    type: 'string',
    condition: 'both',
    live: true,
    description:
      "The LXD cluster's placement group (its spread or compact policy) that chooses the member the instance runs on. " +
      'Checked as LXD checks the name and passed to an LXD server (which must know the group); refused on a local host.',
    localRefusal: `${NO_CLUSTER}: there is only this host to place the instance on`,
    validate: (v) => {
      // LXD's IsDeviceName.
      if (v.length < 1 || v.length > 63) throw new Error('a placement group name is 1-63 characters long');
      if (v.startsWith('.')) throw new Error('a placement group name does not start with "."');
      if (!/^[/.\-:_a-zA-Z0-9]+$/.test(v)) throw new Error('a placement group name holds only letters, digits and / . - : _');
    },
  },
];
