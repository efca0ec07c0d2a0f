/**
 * LXD's record of how it shifted a custom volume's files (`volatile.idmap.last`: the JSON of its
 * IdmapSet, entries `{ Isuid, Isgid, Hostid, Nsid, Maprange }`). LXD shifts a filesystem volume
 * on disk to the ids of the container it is attached to, so the files of its backup carry host
 * ids of that map; lxq keeps a volume's files with the ids seen inside (it attaches through an
 * idmapped mount), so an import of LXD's archive moves them back through this map.
 */
import { InvalidArgument } from '../../core/errors';
import { type IdMapper, OVERFLOW_ID } from '../tree';

/** One range of LXD's map: host ids [hostid, hostid + range) are ns ids [nsid, …). */
export interface LxdIdRange {
  uid: boolean;
  gid: boolean;
  hostid: number;
  nsid: number;
  range: number;
}

const MAX_RANGES = 64;
const ID_LIMIT = 2 ** 32;

/** The key's value read and checked (hostile input): an array of at most 64 ranges within 32-bit ids. [] for none. */
export function parseLxdIdmap(value: unknown, where: string): LxdIdRange[] {
  if (value === undefined || value === '' || value === '[]') return [];
  const bad = (why: string) => new InvalidArgument(`${where}: volatile.idmap.last ${why}`);
  let raw: unknown;
  try {
    raw = JSON.parse(String(value));
  } catch {
    throw bad('is not JSON');
  }
  if (raw === null) return [];
  if (!Array.isArray(raw) || raw.length > MAX_RANGES) throw bad(`is not a list of at most ${MAX_RANGES} id ranges`);
  const id = (v: unknown) => typeof v === 'number' && Number.isInteger(v) && v >= 0 && v < ID_LIMIT;
  return raw.map((r: Record<string, unknown>) => {
    if (r === null || typeof r !== 'object' || !id(r.Hostid) || !id(r.Nsid) || !id(r.Maprange) || (r.Maprange as number) === 0) throw bad(`has a range that is not {Isuid, Isgid, Hostid, Nsid, Maprange}: ${JSON.stringify(r)}`);
    if ((r.Hostid as number) + (r.Maprange as number) > ID_LIMIT || (r.Nsid as number) + (r.Maprange as number) > ID_LIMIT) throw bad(`has a range past 32-bit ids: ${JSON.stringify(r)}`);
    return { uid: r.Isuid === true, gid: r.Isgid === true, hostid: r.Hostid as number, nsid: r.Nsid as number, range: r.Maprange as number };
  });
}

/** Host ids of `ranges` back to the ids seen inside; an id outside them (nobody inside) becomes nobody. */
export function unshiftLxd(ranges: LxdIdRange[]): IdMapper {
  const back = (kind: 'uid' | 'gid') => (id: number) => {
    const r = ranges.find((x) => x[kind] && id >= x.hostid && id < x.hostid + x.range);
    return r ? r.nsid + (id - r.hostid) : OVERFLOW_ID;
  };
  return { uid: back('uid'), gid: back('gid') };
}
