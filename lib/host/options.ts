/** What the host's calls take besides its own options (host.ts holds the host itself). */
import type { CopyOptions } from '../storage/types';
import { LONG_OPTION_KEYS, type LongOptions } from '../core/abort';
import { InvalidArgument } from '../core/errors';
import { optionKeys, refuseUnknownKeys } from '../core/keys';
import type { ImportTrust } from '../instance/foreign';
import { checkEphemeral, type CreateOptions, type StartOptions } from '../instance/instance';

/**
 * What `host.import` takes: another name, and consent to what reaches into the host.
 *
 * @example
 * ```ts
 * await host.import('./web.tar.zst', { name: 'web2' });
 * await host.import('./privileged.tar.zst', { trust: 'host-access' }); // raw.lxc, host paths… accepted
 * ```
 */
export interface ImportOptions extends LongOptions {
  /** Default: the exported name. */
  name?: string;
  /** Accept records that reach into the host (see ImportTrust); refused with PermissionDenied otherwise. */
  trust?: ImportTrust;
}
/**
 * What `host.launch` takes: `create`'s options (but the image, given first) and `start`'s `wait`.
 *
 * @example
 * ```ts
 * const options: LaunchOptions = { config: { 'limits.memory': '512MiB' }, wait: { for: 'port', port: 80 } };
 * await host.launch('debian/12', 'web1', options);
 * ```
 */
export type LaunchOptions = Omit<CreateOptions, 'image'> & StartOptions;
export const IMPORT_OPTION_KEYS = optionKeys<ImportOptions>({ name: true, trust: true, ...LONG_OPTION_KEYS });
export const COPY_OPTION_KEYS = optionKeys<CopyOptions>({ snapshot: true, config: true, devices: true, instanceOnly: true, flatten: true, ephemeral: true, pool: true, ...LONG_OPTION_KEYS });

/** Host.copy's options checked before anything is read; the copy's ephemeral flag. */
export function checkCopyOptions(options: CopyOptions): boolean {
  if (options === null || typeof options !== 'object') throw new InvalidArgument('copy options must be an object');
  refuseUnknownKeys('copy', options, COPY_OPTION_KEYS);
  if (options.instanceOnly !== undefined && typeof options.instanceOnly !== 'boolean') throw new InvalidArgument('instanceOnly must be a boolean');
  if (options.flatten !== undefined && typeof options.flatten !== 'boolean') throw new InvalidArgument('flatten must be a boolean');
  if (options.pool !== undefined && typeof options.pool !== 'string') throw new InvalidArgument("pool must be a storage pool's name");
  return checkEphemeral(options.ephemeral);
}

/**
 * Where a host keeps its state and images.
 *
 * @example
 * ```ts
 * const host = await Host.open({ path: '/srv/lxq', images: '/var/cache/lxq-images' });
 * ```
 */
export interface HostOptions {
  /** State directory. Default /var/lib/lxq; tests pass a temporary one. */
  path?: string;
  /** Image store directory, if not `<path>/images`: several hosts may share one. */
  images?: string;
  /**
   * Instances this host object makes (create, launch, copy, import) are deleted by a detached
   * reaper process when this process dies, SIGKILL included, or exits without `host.close()`
   * (testcontainers' Ryuk): for tests and benchmarks. `close()` releases them (the reaper exits, deleting nothing). See
   * lib/host/reaper.ts. Default false.
   */
  reap?: boolean;
  /**
   * Run the snapshot scheduler while the host is open (`snapshots.schedule`, `.expiry`: lib/host/scheduler.ts)
   * until `close()`; it keeps the process alive. Its failures are process warnings. Default false.
   */
  scheduler?: boolean;
}
