/** A leaf: what the CLI needs before it knows whether it loads Host (lib/cli/context.ts, lib/host/quick.ts). */

/**
 * Where `Host.open()` keeps its state when no path is given: /var/lib/lxq.
 *
 * @example
 * ```ts
 * const host = await Host.open(); // the same as Host.open({ path: DEFAULT_HOST_PATH })
 * ```
 */
export const DEFAULT_HOST_PATH = '/var/lib/lxq';
