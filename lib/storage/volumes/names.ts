/** Names and keys of custom volumes and their snapshots, checked before anything is written. */
import { InvalidArgument } from '../../core/errors';
import { optionKeys, refuseUnknownKeys } from '../../core/keys';
import { parseSize } from '../../core/units';
import type { StorageVolumeCreateOptions, VolumeContentType } from './types';

/** A volume's record in its directory. */
export const VOLUME_FILE = 'volume.json';
/** A volume snapshot's record in its directory. */
export const SNAPSHOT_FILE = 'snapshot.json';
const MAX_NAME_BYTES = 63;
/** LXD's volume keys this version honours. */
export const VOLUME_KEYS = ['size', 'security.shared'];
/** LXD's default size of a block volume (sparse: it costs what is written). */
export const DEFAULT_BLOCK_BYTES = 10 * 2 ** 30;
const MIN_BLOCK_BYTES = 2 ** 20;

/** A volume's or snapshot's name: as LXD takes it (no "/", no white space), a plain file name for lxq. */
export function validateVolumeName(name: unknown, what = 'storage volume'): string {
  if (typeof name !== 'string' || name.length === 0) throw new InvalidArgument(`a ${what} name must be a non-empty string`);
  if (Buffer.byteLength(name) > MAX_NAME_BYTES) throw new InvalidArgument(`${what} name "${name.slice(0, 20)}…" is ${Buffer.byteLength(name)} bytes; the limit is ${MAX_NAME_BYTES}`);
  if (name.includes('/')) throw new InvalidArgument(`${what} name ${JSON.stringify(name)} contains "/"`);
  if (/\s/u.test(name) || /\p{Cc}/u.test(name)) throw new InvalidArgument(`${what} name ${JSON.stringify(name)} contains white space or a control character`);
  if (name.startsWith('.')) throw new InvalidArgument(`${what} name ${JSON.stringify(name)} starts with "."`);
  return name;
}

export function checkContentType(t: unknown): VolumeContentType {
  if (t === undefined) return 'filesystem';
  if (t !== 'filesystem' && t !== 'block') throw new InvalidArgument(`"contentType" must be "filesystem" or "block", got ${JSON.stringify(t)}`);
  return t;
}

/** A volume's `size` in bytes, InvalidArgument naming it. */
export function volumeBytes(size: string, contentType: VolumeContentType): number {
  let bytes: number;
  try {
    if (typeof size !== 'string') throw new Error(`expected a string such as "2GiB", got ${typeof size}`);
    bytes = parseSize(size);
  } catch (e) {
    throw new InvalidArgument(`"size": ${(e as Error).message}`);
  }
  if (contentType === 'block' && bytes < MIN_BLOCK_BYTES) throw new InvalidArgument(`"size" ${JSON.stringify(size)} is too small for a block volume; the smallest is 1MiB`);
  if (bytes <= 0) throw new InvalidArgument(`"size" ${JSON.stringify(size)} must be more than 0`);
  return bytes;
}

/** A volume's keys: known ones, string values (null removes one when `nullable`). */
export function checkVolumeConfig(config: unknown, nullable: boolean): Record<string, string | null> {
  if (config === undefined) return {};
  if (config === null || typeof config !== 'object' || Array.isArray(config)) throw new InvalidArgument('a volume\'s config must be an object of string values');
  for (const [k, v] of Object.entries(config)) {
    if (!VOLUME_KEYS.includes(k)) throw new InvalidArgument(`unknown storage volume key "${k}"; known: ${VOLUME_KEYS.map((x) => `"${x}"`).join(', ')}`);
    if (v === null && nullable) continue;
    if (typeof v !== 'string') throw new InvalidArgument(`config: "${k}" must be a string${nullable ? ' or null' : ''}, got ${typeof v}`);
    if (k === 'security.shared' && v !== 'true' && v !== 'false') throw new InvalidArgument(`config: "security.shared" must be "true" or "false", got ${JSON.stringify(v)}`);
  }
  return config as Record<string, string | null>;
}

export function checkVolumeDescription(description: unknown): string {
  if (description === undefined) return '';
  if (typeof description !== 'string' || /\p{Cc}/u.test(description.replace(/\n/g, ''))) throw new InvalidArgument('a storage volume description must be a string without control characters');
  return description;
}

/** What `volumes.create` takes. */
export const VOLUME_CREATE_KEYS = optionKeys<StorageVolumeCreateOptions>({ size: true, contentType: true, config: true, description: true });

/** `volumes.create`'s input, checked. */
export interface CheckedVolumeCreate {
  contentType: VolumeContentType;
  /** Its keys, with `size` if it was given (as the option or as the key). */
  config: Record<string, string>;
  description: string;
  /** `size` in bytes; undefined where none was given. */
  bytes: number | undefined;
}

/**
 * A volume's name and create options checked, for a local pool and an LXD server alike, before
 * anything is written or sent: InvalidArgument naming what is wrong.
 */
export function checkVolumeCreate(name: unknown, options: StorageVolumeCreateOptions): CheckedVolumeCreate {
  validateVolumeName(name);
  if (options === null || typeof options !== 'object') throw new InvalidArgument('storage volume options must be an object, e.g. { contentType: "filesystem" }');
  refuseUnknownKeys('storage volume', options, VOLUME_CREATE_KEYS);
  const contentType = checkContentType(options.contentType);
  const config = { ...(checkVolumeConfig(options.config, false) as Record<string, string>) };
  if (options.size !== undefined && config.size !== undefined && options.size !== config.size) throw new InvalidArgument('"size" and config "size" differ; give one');
  const size = options.size ?? config.size;
  if (size !== undefined) config.size = size;
  return { contentType, config, description: checkVolumeDescription(options.description), bytes: size === undefined ? undefined : volumeBytes(size, contentType) };
}
