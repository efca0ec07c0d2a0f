/**
 * What the image store's calls take and give (store.ts), and what it needs of the host.
 */
import type { InstanceType } from '../config/options';
import type { LongOptions, Progress } from '../core/abort';
import { optionKeys } from '../core/keys';
import type { Image } from './catalog';

export type { Image } from './catalog';

/**
 * Options of `images.publish`: make the image from a snapshot of the instance instead of its current state.
 *
 * @example
 * ```ts
 * await host.images.publish(c, 'web-golden', { snapshot: 'clean' });
 * ```
 */
export interface PublishOptions extends LongOptions {
  /** Publish this snapshot of the instance (which may then run) rather than its current state. */
  snapshot?: string;
}

/**
 * Options of `images.import`: the name the image takes, and the long operation's signal and progress.
 *
 * @example
 * ```ts
 * await host.images.import('./debian.tar.xz', { alias: 'deb', signal: AbortSignal.timeout(600_000) });
 * ```
 */
export interface ImageImportOptions extends LongOptions {
  alias: string;
}

/**
 * A built image as `list()` shows it.
 *
 * @example
 * ```ts
 * const stale = (await host.images.list()).filter((i) => !i.current);
 * ```
 */
export interface ImageInfo extends Image {
  /** Bytes on the host. */
  size: number;
  /** The image it was derived from, if any. */
  from?: string;
  /** False for an older build whose inputs have changed since (kept while instances use it). */
  current: boolean;
}

/**
 * A step of an image build, for a progress bar.
 *
 * @example
 * ```ts
 * await host.images.ensure('vm/default', { onProgress: (p: ImageProgress) => console.log(`${p.percent}% ${p.phase}`) });
 * ```
 */
export interface ImageProgress extends Progress {
  name: string;
  type: InstanceType;
}

/**
 * The events an image store emits: the progress of each build.
 *
 * @example
 * ```ts
 * host.images.on('progress', (p) => console.log(`${p.name}: ${p.percent}% ${p.phase}`));
 * ```
 */
export interface ImageStoreEvents {
  progress: (event: ImageProgress) => void;
}

/**
 * Options of `images.ensure`: the variant (container or VM) and a progress callback.
 *
 * @example
 * ```ts
 * await host.images.ensure('busybox', { type: 'vm' });
 * ```
 */
export interface EnsureOptions {
  /** The variant; default the image's only one, or `container`. */
  type?: InstanceType;
  /** Build progress, if it has to be built (also emitted as `progress` events). */
  onProgress?: (event: ImageProgress) => void;
  /**
   * Aborting rejects this call with Aborted at once; the build itself is killed (nothing of it
   * kept) once no other caller waits for it.
   */
  signal?: AbortSignal;
}
export const ENSURE_OPTION_KEYS = optionKeys<EnsureOptions>({ type: true, onProgress: true, signal: true });

/**
 * A custom image on top of one of lxq's: extra Debian packages and commands run in it.
 *
 * @example
 * ```ts
 * await host.images.build('web-base', { from: 'debian/12', packages: ['nginx'], run: ['echo built > /etc/motd'] });
 * ```
 */
export interface BuildOptions extends EnsureOptions {
  /** The image this one is made from (a Debian image, or one derived from it). */
  from: string;
  /** More Debian packages. */
  packages?: string[];
  /** Shell commands run as root in the image after the packages are installed. */
  run?: string[];
}
export const BUILD_OPTION_KEYS = optionKeys<BuildOptions>({ from: true, packages: true, run: true, type: true, onProgress: true, signal: true });

/** What `publish` needs of an instance (lib/instance/base.ts gives it). */
export interface PublishSource {
  readonly name: string;
  publishData(into: string, options: { snapshot?: string }): Promise<{ type: InstanceType; meta: Record<string, unknown> }>;
}

/** What the host tells its store about instances. */
export interface StoreOptions {
  /** The instances using an image (for `delete`): names, empty if none. */
  users?: (name: string) => Promise<string[]>;
  /** The instance `publish` was given (an instance or its name), NotFound if there is none. */
  instance?: (instance: unknown) => Promise<PublishSource>;
  /** Told the builds (directories) `delete` is about to remove, no instance using them: what storage pools keep of them goes first. */
  release?: (builds: string[]) => Promise<void>;
}
