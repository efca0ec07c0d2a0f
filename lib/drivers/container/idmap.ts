/**
 * A container's whole id map: its range (0 → base, size ids), with raw.idmap's host ids punched
 * into it as LXD's AddSafe does (the range split around each inside range a raw line takes).
 * liblxc gets the extents as lxc.idmap lines; the files API and device nodes translate through them.
 */
import { type InstanceConfig, parseRawIdmap } from '../../config/options';
import { InvalidArgument } from '../../core/errors';
import type { IdExtent, LowerIds } from '../../storage/pools/types';
import { type IdMapper, OVERFLOW_ID } from '../../storage/tree';
import { type IdMap, rootSubRanges } from './host-facts';

/** One extent of a map: `count` ids from `ns` inside are `host`… on the host. */
export type Extent = IdExtent;

export type IdKind = 'uid' | 'gid';

/** The extents of one kind, sorted by inside id. */
export function extents(map: IdMap, kind: IdKind): Extent[] {
  const raw = (map.raw ?? []).filter((e) => e[kind]);
  // The range, cut around every inside range a raw line takes.
  let pieces: Extent[] = [{ ns: 0, host: map.base, count: map.size }];
  for (const r of raw) {
    pieces = pieces.flatMap((p) => {
      if (r.ns >= p.ns + p.count || p.ns >= r.ns + r.count) return [p];
      const out: Extent[] = [];
      if (r.ns > p.ns) out.push({ ns: p.ns, host: p.host, count: r.ns - p.ns });
      const end = r.ns + r.count;
      if (end < p.ns + p.count) out.push({ ns: end, host: p.host + (end - p.ns), count: p.ns + p.count - end });
      return out;
    });
  }
  return [...pieces, ...raw.map((r) => ({ ns: r.ns, host: r.host, count: r.count }))].sort((a, b) => a.ns - b.ns);
}

/**
 * raw.idmap's host ids, checked as LXD does before they reach liblxc: each must be root's to map
 * (in /etc/subuid, /etc/subgid: newuidmap maps only those) and outside the container's own range
 * (an id mapped twice; LXD's "Host id is in the range of subids"). InvalidArgument naming the line.
 */
export function checkRawHostIds(map: IdMap): void {
  for (const kind of ['uid', 'gid'] as const) {
    const file = `/etc/sub${kind}`;
    const allowed = rootSubRanges(file);
    for (const r of (map.raw ?? []).filter((e) => e[kind])) {
      const end = r.host + r.count;
      if (r.host < map.base + map.size && map.base < end) {
        throw new InvalidArgument(`"raw.idmap": ${JSON.stringify(r.line)}: host ${kind}s ${r.host}-${end - 1} overlap the container's own range (${map.base}-${map.base + map.size - 1})`);
      }
      if (!allowed.some((a) => a.start <= r.host && end <= a.start + a.count)) {
        throw new InvalidArgument(
          `"raw.idmap": ${JSON.stringify(r.line)}: host ${kind}s ${r.host}-${end - 1} are not root's to map: add "root:${r.host}:${r.count}" to ${file} (as LXD asks) to allow them`,
        );
      }
    }
  }
}

/** liblxc's lxc.idmap values for the map ("u 0 100000 1000"…), its raw host ids checked first. */
export function lxcIdmapLines(map: IdMap): string[] {
  checkRawHostIds(map);
  return (['uid', 'gid'] as const).flatMap((kind) => extents(map, kind).map((e) => `${kind[0]} ${e.ns} ${e.host} ${e.count}`));
}

/** The host id of inside id `id` (no map: the same; outside every extent: as the range's offset). */
export function hostId(map: IdMap | null, kind: IdKind, id: number): number {
  if (!map) return id;
  const e = map.raw?.length ? extents(map, kind).find((x) => id >= x.ns && id < x.ns + x.count) : undefined;
  return e ? e.host + (id - e.ns) : id + map.base;
}

/** The inside id of host id `id` (the inverse of hostId); OVERFLOW_ID for one the map leaves out (a host file bind-mounted in), as stat inside says. */
export function nsId(map: IdMap | null, kind: IdKind, id: number): number {
  if (!map) return id;
  const e = extents(map, kind).find((x) => id >= x.host && id < x.host + x.count);
  return e ? e.ns + (id - e.host) : OVERFLOW_ID;
}

/**
 * The host ids of `from` moved to those `to` gives the same inside ids (a root shifted from one
 * map to another, as LXD's unshift then shift): a host id `from` does not map is left as it is;
 * an inside id `to` does not map becomes nobody.
 */
export function translateIds(from: IdMap, to: IdMap): IdMapper {
  const one = (kind: IdKind) => {
    const [src, dst] = [extents(from, kind), extents(to, kind)];
    return (id: number) => {
      const e = src.find((x) => id >= x.host && id < x.host + x.count);
      if (!e) return id;
      const inside = e.ns + (id - e.host);
      const d = dst.find((x) => inside >= x.ns && inside < x.ns + x.count);
      return d ? d.host + (inside - d.ns) : OVERFLOW_ID;
    };
  };
  return { uid: one('uid'), gid: one('gid') };
}

/** The whole map as a pool sees an image's lower layer through it (LowerIds). */
export const lowerIds = (map: IdMap): LowerIds => ({ base: map.base, size: map.size, uid: extents(map, 'uid'), gid: extents(map, 'gid') });

/** Whether two maps give every inside id the same host id. */
export const sameIds = (a: IdMap, b: IdMap): boolean => (['uid', 'gid'] as const).every((k) => JSON.stringify(extents(a, k)) === JSON.stringify(extents(b, k)));

/** The ids a container runs as: none (privileged), else its own range or the shared one, with raw.idmap's lines. */
export function containerIdmap(own: IdMap | undefined, config: InstanceConfig, shared: () => IdMap): IdMap | null {
  if (config['security.privileged'] === 'true') return null;
  const range = own ?? shared();
  return config['raw.idmap'] ? { base: range.base, size: range.size, raw: parseRawIdmap(config['raw.idmap']) } : range;
}

/** The range alone (what a root's files are shifted by: raw.idmap's ids are not re-shifted into it). */
export const rangeOf = (map: IdMap | null): IdMap | null => (map ? { base: map.base, size: map.size } : null);
