/** Rows as a table, JSON, YAML or CSV: the output formats of `lxq list`, `image list`, `monitor`. */
import { InvalidArgument } from '../core/errors';

export const FORMATS = ['table', 'json', 'yaml', 'csv'] as const;
export type Format = (typeof FORMATS)[number];

export function checkFormat(f: string): Format {
  if (!(FORMATS as readonly string[]).includes(f)) throw new InvalidArgument(`unknown format "${f}"; use ${FORMATS.join(', ')}`);
  return f as Format;
}

/** The yaml module, loaded only for `--format yaml` (it is most of a command's start-up otherwise). */
function yaml(rows: Record<string, unknown>[]): string {
  // eslint-disable-next-line @typescript-eslint/no-require-imports -- loaded on first use (see above)
  const { stringify } = require('yaml') as typeof import('yaml');
  return stringify(rows);
}

const csvField = (v: string) => (/[",\n\r]/.test(v) ? `"${v.replace(/"/g, '""')}"` : v);

/** `columns` name the fields of each row shown in table and CSV (JSON and YAML show the rows whole). */
export function formatRows(rows: Record<string, unknown>[], columns: string[], format: Format): string {
  if (format === 'json') return JSON.stringify(rows, null, 2) + '\n';
  if (format === 'yaml') return rows.length ? yaml(rows) : '[]\n';
  const cell = (r: Record<string, unknown>, c: string) => {
    const v = r[c];
    return v === undefined || v === null ? '' : Array.isArray(v) ? v.join(' ') : String(v);
  };
  if (format === 'csv') return [columns, ...rows.map((r) => columns.map((c) => cell(r, c)))].map((l) => l.map(csvField).join(',')).join('\n') + '\n';
  const head = columns.map((c) => c.toUpperCase());
  const body = rows.map((r) => columns.map((c) => cell(r, c)));
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i].length)));
  const line = (cells: string[]) => cells.map((c, i) => c.padEnd(widths[i])).join('  ').trimEnd();
  return [line(head), ...body.map(line)].join('\n') + '\n';
}
