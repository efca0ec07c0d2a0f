/**
 * LXD's snapshot scheduling forms, written out: `snapshots.schedule` (cron's five fields or
 * @hourly-style aliases, several joined by ", "), `snapshots.expiry` ("1d 2H", shared.GetExpiry)
 * and `snapshots.pattern` (`snap%d`, and pongo2's `{{ creation_date|date:"2006-01-02" }}` with Go's
 * time layout). Times are the host's local time, as LXD's.
 */

/** Which minutes a schedule fires in. */
export interface Schedule {
  matches(at: Date): boolean;
}

const ALIASES: Record<string, string> = {
  '@hourly': '0 * * * *',
  '@daily': '0 0 * * *',
  '@midnight': '0 0 * * *',
  '@weekly': '0 0 * * 0',
  '@monthly': '0 0 1 * *',
  '@annually': '0 0 1 1 *',
  '@yearly': '0 0 1 1 *',
};
const MONTHS = ['jan', 'feb', 'mar', 'apr', 'may', 'jun', 'jul', 'aug', 'sep', 'oct', 'nov', 'dec'];
const DAYS = ['sun', 'mon', 'tue', 'wed', 'thu', 'fri', 'sat'];
const FIELDS: { name: string; min: number; max: number; names?: string[]; base?: number }[] = [
  { name: 'minute', min: 0, max: 59 },
  { name: 'hour', min: 0, max: 23 },
  { name: 'day of month', min: 1, max: 31 },
  { name: 'month', min: 1, max: 12, names: MONTHS, base: 1 },
  { name: 'day of week', min: 0, max: 7, names: DAYS, base: 0 },
];

function fieldValue(text: string, f: (typeof FIELDS)[number]): number {
  const named = f.names?.indexOf(text.toLowerCase()) ?? -1;
  const n = named >= 0 ? named + (f.base ?? 0) : /^\d+$/.test(text) ? Number(text) : NaN;
  if (!(n >= f.min && n <= f.max)) throw new Error(`${f.name} must be ${f.min}-${f.max}${f.names ? ' or a name' : ''}, got ${JSON.stringify(text)}`);
  return n;
}

/** One cron field as the set of values it allows: `*`, `N`, `A-B`, each with an optional `/STEP`, joined by commas. */
function parseField(text: string, f: (typeof FIELDS)[number]): Set<number> {
  const out = new Set<number>();
  for (const part of text.split(',')) {
    const m = /^(\*|[A-Za-z0-9]+(?:-[A-Za-z0-9]+)?)(?:\/(\d+))?$/.exec(part);
    if (!m) throw new Error(`bad ${f.name} field ${JSON.stringify(part)}`);
    const step = m[2] === undefined ? 1 : Number(m[2]);
    if (step < 1) throw new Error(`the step of the ${f.name} field must be at least 1`);
    const [lo, hi] = m[1] === '*' ? [f.min, f.max] : m[1].split('-').map((v) => fieldValue(v, f));
    const end = hi ?? (m[2] === undefined ? lo : f.max);
    if (end < lo) throw new Error(`${f.name} range ${part} runs backwards`);
    for (let v = lo; v <= end; v += step) out.add(f.name === 'day of week' && v === 7 ? 0 : v);
  }
  return out;
}

function parseCron(expr: string): Schedule {
  const parts = expr.trim().split(/\s+/);
  if (parts.length !== 5) throw new Error(`a cron schedule has 5 fields (minute hour day-of-month month day-of-week), got ${JSON.stringify(expr)}`);
  const [min, hour, dom, month, dow] = parts.map((p, i) => parseField(p, FIELDS[i]));
  const domAny = parts[2].startsWith('*');
  const dowAny = parts[4].startsWith('*');
  return {
    matches(at) {
      if (!min.has(at.getMinutes()) || !hour.has(at.getHours()) || !month.has(at.getMonth() + 1)) return false;
      const d = dom.has(at.getDate());
      const w = dow.has(at.getDay());
      // cron's rule: with both day fields restricted, either may match.
      return domAny || dowAny ? d && w : d || w;
    },
  };
}

/** Parses `snapshots.schedule`: cron expressions or aliases joined by ", " (`@never`: none). Throws a message when it is not one. */
export function parseSchedule(text: string): Schedule {
  const items = text.split(', ').map((s) => s.trim());
  const schedules = items.map((item) => {
    const lower = item.toLowerCase();
    if (lower === '@never') return { matches: () => false };
    if (lower === '@startup') throw new Error('@startup is not supported by lxq (snapshots at start); use a cron form or an alias');
    if (lower.startsWith('@') && !ALIASES[lower]) throw new Error(`unknown alias ${JSON.stringify(item)}; expected ${Object.keys(ALIASES).join(', ')} or @never`);
    return parseCron(ALIASES[lower] ?? item);
  });
  return { matches: (at) => schedules.some((s) => s.matches(at)) };
}

/** `snapshots.expiry` ("1M 2H 3d 4w 5m 6y", each unit once: S seconds, M minutes, H hours, d, w, m months, y years) from `from`, as LXD's GetExpiry; null when empty. */
export function expiryFrom(from: Date, text: string): Date | null {
  const expr = text.trim();
  if (!expr) return null;
  const n: Record<string, number> = {};
  for (const value of expr.split(' ')) {
    const m = /^(\d+)(S|M|H|d|w|m|y)$/.exec(value);
    if (!m) throw new Error(`expected terms like "1M 2H 3d 4w 5m 6y" (S, M minutes, H, d, w, m months, y), got ${JSON.stringify(value)}`);
    if (n[m[2]] !== undefined) throw new Error(`the unit ${m[2]} is given twice`);
    n[m[2]] = Number(m[1]);
  }
  const d = new Date(from);
  // Go's AddDate (years, months, days together, then normalized), then the clock units.
  d.setFullYear(d.getFullYear() + (n.y ?? 0), d.getMonth() + (n.m ?? 0), d.getDate() + (n.d ?? 0) + 7 * (n.w ?? 0));
  const t = d.getTime() + ((n.H ?? 0) * 3600 + (n.M ?? 0) * 60 + (n.S ?? 0)) * 1000;
  if (!Number.isFinite(t) || Number.isNaN(new Date(t).getTime())) throw new Error(`expiry ${JSON.stringify(text)} is too far`);
  return new Date(t);
}

/** Go's reference-time layout tokens, longest first where one is a prefix of another. */
const GO_LAYOUT: [string, (d: Date) => string][] = [
  ['January', (d) => d.toLocaleString('en-US', { month: 'long' })],
  ['Monday', (d) => d.toLocaleString('en-US', { weekday: 'long' })],
  ['2006', (d) => String(d.getFullYear())],
  ['Jan', (d) => d.toLocaleString('en-US', { month: 'short' })],
  ['Mon', (d) => d.toLocaleString('en-US', { weekday: 'short' })],
  ['01', (d) => pad(d.getMonth() + 1)],
  ['02', (d) => pad(d.getDate())],
  ['_2', (d) => String(d.getDate()).padStart(2, ' ')],
  ['15', (d) => pad(d.getHours())],
  ['03', (d) => pad(d.getHours() % 12 || 12)],
  ['04', (d) => pad(d.getMinutes())],
  ['05', (d) => pad(d.getSeconds())],
  ['06', (d) => pad(d.getFullYear() % 100)],
  ['PM', (d) => (d.getHours() < 12 ? 'AM' : 'PM')],
  ['pm', (d) => (d.getHours() < 12 ? 'am' : 'pm')],
  ['1', (d) => String(d.getMonth() + 1)],
  ['2', (d) => String(d.getDate())],
  ['3', (d) => String(d.getHours() % 12 || 12)],
  ['4', (d) => String(d.getMinutes())],
  ['5', (d) => String(d.getSeconds())],
];
const pad = (n: number) => String(n).padStart(2, '0');

function goFormat(d: Date, layout: string): string {
  let out = '';
  for (let i = 0; i < layout.length; ) {
    const token = GO_LAYOUT.find(([t]) => layout.startsWith(t, i));
    out += token ? token[1](d) : layout[i];
    i += token ? token[0].length : 1;
  }
  return out;
}

/**
 * `snapshots.pattern` with its `{{ creation_date|date:"LAYOUT" }}` parts rendered for `at` (the
 * only pongo2 form lxq renders; any other `{{ }}` or `{% %}` is refused). `%d` stays for the caller.
 */
export function renderPattern(pattern: string, at: Date): string {
  if (pattern.includes('{%')) throw new Error('pongo2 tags ({% %}) are not supported; use {{ creation_date|date:"2006-01-02" }} and %d');
  const out = pattern.replace(/\{\{(.*?)\}\}/g, (_, inner: string) => {
    const m = /^\s*creation_date\s*\|\s*date\s*:\s*(?:"([^"]*)"|'([^']*)')\s*$/.exec(inner);
    if (!m) throw new Error(`only {{ creation_date|date:"LAYOUT" }} (Go's layout, e.g. "2006-01-02_15-04") is rendered, got {{${inner}}}`);
    return goFormat(at, m[1] ?? m[2]);
  });
  if (/\{\{|\}\}/.test(out)) throw new Error('unbalanced {{ }} in the pattern');
  if ((out.match(/%d/g) ?? []).length > 1) throw new Error("a snapshot pattern may contain '%d' only once");
  return out;
}

/**
 * The next snapshot name for `pattern` (LXD's NextSnapshotName): `%d` becomes one more than the
 * highest index the existing names give it (0 for the first); a name without `%d` that exists
 * gets `-0`, `-1`… appended.
 */
export function nextSnapshotName(pattern: string, at: Date, existing: string[]): string {
  let name = renderPattern(pattern, at);
  if (!name.includes('%d')) {
    if (!existing.includes(name)) return name;
    name += '-%d';
  }
  const [before, after] = name.split('%d');
  const used = existing.filter((n) => n.startsWith(before) && n.endsWith(after) && n.length > before.length + after.length).map((n) => n.slice(before.length, n.length - after.length));
  const next = 1 + Math.max(-1, ...used.filter((s) => /^\d+$/.test(s)).map(Number));
  return `${before}${next}${after}`;
}
