/**
 * The host's profiles (`host.profiles`, LXD's): options and devices that instances naming them
 * take before their own (expansion: lib/instance/profiles.ts). Each is a record written atomically
 * (`<host>/profiles/<name>.json`); every change is made under one lock shared by all processes, is
 * checked against every instance using the profile first (nothing changes on a refusal), then
 * reaches each of them (live where it can, else at its next start) under the instance's own lock.
 */
import { promises as fs } from 'node:fs';
import * as path from 'node:path';

import { AlreadyExists, Busy, InvalidArgument, NotFound } from '../core/errors';
import { writeJsonAtomic } from '../core/fs';
import { refuseUnknownKeys } from '../core/keys';
import { FileLock } from '../core/lock';
import type { ProfileEvent } from '../events/lifecycle';
import type { BaseInstance } from '../instance/base';
import type { Instance, InstanceRecord } from '../instance/instance';
import { instanceRecords } from './records';

// eslint-disable-next-line @typescript-eslint/no-require-imports -- the option table is loaded only when a profile changes (host.ts loads this file at every open)
const configOptions = (): typeof import('../config/options') => require('../config/options');
import { applyProfileChange, checkExpansion, checkProfileInput, DEFAULT_PROFILE, expand, PROFILE_INPUT_KEYS as INPUT_KEYS, type HostProfiles, type ProfileChange, type ProfileInput, profilesOf, readProfile, readProfiles, type ProfileRecord, type StoredProfile, validateProfileName } from '../instance/profiles';



/** What the profiles need of their host. */
export interface ProfileHost {
  /** Every instance record on the host (made by any process). */
  records(): Promise<InstanceRecord[]>;
  /** Tells the instance `name` its profiles changed (`previous`: as they were); see BaseInstance.profilesChanged. */
  changed(name: string, previous: StoredProfile[]): Promise<void>;
  /** Renames profile `from` to `to` in the instance's record, under its lock. */
  renamed(name: string, from: string, to: string): Promise<void>;
  report(action: ProfileEvent['action'], name: string, previous?: string): Promise<void>;
}

/**
 * The host's profiles: create, list, get, update, rename and delete them. `default` exists on
 * every host (empty until changed) and is what instances name unless told otherwise.
 *
 * @example
 * ```ts
 * await host.profiles.create('web', { config: { 'limits.memory': '256MiB' } });
 * const c = await host.create('web1', { image: 'busybox', profiles: ['default', 'web'] });
 * await host.profiles.update('web', { config: { 'limits.memory': '512MiB' } }); // web1 gets it, live if running
 * ```
 */
export class Profiles implements HostProfiles {
  private readonly lock: FileLock;

  constructor(
    /** `<host>/profiles`. */
    readonly dir: string,
    private readonly host: ProfileHost,
  ) {
    this.lock = new FileLock(path.join(dir, '.lock'), 'the profiles');
  }

  /** Every profile, `default` first, then by name. */
  async list(): Promise<ProfileRecord[]> {
    const names = (await fs.readdir(this.dir).catch(() => [] as string[])).filter((n) => n.endsWith('.json') && !n.startsWith('.')).map((n) => n.slice(0, -'.json'.length));
    const all = [DEFAULT_PROFILE, ...names.filter((n) => n !== DEFAULT_PROFILE).sort()];
    const records = await this.host.records();
    const found = await Promise.all(all.map((n) => readProfile(this.dir, n).catch((e) => (e instanceof NotFound ? undefined : Promise.reject(e)))));
    return found.filter((p): p is StoredProfile => p !== undefined).map((p) => withUsers(p, records));
  }

  /** The profile `name`; NotFound if there is none. */
  async get(name: string): Promise<ProfileRecord> {
    validateProfileName(name);
    return withUsers(await readProfile(this.dir, name), await this.host.records());
  }

  /** A new profile; AlreadyExists if the name is taken (`default` always is). */
  async create(name: string, input: ProfileInput = {}): Promise<ProfileRecord> {
    validateProfileName(name);
    const stored = checkProfileInput(name, input);
    return this.changing(async () => {
      if (name === DEFAULT_PROFILE || (await fs.access(this.file(name)).then(() => true, () => false))) throw new AlreadyExists(`a profile named "${name}" already exists`);
      await writeJsonAtomic(this.file(name), stored);
      await this.host.report('profile-created', name);
      return { ...stripVersion(stored), usedBy: [] };
    });
  }

  /**
   * Changes the profile: checked first against every instance using it (each takes the keys and
   * devices of its type: InvalidArgument names the key, the profile and the instance; nothing is
   * changed), written, then applied to each of them (live where the key or device allows it, else
   * at its next start), one `instance-updated` each.
   */
  async update(name: string, change: ProfileChange): Promise<ProfileRecord> {
    validateProfileName(name);
    if (change === null || typeof change !== 'object' || Array.isArray(change)) throw new InvalidArgument('a profile change must be an object with config, devices or description');
    refuseUnknownKeys('profile change', change, INPUT_KEYS);
    return this.changing(async () => {
      const current = await readProfile(this.dir, name);
      const next = checkProfileInput(name, applyProfileChange(current, change));
      return this.replace(current, next);
    });
  }

  /** Replaces the profile's options, devices and description with `input`'s (`lxq profile edit`). */
  async put(name: string, input: ProfileInput): Promise<ProfileRecord> {
    validateProfileName(name);
    const next = checkProfileInput(name, input);
    return this.changing(async () => this.replace(await readProfile(this.dir, name), next));
  }

  private async replace(current: StoredProfile, next: StoredProfile): Promise<ProfileRecord> {
    const users = (await this.host.records()).filter((r) => profilesOf(r).includes(current.name));
    const before = new Map<string, StoredProfile[]>();
    for (const r of users) {
      const profiles = await readProfiles(this.dir, profilesOf(r));
      before.set(r.name, profiles);
      checkExpansion(r.type, r, profiles.map((p) => (p.name === current.name ? next : p)));
      if (r.type === 'container') refuseFixedChange(r, profiles, next);
    }
    await writeJsonAtomic(this.file(current.name), next);
    for (const r of users) await this.host.changed(r.name, before.get(r.name)!).catch((e) => (e instanceof NotFound ? undefined : Promise.reject(e)));
    await this.host.report('profile-updated', current.name);
    return { ...stripVersion(next), usedBy: users.map((r) => r.name) };
  }

  /** Renames the profile, in the instances using it too; `default` cannot be renamed. */
  async rename(name: string, newName: string): Promise<ProfileRecord> {
    validateProfileName(name);
    validateProfileName(newName);
    if (name === DEFAULT_PROFILE) throw new InvalidArgument('the default profile cannot be renamed');
    return this.changing(async () => {
      const current = await readProfile(this.dir, name);
      if (newName === DEFAULT_PROFILE || (await fs.access(this.file(newName)).then(() => true, () => false))) throw new AlreadyExists(`a profile named "${newName}" already exists`);
      const renamed: StoredProfile = { ...current, name: newName };
      // The new record first, the old last: instances named either one meanwhile find it.
      await writeJsonAtomic(this.file(newName), renamed);
      const users = (await this.host.records()).filter((r) => profilesOf(r).includes(name));
      for (const r of users) await this.host.renamed(r.name, name, newName).catch((e) => (e instanceof NotFound ? undefined : Promise.reject(e)));
      await fs.rm(this.file(name), { force: true });
      await this.host.report('profile-renamed', newName, name);
      return { ...stripVersion(renamed), usedBy: users.map((r) => r.name) };
    });
  }

  /** Deletes the profile: Busy (naming them) while instances use it; `default` cannot be deleted. */
  async delete(name: string): Promise<void> {
    validateProfileName(name);
    if (name === DEFAULT_PROFILE) throw new InvalidArgument('the default profile cannot be deleted');
    return this.changing(async () => {
      await readProfile(this.dir, name);
      const users = (await this.host.records()).filter((r) => profilesOf(r).includes(name)).map((r) => r.name);
      if (users.length) throw new Busy(`profile "${name}" is used by ${users.join(', ')}: remove it from them first`, users);
      await fs.rm(this.file(name));
      await this.host.report('profile-deleted', name);
    });
  }

  /**
   * For Host.import: the profiles an archive's instance names exist here and apply to it (NotFound, InvalidArgument naming them).
   * @internal
   */
  async checkImported(file: string, record: InstanceRecord): Promise<void> {
    const profiles = await readProfiles(this.dir, profilesOf(record)).catch((e) => Promise.reject(e instanceof NotFound ? new NotFound(`${file}: ${e.message}; create it, then import again`) : e));
    checkExpansion(record.type, record, profiles);
  }

  private file(name: string): string {
    return path.join(this.dir, `${name}.json`);
  }

  /** One change at a time across processes. */
  private async changing<T>(op: () => Promise<T>): Promise<T> {
    await fs.mkdir(this.dir, { recursive: true, mode: 0o700 });
    return this.lock.hold(op);
  }
}

function stripVersion(p: StoredProfile): Omit<StoredProfile, 'version'> {
  const { version: _v, ...rest } = p;
  return rest;
}

function withUsers(p: StoredProfile, records: InstanceRecord[]): ProfileRecord {
  return { ...stripVersion(p), usedBy: records.filter((r) => profilesOf(r).includes(p.name)).map((r) => r.name) };
}

/** A container's id map is fixed when it is made: a profile may not change security.privileged or security.idmap.* under it. */
function refuseFixedChange(r: InstanceRecord, profiles: StoredProfile[], next: StoredProfile): void {
  const swapped = profiles.map((p) => (p.name === next.name ? next : p));
  try {
    configOptions().refuseFixedChange(r.name, expand(r, profiles).config, expand(r, swapped).config);
  } catch (e) {
    throw new InvalidArgument(`${(e as Error).message}: profile "${next.name}" cannot change it`);
  }
}

/** The profiles of the local host at `hostDir`, which tell its instances (`get`) of their changes. */
export function localProfiles(hostDir: string, get: (name: string) => Promise<Instance>, report: ProfileHost['report']): Profiles {
  const local = async (name: string) => (await get(name)) as BaseInstance;
  return new Profiles(path.join(hostDir, 'profiles'), {
    records: () => instanceRecords(path.join(hostDir, 'instances')),
    changed: async (name, previous) => (await local(name)).profilesChanged(previous),
    renamed: async (name, from, to) => (await local(name)).profilesChanged([], { from, to }),
    report,
  });
}
