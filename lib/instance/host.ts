/**
 * What any host of instances does, this machine's (`Host`, lib/host) or an LXD server's
 * (`RemoteHost`, lib/drivers/remote): find, make and copy instances, follow their lifecycle.
 * Code written against it (the `lxq` command line) drives either one. It lives in the contract
 * room because a driver may not import lib/host.
 */
import type { EventsOptions, LifecycleIterator } from '../events/iterator';
import type { LifecycleEvent } from '../events/lifecycle';
import type { HostStorageApi } from '../storage/api';
import type { CopyOptions } from '../storage/types';
import type { CreateOptions, Instance, StartOptions } from './instance';
import type { HostProfiles } from './profiles';

/**
 * A host of instances, local or remote.
 *
 * @example
 * ```ts
 * async function startAll(host: InstanceHost): Promise<void> {
 *   for (const i of await host.list()) if ((await i.status()) === 'stopped') await i.start();
 * }
 * ```
 */
export interface InstanceHost {
  /** The instance of that name; NotFound if there is none. */
  get(name: string): Promise<Instance>;
  /** Every instance, sorted by name. */
  list(): Promise<Instance[]>;
  /** The host's profiles (LXD's): options and devices instances take before their own. */
  readonly profiles: HostProfiles;
  /** The host's storage pools and their custom volumes (LXD's). */
  readonly storage: HostStorageApi;
  create(name: string, options: CreateOptions): Promise<Instance>;
  /** `create`, then `start` (with `wait`, resolved once ready too). */
  launch(image: string, name: string, options?: Omit<CreateOptions, 'image'> & StartOptions): Promise<Instance>;
  /** A copy of `source` (its snapshots too unless `instanceOnly`), or of one `snapshot` of it, with `config` set over the source's. */
  copy(source: string, target: string, options?: Pick<CopyOptions, 'snapshot' | 'instanceOnly' | 'config'>): Promise<Instance>;
  /**
   * Usage of every running instance as OpenMetrics text, with LXD's metric names and labels
   * (`lxd_cpu_seconds_total`, `lxd_memory_*_bytes`, `lxd_disk_*`, `lxd_network_*`, `lxd_procs_total`;
   * labels `name`, `project`, `type`), ending with `# EOF`. An LXD server's is its own GET /1.0/metrics.
   */
  metrics(): Promise<string>;
  /** Lifecycle events of every instance, this process's changes and others', from the moment it returns. */
  on(event: 'lifecycle', listener: (e: LifecycleEvent) => void): this;
  off(event: 'lifecycle', listener: (e: LifecycleEvent) => void): this;
  /** Resolves once the events are followed (the journal or the events websocket). */
  ready(): Promise<void>;
  /** The lifecycle events as an async iterator, ended by `signal`. */
  events(options?: EventsOptions): LifecycleIterator;
  /** Stops following events and lets the process exit. */
  close(): void | Promise<void>;
}
