/**
 * Where this package's native files are, and loading its addons by that path: node-gyp's
 * build/Release (or build/Debug) under the package root. `bindings` found them by searching the
 * call stack and a dozen places, which was a tenth of `lxq exec`'s own start-up (BENCHMARKS.md,
 * "CLI start-up"). Nothing here imports lxq (the house rules).
 */
import { existsSync } from 'node:fs';
import * as path from 'node:path';

/** The package root: this file is <root>/lib/native/load.ts, or <root>/dist/lib/native/load.js once built. */
const ROOT = path.resolve(__dirname, '..', '..', ...(path.extname(__filename) === '.ts' ? [] : ['..']));
const BUILDS = [path.join('build', 'Release'), path.join('build', 'Debug')];

/** A native module that is not there (not built: lxq_lxc without liblxc's headers). */
export class AddonMissing extends Error {
  constructor(readonly tries: string[]) {
    super(`no native module at ${tries.join(', ')}`);
    this.name = 'AddonMissing';
  }
}

/** The paths a native file `file` may have under `moduleRoot` (default: this package's), most likely first. */
export const nativePaths = (file: string, moduleRoot = ROOT): string[] => BUILDS.map((b) => path.join(moduleRoot, b, file));

/** The native file `file` (a helper executable beside the addons, e.g. `lxq_runner`): the first of nativePaths that exists, else the first. */
export const nativeFile = (file: string, moduleRoot?: string): string => ((tries) => tries.find((p) => existsSync(p)) ?? tries[0])(nativePaths(file, moduleRoot));

/** Loads the addon `name` (`lxq_sys`, `lxq_lxc`) from under `moduleRoot`; AddonMissing if it was not built. */
export function loadAddon<T>(name: string, moduleRoot?: string): T {
  const tries = nativePaths(`${name}.node`, moduleRoot);
  for (const file of tries) {
    try {
      // eslint-disable-next-line @typescript-eslint/no-require-imports -- a native module, by its path
      return require(file) as T;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'MODULE_NOT_FOUND') throw e;
    }
  }
  throw new AddonMissing(tries);
}
