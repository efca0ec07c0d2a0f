/**
 * Profiles as instances see them (LXD's): each instance names profiles, in order, and its
 * effective ("expanded") options and devices are theirs, one after the other, then its own. The
 * profiles live beside the instances (`<host>/profiles/<name>.json`, written atomically by
 * lib/host/profiles.ts); `default` exists on every host, empty until changed.
 */
import { promises as fs, readFileSync } from 'node:fs';
import * as path from 'node:path';

import type { ConfigTarget, InstanceConfig, InstanceConfigInput, InstanceConfigPatch, InstanceType } from '../config/options';
import { InvalidArgument, NotFound, NotSupported } from '../core/errors';
import { refuseControlChars } from '../core/guard';
import { optionKeys, refuseUnknownKeys } from '../core/keys';
import type { DeviceInput, Devices, DevicesInput } from '../devices/declarations';
import type { InstanceRecord } from './instance';

/* eslint-disable @typescript-eslint/no-require-imports -- checks load the option and device tables then: `lxq exec` only expands */
const configOptions = (): typeof import('../config/options') => require('../config/options');
const validate = (): typeof import('../devices/validate') => require('../devices/validate');
/* eslint-enable @typescript-eslint/no-require-imports */

/**
 * A profile as stored: options and devices that instances naming it take, before their own.
 *
 * @example
 * ```ts
 * const p: ProfileRecord = await host.profiles.get('web');
 * console.log(p.name, p.description, p.config['limits.memory'], Object.keys(p.devices), p.usedBy);
 * ```
 */
export interface ProfileRecord {
  name: string;
  description: string;
  config: InstanceConfig;
  devices: Devices;
  /** The instances naming it, by name (as LXD's `used_by`, without its URL prefix). */
  usedBy: string[];
}

/**
 * What `host.profiles.create` takes: options (both types' keys: each instance takes those of its
 * type's, checked when it is expanded), devices, a description.
 *
 * @example
 * ```ts
 * await host.profiles.create('small', { config: { 'limits.memory': '256MiB' }, devices: { data: { type: 'disk', source: '/srv', path: '/srv' } }, description: 'small and with data' });
 * ```
 */
export interface ProfileInput {
  config?: InstanceConfigInput;
  devices?: DevicesInput;
  description?: string;
}

/**
 * A change of a profile (`host.profiles.update`): a value sets an option, `null` removes it; a
 * device replaces the one of its name, `null` removes it; a description replaces the old.
 *
 * @example
 * ```ts
 * await host.profiles.update('small', { config: { 'limits.memory': '512MiB', 'limits.cpu': null }, devices: { data: null } });
 * ```
 */
export interface ProfileChange {
  config?: InstanceConfigPatch;
  devices?: Record<string, DeviceInput | null>;
  description?: string;
}

export const PROFILE_INPUT_KEYS = optionKeys<ProfileInput>({ config: true, devices: true, description: true });

/**
 * A host's profiles, the same on this machine (`host.profiles`) and on an LXD server
 * (`remote.profiles`, LXD's /1.0/profiles).
 *
 * @example
 * ```ts
 * const profiles: HostProfiles = host.profiles;
 * for (const p of await profiles.list()) console.log(p.name, p.usedBy.length);
 * ```
 */
export interface HostProfiles {
  /** Every profile, `default` first. */
  list(): Promise<ProfileRecord[]>;
  /** The profile `name`; NotFound if there is none. */
  get(name: string): Promise<ProfileRecord>;
  /** A new profile; AlreadyExists if the name is taken. */
  create(name: string, input?: ProfileInput): Promise<ProfileRecord>;
  /** Changes keys, devices or the description; every instance using it gets the change (live where it can). */
  update(name: string, change: ProfileChange): Promise<ProfileRecord>;
  /** Replaces the whole profile (options, devices, description) with `input`'s. */
  put(name: string, input: ProfileInput): Promise<ProfileRecord>;
  /** Renames it, in the instances using it too; `default` cannot be renamed. */
  rename(name: string, newName: string): Promise<ProfileRecord>;
  /** Deletes it: Busy while instances use it; `default` cannot be deleted. */
  delete(name: string): Promise<void>;
}

/** What is stored of a profile (usedBy is read from the instances). */
export type StoredProfile = Omit<ProfileRecord, 'usedBy'> & { version: 1 };

/** The profile every host has, and every instance names unless told otherwise. */
export const DEFAULT_PROFILE = 'default';

/** The profiles directory of the host an instance's directory is in (`<host>/instances/<name>`). */
export function profilesDirOf(instanceDir: string): string {
  return path.join(path.dirname(path.dirname(instanceDir)), 'profiles');
}

/** The profiles an instance names: records made before profiles existed name `default`. */
export function profilesOf(record: Pick<InstanceRecord, 'profiles'>): string[] {
  return record.profiles ?? [DEFAULT_PROFILE];
}

/** `records` with their profiles' devices in: a volume attached through a profile is in use as much as one of the instance's own. */
export function withProfileDevices(dir: string, records: InstanceRecord[]): Promise<InstanceRecord[]> {
  return Promise.all(
    records.map(async (r) => {
      const profiles = await readProfiles(dir, profilesOf(r)).catch(() => []); // a record naming a removed profile keeps its own devices
      return profiles.length ? { ...r, devices: expand(r, profiles).devices } : r;
    }),
  );
}

/** LXD's rules for a profile name (not empty, no slash, not . or ..), and none of the control characters a file name or a log line would carry. */
export function validateProfileName(name: unknown): string {
  if (typeof name !== 'string' || !name) throw new InvalidArgument('a profile name must be a non-empty string');
  if (name.includes('/')) throw new InvalidArgument(`bad profile name ${JSON.stringify(name)}: profile names may not contain slashes`);
  if (name === '.' || name === '..') throw new InvalidArgument(`bad profile name ${JSON.stringify(name)}`);
  if (Buffer.byteLength(name) > 200) throw new InvalidArgument(`bad profile name ${JSON.stringify(name.slice(0, 20))}…: longer than 200 bytes`);
  refuseControlChars('profile name', name, {});
  return name;
}

/** A list of profile names as `create` takes it: each valid, none twice. */
export function checkProfileList(value: unknown): string[] {
  if (!Array.isArray(value)) throw new InvalidArgument(`profiles must be an array of profile names, got ${JSON.stringify(value)}`);
  const seen = new Set<string>();
  for (const n of value) {
    validateProfileName(n);
    if (seen.has(n)) throw new InvalidArgument(`profile "${n}" is named twice`);
    seen.add(n);
  }
  return [...value] as string[];
}

/** A stored profile from its file's text (undefined: no file); `default` is empty until written. NotFound names the profile. */
function storedProfile(name: string, text: string | undefined): StoredProfile {
  if (text !== undefined) return JSON.parse(text) as StoredProfile;
  if (name === DEFAULT_PROFILE) return { version: 1, name, description: 'Default lxq profile', config: {}, devices: {} };
  throw new NotFound(`no profile named "${name}" on this host`);
}

/** Undefined for a file that does not exist; any other error is thrown. */
function absent(e: unknown): undefined {
  if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
  return undefined;
}

/** One stored profile; `default` is empty until written. NotFound names the profile. */
export async function readProfile(dir: string, name: string): Promise<StoredProfile> {
  return storedProfile(name, await fs.readFile(path.join(dir, `${name}.json`), 'utf8').catch(absent));
}

/** readProfile without waiting: for the CLI's quick path (lib/host/quick.ts), which only reads a few small files and a trip to libuv's threads costs more. */
export function readProfileSync(dir: string, name: string): StoredProfile {
  let text: string | undefined;
  try {
    text = readFileSync(path.join(dir, `${name}.json`), 'utf8');
  } catch (e) {
    text = absent(e);
  }
  return storedProfile(name, text);
}

/** The profiles `names`, read now, in order. */
export function readProfiles(dir: string, names: readonly string[]): Promise<StoredProfile[]> {
  return Promise.all(names.map((n) => readProfile(dir, n)));
}

/** An instance's options and devices in effect (its profiles', then its own). */
export type Expansion = { config: InstanceConfig; devices: Devices };

/**
 * An instance's options and devices with its profiles': later profiles win, its own win last.
 * A NIC from a profile gets a MAC of this instance's own, derived from its creation (stable
 * across starts, new for a copy), since many instances share the profile's device.
 */
export function expand(record: Pick<InstanceRecord, 'config' | 'devices' | 'createdAt'>, profiles: readonly StoredProfile[]): { config: InstanceConfig; devices: Devices } {
  const config: InstanceConfig = {};
  const devices: Devices = {};
  for (const p of profiles) {
    Object.assign(config, p.config);
    for (const [name, d] of Object.entries(p.devices)) devices[name] = d.type === 'nic' && d.hwaddr === undefined ? { ...d, hwaddr: derivedMac(record.createdAt, name) } : d;
  }
  Object.assign(config, record.config);
  Object.assign(devices, record.devices ?? {});
  return { config, devices };
}

function derivedMac(createdAt: string, device: string): string {
  // node:crypto (OpenSSL's start-up) only for a profile's NIC: `lxq list` and `lxq exec` rarely need it.
  // eslint-disable-next-line @typescript-eslint/no-require-imports -- see above
  const { createHash } = require('node:crypto') as typeof import('node:crypto');
  const h = createHash('sha256').update(`${createdAt}\0${device}`).digest();
  return `00:16:3e:${[...h.subarray(0, 3)].map((b) => b.toString(16).padStart(2, '0')).join(':')}`;
}

/**
 * Checks that `profiles` can apply to an instance of `type` with its own `record` devices: every
 * key and device of theirs is one this type takes, and no own device has a profile device's name
 * with another type. InvalidArgument names the key or device and the profile.
 */
export function checkExpansion(type: InstanceType, record: Pick<InstanceRecord, 'name' | 'config' | 'devices' | 'createdAt'>, profiles: readonly StoredProfile[]): void {
  for (const p of profiles) {
    try {
      configOptions().validateConfig(type, p.config);
      validate().normalizeDevices(type, p.devices);
    } catch (e) {
      const message = `profile "${p.name}" cannot apply to ${record.name} (a ${type}): ${(e as Error).message}`;
      if (e instanceof NotSupported) throw new NotSupported(message);
      if (e instanceof InvalidArgument) throw new InvalidArgument(message);
      throw e;
    }
    for (const [name, d] of Object.entries(p.devices)) {
      const own = record.devices?.[name];
      if (own && own.type !== d.type) throw new InvalidArgument(`device "${name}" of ${record.name} is a ${own.type}, and profile "${p.name}" has a ${d.type} of that name`);
    }
  }
  try {
    validate().checkPaths(expand(record, profiles).devices); // two devices on one path
  } catch (e) {
    if (!(e instanceof InvalidArgument)) throw e;
    throw new InvalidArgument(`the profiles ${profiles.map((p) => `"${p.name}"`).join(', ')} of ${record.name}: ${e.message}`);
  }
}

/** `name` for a profile that no longer exists (NotFound); any other error is thrown. */
function orMissing(name: string, e: unknown): string {
  if (e instanceof NotFound) return name;
  throw e;
}

/** The profiles one instance names, as last read: what its expansion is made from. */
export class InstanceProfiles {
  /** Those read, in order. */
  records: StoredProfile[] = [];
  /** Those the record names that no longer exist (deleted while a create named them): a start refuses. */
  private missing: string[] = [];

  /** Reads them again (or takes `given`, as a create read them). */
  async load(instanceDir: string, names: readonly string[], given?: StoredProfile[]): Promise<void> {
    const dir = profilesDirOf(instanceDir);
    this.take(given ?? (await Promise.all(names.map((n) => readProfile(dir, n).catch((e) => orMissing(n, e))))));
  }

  /** load without waiting (see readProfileSync). */
  loadSync(instanceDir: string, names: readonly string[]): void {
    const dir = profilesDirOf(instanceDir);
    this.take(
      names.map((n) => {
        try {
          return readProfileSync(dir, n);
        } catch (e) {
          return orMissing(n, e);
        }
      }),
    );
  }

  /** The profiles read; a name for one that no longer exists. */
  private take(read: Array<StoredProfile | string>): void {
    this.records = read.filter((p): p is StoredProfile => typeof p !== 'string');
    this.missing = read.filter((p): p is string => typeof p === 'string');
  }

  /** What `record` (the instance's, a snapshot's) expands to. */
  expand(record: Pick<InstanceRecord, 'config' | 'devices' | 'createdAt' | 'profiles'>): { config: InstanceConfig; devices: Devices } {
    return expand(record, this.records.filter((p) => profilesOf(record).includes(p.name)));
  }

  /** NotFound naming the profiles that no longer exist, if any. */
  refuseMissing(what: string): void {
    if (this.missing.length) throw new NotFound(`cannot ${what}: profile ${this.missing.map((n) => `"${n}"`).join(', ')} no longer exists`);
  }
}

/** The profile `input` describes, checked (here and for an LXD server): keys of either type (each with its own type's rules), devices of either type. */
export function checkProfileInput(name: string, input: ProfileInput, target: ConfigTarget = 'local'): StoredProfile {
  if (input === null || typeof input !== 'object' || Array.isArray(input)) throw new InvalidArgument('profile input must be an object with config, devices or description');
  refuseUnknownKeys('profile', input, PROFILE_INPUT_KEYS);
  const description = input.description ?? '';
  if (typeof description !== 'string') throw new InvalidArgument(`a profile's description must be a string, got ${typeof description}`);
  refuseControlChars('profile description', description, { allowTab: true });
  if (input.config !== undefined && (input.config === null || typeof input.config !== 'object' || Array.isArray(input.config))) throw new InvalidArgument('config must be an object of option keys to values');
  const config: InstanceConfig = {};
  const given = (input.config ?? {}) as Record<string, unknown>;
  // Each key alone (a profile applies to both types), but for those whose rule needs another key of the profile beside them.
  for (const [key, value] of Object.entries(given)) {
    const beside = Object.fromEntries((CHECKED_WITH[key] ?? []).filter((k) => k in given).map((k) => [k, given[k]]));
    Object.assign(config, configOptions().validateConfig(typeOf(key), { ...beside, [key]: value }, target));
  }
  const devices = checkDevices(input.devices);
  return { version: 1, name, description, config, devices };
}

/** The type whose rules check option `key` in a profile (which holds both types' keys). */
/** The keys a profile's key is checked with: raw.lxc's lines that replace the seccomp policy need security.syscalls.deny_default: false beside them. */
const CHECKED_WITH: Record<string, string[]> = { 'raw.lxc': ['security.syscalls.deny_default'] };

function typeOf(key: string): InstanceType {
  return configOptions().findOption(key)?.condition === 'vm' ? 'vm' : 'container';
}

/** Devices valid for a container or a VM (an instance of the other type refuses them when expanded). */
function checkDevices(input: unknown): Devices {
  if (input === undefined) return {};
  try {
    return validate().normalizeDevices('container', input);
  } catch (e) {
    try {
      return validate().normalizeDevices('vm', input);
    } catch {
      throw e;
    }
  }
}

export function applyProfileChange(current: Pick<StoredProfile, 'name' | 'config' | 'devices' | 'description'>, change: ProfileChange): ProfileInput {
  if (change.config !== undefined && (change.config === null || typeof change.config !== 'object')) throw new InvalidArgument('config must be an object of option keys to values (null removes one)');
  if (change.devices !== undefined && (change.devices === null || typeof change.devices !== 'object')) throw new InvalidArgument('devices must be an object of device names to devices (null removes one)');
  const config: Record<string, unknown> = { ...current.config };
  for (const [k, v] of Object.entries(change.config ?? {})) {
    if (v !== null) config[k] = v;
    else if (!configOptions().findOption(k)) configOptions().validateConfig('container', { [k]: '' }); // an unknown key: the same error as a set
    else delete config[k];
  }
  const devices: Record<string, unknown> = { ...current.devices };
  for (const [n, d] of Object.entries(change.devices ?? {})) {
    if (d !== null) devices[n] = d;
    else if (!(n in devices)) throw new NotFound(`profile "${current.name}" has no device named "${n}"`);
    else delete devices[n];
  }
  return { config: config as InstanceConfigInput, devices: devices as DevicesInput, description: change.description ?? current.description };
}
