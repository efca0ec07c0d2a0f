/** Where a host keeps its pools, and the pools every host has: a leaf, for what only looks (lib/host/quick.ts). */

/** The pools' directory in a host's: `<host>/storage-pools/<name>/`. */
export const POOLS_DIR = 'storage-pools';
/** A pool's record in its directory. */
export const POOL_FILE = 'pool.json';
/** The pool every host has (LXD's `default`), made at Host.open when missing. */
export const DEFAULT_POOL = 'default';
/** The pool of instances whose record names none (made before pools existed, or imported). */
export const LEGACY_POOL = 'dir';
