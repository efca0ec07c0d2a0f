/** Value parsers shared by the option table; each returns the parsed value or throws a message. */

const SIZE_UNITS: Record<string, number> = {
  B: 1,
  kB: 1e3,
  MB: 1e6,
  GB: 1e9,
  TB: 1e12,
  KiB: 2 ** 10,
  MiB: 2 ** 20,
  GiB: 2 ** 30,
  TiB: 2 ** 40,
};

/** LXD's size syntax: a byte count, or a number with a unit (kB, MB, GB, TB, KiB, MiB, GiB, TiB). */
export function parseSize(text: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*([A-Za-z]*)$/.exec(text.trim());
  const unit = m?.[2] || 'B';
  if (!m || !(unit in SIZE_UNITS)) {
    throw new Error(`expected a size such as "256MiB", "1GiB", "512MB" or a byte count, got ${JSON.stringify(text)}`);
  }
  const bytes = Math.floor(Number(m[1]) * SIZE_UNITS[unit]);
  if (!Number.isSafeInteger(bytes) || bytes <= 0) throw new Error(`size out of range: ${JSON.stringify(text)}`);
  return bytes;
}

/** A disk's I/O limit (LXD's limits.read/write/max): bytes per second ("10MB", "1GiB") or operations per second ("100iops"). */
export function parseDiskLimit(text: string): { bps: number } | { iops: number } {
  const iops = /^(\d{1,9})\s*iops$/.exec(text.trim());
  if (iops) {
    if (Number(iops[1]) <= 0) throw new Error(`iops out of range: ${JSON.stringify(text)}`);
    return { iops: Number(iops[1]) };
  }
  try {
    return { bps: parseSize(text) };
  } catch {
    throw new Error(`expected bytes per second such as "10MB" or "1MiB", or operations per second such as "100iops", got ${JSON.stringify(text)}`);
  }
}

const RATE_UNITS: Record<string, number> = { bit: 1, kbit: 1e3, Mbit: 1e6, Gbit: 1e9, Tbit: 1e12, Kibit: 2 ** 10, Mibit: 2 ** 20, Gibit: 2 ** 30, Tibit: 2 ** 40 };

/** LXD's network rate syntax: a number with a bit unit (bit, kbit, Mbit, Gbit, Tbit, Kibit, Mibit, Gibit, Tibit), in bit/s. */
export function parseBitRate(text: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*([A-Za-z]+)$/.exec(text.trim());
  if (!m || !(m[2] in RATE_UNITS)) throw new Error(`expected a rate such as "100Mbit", "1Gbit" or "512kbit", got ${JSON.stringify(text)}`);
  const bits = Math.floor(Number(m[1]) * RATE_UNITS[m[2]]);
  if (!Number.isSafeInteger(bits) || bits < 8000) throw new Error(`rate out of range (at least 8kbit): ${JSON.stringify(text)}`);
  return bits;
}

/** A memory limit: a size, or a percentage of the host's memory ("50%"). */
export function parseMemory(text: string, hostBytes: number): number {
  const pct = /^(\d+(?:\.\d+)?)%$/.exec(text.trim());
  if (!pct) return parseSize(text);
  const p = Number(pct[1]);
  if (p <= 0 || p > 100) throw new Error(`percentage must be in (0, 100], got ${JSON.stringify(text)}`);
  return Math.floor((hostBytes * p) / 100);
}

/**
 * `limits.cpu`: a count ("2": that many CPUs) or an explicit set ("0-1,3"), as in LXD.
 * Returns the CPU numbers.
 */
export function parseCpus(text: string, hostCpus: number): number[] {
  const t = text.trim();
  if (/^\d+$/.test(t)) {
    const n = Number(t);
    if (n < 1 || n > hostCpus) throw new Error(`CPU count must be between 1 and ${hostCpus} (this host), got ${t}`);
    return Array.from({ length: n }, (_, i) => i);
  }
  if (!/^\d+(-\d+)?(,\d+(-\d+)?)*$/.test(t)) {
    throw new Error(`expected a CPU count ("2") or a CPU set ("0-1,3"), got ${JSON.stringify(text)}`);
  }
  const cpus = new Set<number>();
  for (const part of t.split(',')) {
    const [a, b = a] = part.split('-').map(Number);
    if (b < a) throw new Error(`bad CPU range ${part}`);
    for (let i = a; i <= b; i++) {
      if (i >= hostCpus) throw new Error(`CPU ${i} does not exist on this host (it has ${hostCpus})`);
      cpus.add(i);
    }
  }
  return [...cpus].sort((x, y) => x - y);
}

export function parsePositiveInteger(text: string): number {
  if (!/^\d+$/.test(text.trim()) || Number(text) < 1 || !Number.isSafeInteger(Number(text))) {
    throw new Error(`expected a positive integer, got ${JSON.stringify(text)}`);
  }
  return Number(text);
}

export function parseBoolean(text: string): boolean {
  if (text === 'true') return true;
  if (text === 'false') return false;
  throw new Error(`expected "true" or "false", got ${JSON.stringify(text)}`);
}

/** Levenshtein distance, for "did you mean" hints on unknown option keys. */
export function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) {
      cur[j] = Math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    prev = cur;
  }
  return prev[b.length];
}
