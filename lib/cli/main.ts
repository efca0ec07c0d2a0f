#!/usr/bin/env node
/**
 * `lxq`, the command line. `lxq list` and `lxq exec NAME -- CMD…` in their plain forms are served
 * by the quick path (quick.ts: a handful of modules), everything else by the whole CLI
 * (program.ts: commander, the host, the instance classes); both print and exit the same.
 */
import { enableCompileCache } from './compile-cache';

// Before anything else is loaded: what follows is read from V8's cache where Node has one.
enableCompileCache();

import { quick } from './quick';

export async function main(argv = process.argv): Promise<void> {
  // eslint-disable-next-line @typescript-eslint/no-require-imports -- commander and the rest only when the quick path does not serve the line
  if (!(await quick(argv))) await (require('./program') as typeof import('./program')).main(argv);
}

if (require.main === module) void main();
