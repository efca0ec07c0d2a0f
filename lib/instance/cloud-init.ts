/**
 * cloud-init's NoCloud seed from an instance's cloud-init.* options (and LXD's older user.*
 * forms): meta-data (instance-id, local-hostname), user-data, vendor-data and network-config.
 * The drivers put it where cloud-init looks: a container's /var/lib/cloud/seed/nocloud/, a VM's
 * disk labelled `cidata`. The instance-id is kept in the instance's directory and renewed when
 * the seed changes, so that cloud-init runs its once-per-instance modules again (as LXD does with
 * volatile.cloud-init.instance-id).
 */
import { createHash, randomUUID } from 'node:crypto';
import { promises as fs } from 'node:fs';
import * as path from 'node:path';

import type { InstanceConfig } from '../config/options';
import { isCloudConfig, parseYaml } from '../config/options/cloud-init';
import { readJson, writeJsonAtomic } from '../core/fs';
import type { InstanceFiles } from './files';

// eslint-disable-next-line @typescript-eslint/no-require-imports -- only a seed with ssh keys needs it (a VM's launch loads this module)
const yaml = (): typeof import('yaml') => require('yaml');

/** The seed's files by name, as cloud-init's NoCloud datasource reads them. */
export type CloudSeed = Record<string, string>;

/** Where a container's seed goes (NoCloud's seed directory). */
export const CONTAINER_SEED_DIR = '/var/lib/cloud/seed/nocloud';

/** The record kept beside the instance's: the seed's digest and its instance-id. */
const STATE_FILE = 'cloud-init.json';

const KINDS = ['user-data', 'vendor-data', 'network-config'] as const;

/** cloud-init.KIND, else LXD's older user.KIND. */
function effective(config: InstanceConfig, kind: (typeof KINDS)[number]): string | undefined {
  return config[`cloud-init.${kind}`] || config[`user.${kind}`] || undefined;
}

/** The cloud-init.ssh-keys.* values by user: the public keys and the import ids. */
function sshKeys(config: InstanceConfig): Map<string, { keys: string[]; ids: string[] }> {
  const users = new Map<string, { keys: string[]; ids: string[] }>();
  for (const [key, value] of Object.entries(config).sort(([a], [b]) => a.localeCompare(b))) {
    if (!key.startsWith('cloud-init.ssh-keys.') || value === 'none') continue;
    const i = value.indexOf(':');
    const [user, k] = [value.slice(0, i), value.slice(i + 1)];
    const entry = users.get(user) ?? { keys: [], ids: [] };
    (k.includes(' ') ? entry.keys : entry.ids).push(k);
    users.set(user, entry);
  }
  return users;
}

type Mapping = Record<string, unknown>;
const parsed = (text: string | undefined): Mapping | undefined => {
  if (text === undefined) return {};
  if (!isCloudConfig(text)) return undefined; // a script: nothing to merge into
  return (parseYaml(text) as Mapping | null) ?? {};
};

/** Adds the keys to `doc`'s `users:` (a user named there gets them; else a new entry), as LXD's cloudinit package does. */
function mergeKeys(doc: Mapping, users: Map<string, { keys: string[]; ids: string[] }>): string {
  const list: unknown[] = Array.isArray(doc.users) ? [...(doc.users as unknown[])] : doc.users === undefined ? [] : [doc.users];
  for (const [name, { keys, ids }] of users) {
    let i = list.findIndex((u) => u === name || (u !== null && typeof u === 'object' && (u as Mapping).name === name));
    if (i < 0) i = list.push({ name }) - 1;
    const user: Mapping = typeof list[i] === 'string' ? { name } : { ...(list[i] as Mapping) };
    const add = (field: string, values: string[]) => {
      if (!values.length) return;
      const had = user[field] === undefined ? [] : ([] as unknown[]).concat(user[field]);
      user[field] = [...had, ...values.filter((v) => !had.includes(v))];
    };
    add('ssh_authorized_keys', keys);
    add('ssh_import_id', ids);
    list[i] = user;
  }
  return `#cloud-config\n${yaml().stringify({ ...doc, users: list }, { lineWidth: 0 })}`;
}

/**
 * LXD's network-config when none is given: its images' cloud-init template ("DHCP on eth0", in
 * distrobuilder's generator), version 1, DHCP on the instance's first NIC, `nic` its name inside.
 */
export function defaultNetworkConfig(nic: string): string {
  return ['version: 1', 'config:', '  - type: physical', `    name: ${JSON.stringify(nic)}`, '    subnets:', '      - type: dhcp', '        control: auto', ''].join('\n');
}

/** The seed's data files for `config`, or undefined when no cloud-init key is set; `nic`: the first NIC's name inside, if any (LXD's default network-config). */
export function seedData(config: InstanceConfig, nic?: string): CloudSeed | undefined {
  const [user, vendor, network] = KINDS.map((k) => effective(config, k));
  const users = sshKeys(config);
  if (user === undefined && vendor === undefined && network === undefined && users.size === 0) return undefined;
  const files: CloudSeed = { 'user-data': user ?? '#cloud-config\n', 'vendor-data': vendor ?? '#cloud-config\n' };
  if (network !== undefined) files['network-config'] = network;
  else if (nic !== undefined) files['network-config'] = defaultNetworkConfig(nic);
  if (users.size === 0) return files;
  // As LXD: into vendor-data when it is cloud-config; into user-data too unless that would replace vendor-data's users.
  const [u, v] = [parsed(user), parsed(vendor)];
  if (v) files['vendor-data'] = mergeKeys(v, users);
  if (u && (u.users !== undefined || !v || v.users === undefined)) files['user-data'] = mergeKeys(u, users);
  return files;
}

/**
 * The seed to give the instance `hostname` at this start (undefined: none), with meta-data; its
 * instance-id is the last one unless the seed changed. `dir` is the instance's directory; `nic`
 * the name its first NIC has inside (none: no NIC).
 */
export async function cloudSeed(dir: string, config: InstanceConfig, hostname: string, nic?: string): Promise<CloudSeed | undefined> {
  const file = path.join(dir, STATE_FILE);
  const data = seedData(config, nic);
  if (!data) {
    await fs.rm(file, { force: true });
    return undefined;
  }
  const digest = createHash('sha256').update(JSON.stringify([hostname, data])).digest('hex');
  const state = await readJson<{ digest?: string; instanceId?: string }>(file).catch(() => undefined);
  let instanceId = state?.instanceId;
  if (state?.digest !== digest || !instanceId) {
    instanceId = randomUUID();
    await writeJsonAtomic(file, { digest, instanceId });
  }
  return { 'meta-data': `instance-id: ${instanceId}\nlocal-hostname: ${hostname}\n`, ...data };
}

/** Whether the instance in `dir` was given a seed at its last start. */
export async function hadSeed(dir: string): Promise<boolean> {
  return fs.access(path.join(dir, STATE_FILE)).then(() => true, () => false);
}

/**
 * Writes `seed` into a stopped container's root (files 0600, root's), replacing the seed
 * directory's files; no seed: the directory lxq wrote before is removed.
 */
export async function writeContainerSeed(files: InstanceFiles, seed: CloudSeed | undefined, hadOne: boolean): Promise<void> {
  if (!seed) {
    if (hadOne) await files.remove(CONTAINER_SEED_DIR, { recursive: true }).catch(() => undefined);
    return;
  }
  await files.mkdir(path.posix.dirname(CONTAINER_SEED_DIR), { parents: true, mode: 0o755 });
  await files.remove(CONTAINER_SEED_DIR, { recursive: true }).catch(() => undefined);
  await files.mkdir(CONTAINER_SEED_DIR, { mode: 0o700 });
  for (const [name, text] of Object.entries(seed)) await files.write(`${CONTAINER_SEED_DIR}/${name}`, text, { mode: 0o600 });
}

/** Writes `seed` as the files of the host directory `seedDir` (made anew), for a VM's `cidata` disk. */
export async function writeSeedDir(seedDir: string, seed: CloudSeed): Promise<void> {
  await fs.rm(seedDir, { recursive: true, force: true });
  await fs.mkdir(seedDir, { mode: 0o700 });
  for (const [name, text] of Object.entries(seed)) await fs.writeFile(path.join(seedDir, name), text, { mode: 0o600 });
}
