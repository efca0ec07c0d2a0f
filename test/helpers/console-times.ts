/** Waits for lxq_stamper (native/stamper) to have marked a console log's bytes, for tests of `since`. */
import { promises as fs } from 'node:fs';

/** The offset of the last mark in `<log>.times` (flags cleared), -1 if there is none. */
async function lastMark(log: string): Promise<number> {
  const buf = await fs.readFile(`${log}.times`).catch(() => Buffer.alloc(0));
  if (buf.length < 32) return -1;
  const at = 16 + Math.floor((buf.length - 16) / 16 - 1) * 16;
  return Number(buf.readBigUInt64LE(at) & ~(3n << 62n));
}

/** Resolves once `log` holds `line` (or, without it, once all it holds) and a mark covers it. */
export async function stamped(log: string, line?: string, ms = 60_000): Promise<void> {
  const end = Date.now() + ms;
  for (;;) {
    const text = await fs.readFile(log).catch(() => Buffer.alloc(0));
    // The line's end: its newline (a terminal writes \r\n).
    const found = line === undefined ? text.length - 1 : text.indexOf(line);
    const nl = found < 0 ? -1 : text.indexOf(0x0a, found);
    if ((line === undefined || nl >= 0) && (await lastMark(log)) >= nl + 1) return;
    if (Date.now() > end) throw new Error(`${log}: ${line ?? 'its end'} not stamped within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
