/**
 * The API reference: `typedoc` (typedoc.json, as `npm run docs`) runs without a warning, and every
 * export of lib/index.ts and lib/qmp/index.ts has a one-line description and an `@example`.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

interface Comment {
  summary?: { text: string }[];
  blockTags?: { tag: string }[];
}
interface Reflection {
  name: string;
  comment?: Comment;
  signatures?: { comment?: Comment }[];
  children?: Reflection[];
}

test('every public export has a description and an @example; typedoc warns about nothing', async () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'lxq-docs-'));
  try {
    const json = path.join(dir, 'api.json');
    // typedoc.json sets treatWarningsAsErrors: a warning fails this run.
    await run(process.execPath, [path.join(__dirname, '..', 'node_modules', 'typedoc', 'bin', 'typedoc'), '--json', json, '--out', path.join(dir, 'html')], { cwd: path.join(__dirname, '..') });
    const project = JSON.parse(readFileSync(json, 'utf8')) as Reflection;
    const missing: string[] = [];
    let exports = 0;
    for (const mod of project.children ?? []) {
      for (const r of mod.children ?? []) {
        exports++;
        const c = r.comment ?? r.signatures?.[0]?.comment;
        const summary = (c?.summary ?? []).map((s) => s.text).join('').trim();
        if (!summary) missing.push(`${mod.name}.${r.name}: no description`);
        if (!c?.blockTags?.some((t) => t.tag === '@example')) missing.push(`${mod.name}.${r.name}: no @example`);
      }
    }
    expect(exports).toBeGreaterThan(90);
    expect(missing).toEqual([]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}, 300_000);
