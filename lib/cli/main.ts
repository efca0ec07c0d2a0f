#!/usr/bin/env node
/**
 * `lxq`, the command line. `lxq list` and `lxq exec NAME -- CMD…` in their plain forms are served
 * by the quick path (quick.ts: a handful of modules), everything else by the whole CLI
 * (program.ts: commander, the host, the instance classes); both print and exit the same.
 */
import * as nodeModule from 'node:module';

// Before anything else is loaded: what follows is read from V8's compile cache where Node has one
// (≥ 22.1's module.enableCompileCache; Node 20 has none, and runs the same without). Here, not in
// a module of its own: each module is a cost of every start (BENCHMARKS.md, "CLI start-up"). A
// cache that cannot be written (a read-only tmpdir) only costs speed.
(nodeModule as { enableCompileCache?: () => unknown }).enableCompileCache?.();

import { quick } from './quick';

export async function main(argv = process.argv): Promise<void> {
  // eslint-disable-next-line @typescript-eslint/no-require-imports -- commander and the rest only when the quick path does not serve the line
  if (!(await quick(argv))) await (require('./program') as typeof import('./program')).main(argv);
}

if (require.main === module) void main();
