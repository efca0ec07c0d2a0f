/**
 * V8's compile cache for the command line (Node ≥ 22.1's `module.enableCompileCache`): a
 * command's modules are then read compiled from disk instead of parsed again at every start.
 * Node 20 has none, and the command runs the same without it.
 */
import * as nodeModule from 'node:module';

export function enableCompileCache(): void {
  const enable = (nodeModule as { enableCompileCache?: () => unknown }).enableCompileCache;
  // A cache that cannot be written (a read-only tmpdir) only costs speed.
  if (typeof enable === 'function') enable();
}
