/** LXD's snapshots group: snapshots.* options (lib/core/schedule.ts reads their forms; lib/host/scheduler.ts runs them). */
import { expiryFrom, parseSchedule, renderPattern } from '../../core/schedule';
import { parseBoolean } from '../../core/units';
import type { OptionSpec } from './spec';

const RUN_BY = 'Run by a process that holds the host with `Host.open({ scheduler: true })`, such as `lxq autostart start --serve` (the unit of `lxq system install`)';

export const SNAPSHOTS_OPTIONS: readonly OptionSpec[] = [
  {
    key: 'snapshots.expiry',
    type: 'string',
    condition: 'both',
    live: true,
    description: 'How long a snapshot is kept ("1M 2H 3d 4w 5m 6y": minutes, hours, days, weeks, months, years), given to every snapshot made without its own `expiresAt`; expired snapshots are deleted by the scheduler and at any snapshot operation.',
    validate: (v) => void expiryFrom(new Date(), v),
  },
  {
    key: 'snapshots.pattern',
    type: 'string',
    condition: 'both',
    live: true,
    default: 'snap%d',
    description: 'Name of scheduled and unnamed snapshots: `%d` the next index, `{{ creation_date|date:"2006-01-02_15-04" }}` the time in Go\'s layout (the one pongo2 form rendered); an existing name without `%d` gets `-0`, `-1`…',
    validate: (v) => {
      const name = renderPattern(v, new Date()).replace('%d', '0');
      if (!name || name.includes('/')) throw new Error(`renders to ${JSON.stringify(name)}: a snapshot name must be non-empty, without "/"`);
    },
  },
  {
    key: 'snapshots.schedule',
    type: 'string',
    condition: 'both',
    live: true,
    description: `When to snapshot: cron ("*/30 * * * *"), or @hourly, @daily, @midnight, @weekly, @monthly, @annually, @yearly, @never, several joined by ", " (local time; @startup refused). ${RUN_BY}.`,
    validate: (v) => void parseSchedule(v),
  },
  {
    key: 'snapshots.schedule.stopped',
    type: 'boolean',
    condition: 'both',
    live: true,
    default: 'false',
    description: 'Whether a stopped instance is snapshotted on schedule too.',
    validate: (v) => void parseBoolean(v),
  },
];
