/**
 * An LXD server's profiles through /1.0/profiles, behind the same interface as a local host's
 * (lib/host/profiles.ts). Options and devices are checked with lxq's tables before anything is
 * sent; the server checks them against its instances and applies a change to them itself.
 */
import { AlreadyExists, InvalidArgument } from '../../core/errors';
import { refuseUnknownKeys } from '../../core/keys';
import type { Devices } from '../../devices/declarations';
import { applyProfileChange, checkProfileInput, DEFAULT_PROFILE, type HostProfiles, PROFILE_INPUT_KEYS, type ProfileChange, type ProfileInput, type ProfileRecord, validateProfileName } from '../../instance/profiles';
import type { LxdClient } from './client';
import { type LxdObject, lxqConfig } from './convert';


/**
 * The profiles of an LXD server (`remote.profiles`).
 *
 * @example
 * ```ts
 * const lxd = await Host.connect();
 * await lxd.profiles.create('small', { config: { 'limits.memory': '256MiB' } });
 * ```
 */
export class RemoteProfiles implements HostProfiles {
  constructor(private readonly client: LxdClient) {}

  private url(name?: string, query: Record<string, string> = {}): string {
    return this.client.url(name === undefined ? '/1.0/profiles' : `/1.0/profiles/${encodeURIComponent(name)}`, query);
  }

  async list(): Promise<ProfileRecord[]> {
    const all = (await this.client.request('GET', this.url(undefined, { recursion: '1' }))).metadata as LxdObject[];
    return all.map(record).sort((a, b) => (a.name === DEFAULT_PROFILE ? -1 : b.name === DEFAULT_PROFILE ? 1 : a.name < b.name ? -1 : 1));
  }

  async get(name: string): Promise<ProfileRecord> {
    validateProfileName(name);
    return record((await this.client.request('GET', this.url(name))).metadata as LxdObject);
  }

  async create(name: string, input: ProfileInput = {}): Promise<ProfileRecord> {
    validateProfileName(name);
    const { config, devices, description } = checkProfileInput(name, input, 'remote');
    await this.client.call('POST', this.url(), { name, config, devices, description }).catch((e) => Promise.reject(e instanceof AlreadyExists || /already exists/i.test((e as Error).message) ? new AlreadyExists(`a profile named "${name}" already exists on ${this.client.where}`) : e));
    return this.get(name);
  }

  async update(name: string, change: ProfileChange): Promise<ProfileRecord> {
    validateProfileName(name);
    if (change === null || typeof change !== 'object' || Array.isArray(change)) throw new InvalidArgument('a profile change must be an object with config, devices or description');
    refuseUnknownKeys('profile change', change, PROFILE_INPUT_KEYS);
    const current = (await this.client.request('GET', this.url(name))).metadata as LxdObject;
    const next = checkProfileInput(name, applyProfileChange(record(current), change), 'remote');
    // The server's own keys (those lxq does not know: volatile.*, …) are sent back as they were.
    const foreign = Object.fromEntries(Object.entries((current.config ?? {}) as Record<string, string>).filter(([k]) => !(k in lxqConfig({ [k]: '' }))));
    await this.client.call('PUT', this.url(name), { config: { ...foreign, ...next.config }, devices: next.devices, description: next.description });
    return this.get(name);
  }

  async put(name: string, input: ProfileInput): Promise<ProfileRecord> {
    validateProfileName(name);
    const { config, devices, description } = checkProfileInput(name, input, 'remote');
    await this.client.call('PUT', this.url(name), { config, devices, description });
    return this.get(name);
  }

  async rename(name: string, newName: string): Promise<ProfileRecord> {
    validateProfileName(name);
    validateProfileName(newName);
    if (name === DEFAULT_PROFILE) throw new InvalidArgument('the default profile cannot be renamed');
    await this.client.call('POST', this.url(name), { name: newName });
    return this.get(newName);
  }

  async delete(name: string): Promise<void> {
    validateProfileName(name);
    if (name === DEFAULT_PROFILE) throw new InvalidArgument('the default profile cannot be deleted');
    await this.client.call('DELETE', this.url(name));
  }
}

/** LXD's profile as lxq's: its used_by URLs as instance names. */
function record(m: LxdObject): ProfileRecord {
  const usedBy = ((m.used_by ?? []) as string[]).map((u) => decodeURIComponent(u.split('?')[0].split('/').pop() ?? u));
  return { name: m.name, description: m.description ?? '', config: lxqConfig(m.config ?? {}), devices: (m.devices ?? {}) as Devices, usedBy };
}
