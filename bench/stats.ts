/** Summary statistics of a benchmark's samples (ms). */
export interface Stats {
  min: number;
  p50: number;
  p99: number;
  max: number;
  mean: number;
  n: number;
}

/** Nearest-rank percentiles: with few samples p99 is the maximum. */
export function stats(xs: number[]): Stats {
  const s = [...xs].sort((a, b) => a - b);
  const q = (p: number) => s[Math.min(s.length - 1, Math.floor(p * s.length))];
  return { min: s[0], p50: q(0.5), p99: q(0.99), max: s[s.length - 1], mean: s.reduce((a, b) => a + b, 0) / s.length, n: s.length };
}

/** How long `fn` takes, ms. */
export async function time(fn: () => Promise<unknown> | unknown): Promise<number> {
  const t0 = process.hrtime.bigint();
  await fn();
  return Number(process.hrtime.bigint() - t0) / 1e6;
}

/** Prints `res` as a markdown table (ms): one row per step, a line of text where a step was not measured. */
export function printStatsTable(title: string, column: string, res: Record<string, Stats | string>): void {
  console.log(title);
  console.log(`| ${column} | n | min | p50 | p99 | max |\n|---|---|---|---|---|---|`);
  for (const [k, v] of Object.entries(res)) {
    if (typeof v === 'string') console.log(`| ${k} | ${v} | | | | |`);
    else console.log(`| ${k} | ${v.n} | ${v.min.toFixed(2)} | ${v.p50.toFixed(2)} | ${v.p99.toFixed(2)} | ${v.max.toFixed(1)} |`);
  }
}
