/**
 * How `list` and `info` show instances: the local host's (lxq's image, options and devices) or
 * an LXD server's (the cluster member an instance is on). The one place where the two hosts'
 * output differs.
 */
import type { Instance, InstanceState } from '../instance/instance';
import { type Format, formatRows } from './format';

/** What a row of `list` shows of an instance (the quick path's instances have no more: lib/host/quick.ts). */
export type Listed = Pick<Instance, 'name' | 'type' | 'ephemeral' | 'image' | 'createdAt' | 'status'>;

export interface InstanceView {
  /** The columns of `list` (table and CSV), also the keys of each row. */
  readonly columns: string[];
  row(i: Listed): Promise<Record<string, unknown>>;
  /** `info`: lines of `key: value`. */
  info(i: Instance): Promise<string[]>;
}

/** A remote instance's cluster member (LXD's `location`). */
const location = (i: Listed): string | undefined => (i as { location?: string }).location;

const MiB = 2 ** 20;

/** The type as LXD's `lxc list` shows it: `container (ephemeral)` for an ephemeral one. */
const typeOf = (i: Listed): string => (i.ephemeral ? `${i.type} (ephemeral)` : i.type);

/** The state lines both hosts show: status to cpu. */
function stateLines(s: InstanceState): string[] {
  return [`status: ${s.status}`, `pid: ${s.pid ?? '-'}`, `processes: ${s.processes}`, `cpu: ${(s.cpu.usageNs / 1e9).toFixed(2)} s`];
}

export const LOCAL_VIEW: InstanceView = {
  columns: ['name', 'type', 'status', 'image', 'created'],
  row: async (i) => ({ name: i.name, type: typeOf(i), status: await i.status(), image: i.image, created: i.createdAt.toISOString() }),
  async info(i) {
    const s = await i.state();
    const limit = s.memory.limitBytes ? ` of ${(s.memory.limitBytes / MiB).toFixed(0)} MiB` : '';
    return [
      `name: ${i.name}`,
      `type: ${typeOf(i)}`,
      `image: ${i.image}`,
      `created: ${i.createdAt.toISOString()}`,
      ...stateLines(s),
      `memory: ${s.memory.usageBytes === null ? 'unknown' : `${(s.memory.usageBytes / MiB).toFixed(1)} MiB`}${limit}`,
      `addresses: ${s.network.addresses.join(' ') || '-'}`,
      ...Object.entries(i.config).map(([k, v]) => `config ${k}: ${v}`),
      ...s.devices.map((d) => `device ${d.name}: ${d.type}${d.source ? ` ${d.source}` : ''}${d.path ? ` -> ${d.path}` : ''}`),
    ];
  },
};

export const REMOTE_VIEW: InstanceView = {
  columns: ['name', 'type', 'status', 'location', 'created'],
  row: async (i) => ({ name: i.name, type: typeOf(i), status: await i.status(), location: location(i) ?? '', created: i.createdAt.toISOString() }),
  async info(i) {
    const s = await i.state();
    return [
      `name: ${i.name}`,
      `type: ${typeOf(i)}`,
      `location: ${location(i) ?? '-'}`,
      `created: ${i.createdAt.toISOString()}`,
      ...stateLines(s),
      `memory: ${s.memory.usageBytes === null ? 'unknown (LXD had no figure)' : `${(s.memory.usageBytes / MiB).toFixed(1)} MiB`}`,
      `addresses: ${s.network.addresses.join(' ') || '-'}`,
    ];
  },
};

/** `list`'s output: a row of each instance as `view` shows it, in `format`. */
export async function listText(view: InstanceView, instances: Listed[], format: Format): Promise<string> {
  return formatRows(await Promise.all(instances.map((i) => view.row(i))), view.columns, format);
}
