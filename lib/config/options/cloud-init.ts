/**
 * LXD's cloud-init group: the NoCloud seed lxq gives an instance (lib/instance/cloud-init.ts
 * writes it). Values are checked here as LXD does, a little more strictly: cloud-config must be
 * YAML that parses to a mapping, and an ssh key is a public key or an import id.
 */
import type { OptionSpec } from './spec';

// eslint-disable-next-line @typescript-eslint/no-require-imports -- loaded when a cloud-init value is checked: requiring yaml took 0.5-0.8 s here at a load average of 20, a cost for every process that reads options
const yaml = (): typeof import('yaml') => require('yaml');

/** First lines cloud-init takes besides `#cloud-config` and `#!` (its other user-data formats). */
const OTHER_FORMATS = ['#include', '#cloud-boothook', '#part-handler', 'Content-Type: multipart/'];

/** The YAML `text` as a value; throws the parser's first error. */
export function parseYaml(text: string): unknown {
  const doc = yaml().parseDocument(text, { prettyErrors: false });
  if (doc.errors.length) throw new Error(`YAML does not parse: ${doc.errors[0].message.split('\n')[0]}`);
  return doc.toJS();
}

const isMapping = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === 'object' && !Array.isArray(v);

/** Is `text` cloud-config (its first line `#cloud-config`)? */
export const isCloudConfig = (text: string): boolean => text.split('\n', 1)[0].trimEnd() === '#cloud-config';

/** user-data and vendor-data: cloud-config whose YAML is a mapping, a script, or one of cloud-init's other formats. */
export function checkUserData(v: string): void {
  if (v === '') return;
  if (isCloudConfig(v)) {
    const value = parseYaml(v);
    if (value !== null && value !== undefined && !isMapping(value)) throw new Error('cloud-config must be a YAML mapping (keys such as runcmd:, users:)');
    return;
  }
  if (v.startsWith('#!') || OTHER_FORMATS.some((f) => v.startsWith(f))) return;
  throw new Error('expected cloud-config (a first line "#cloud-config", then YAML) or a script (a first line "#!…")');
}

/** network-config: a YAML mapping (cloud-init's network config version 1 or 2). */
export function checkNetworkConfig(v: string): void {
  if (v === '') return;
  const value = parseYaml(v);
  if (!isMapping(value)) throw new Error('network-config must be a YAML mapping (e.g. "version: 2" and "ethernets:")');
}

const USER_NAME = /^[a-z_][a-z0-9_.-]{0,31}$/i;
const PUBLIC_KEY = /^(ssh-[a-z0-9-]+|ecdsa-sha2-[a-z0-9-]+|sk-[a-z0-9@.-]+) [A-Za-z0-9+/]+={0,3}( .*)?$/;
const IMPORT_ID = /^(gh|lp):[A-Za-z0-9_.-]+$/;

/** cloud-init.ssh-keys.NAME: `user:key` (a public key, or an import id `gh:name`/`lp:name`), or `none`. */
export function checkSshKey(v: string): void {
  if (v === 'none') return;
  const i = v.indexOf(':');
  const [user, key] = i < 0 ? [v, ''] : [v.slice(0, i), v.slice(i + 1)];
  if (i < 0 || key === '') throw new Error('expected "user:key" (e.g. "alice:ssh-ed25519 AAAA… alice@laptop" or "alice:gh:alice"), or "none"');
  if (!USER_NAME.test(user)) throw new Error(`bad user name ${JSON.stringify(user)} (letters, digits, "_", ".", "-"; at most 32)`);
  if (!PUBLIC_KEY.test(key) && !IMPORT_ID.test(key)) {
    throw new Error(`the key of ${JSON.stringify(user)} is neither a public key ("ssh-ed25519 AAAA… comment") nor an import id ("gh:name", "lp:name")`);
  }
}

const SEED = 'Written as the NoCloud seed before the next start (a changed seed gets a new instance-id, so cloud-init runs again); read by an image with cloud-init (`debian/12/cloud`)';
const LEGACY = (key: string): string => `LXD's older form of \`cloud-init.${key}\`, used when that key is unset.`;

export const CLOUD_INIT_OPTIONS: readonly OptionSpec[] = [
  {
    key: 'cloud-init.network-config',
    type: 'lines',
    condition: 'both',
    live: false,
    default: 'DHCP on eth0',
    description: `cloud-init's network-config (YAML, version 1 or 2). ${SEED}. Absent in a seed: LXD's default (its images' template), version 1 DHCP on the first NIC (by device name; inside, a container's NIC name, a VM's eth0).`,
    validate: checkNetworkConfig,
  },
  {
    key: 'cloud-init.ssh-keys.*',
    type: 'string',
    condition: 'both',
    live: false,
    description: '`user:key`: a public key (or an import id `gh:name`, `lp:name`) added to that user\'s `ssh_authorized_keys` in the user-data (and vendor-data), as LXD merges them; `none` adds nothing.',
    validate: checkSshKey,
  },
  {
    key: 'cloud-init.user-data',
    type: 'lines',
    condition: 'both',
    live: false,
    default: '#cloud-config',
    description: `cloud-init's user-data: \`#cloud-config\` then YAML, or a script (\`#!\`). ${SEED}.`,
    validate: checkUserData,
  },
  {
    key: 'cloud-init.vendor-data',
    type: 'lines',
    condition: 'both',
    live: false,
    default: '#cloud-config',
    description: `cloud-init's vendor-data (as user-data; user-data wins where both set a key). ${SEED}.`,
    validate: checkUserData,
  },
  { key: 'user.network-config', type: 'lines', condition: 'both', live: false, default: 'DHCP on eth0', description: LEGACY('network-config'), validate: checkNetworkConfig },
  { key: 'user.user-data', type: 'lines', condition: 'both', live: false, default: '#cloud-config', description: LEGACY('user-data'), validate: checkUserData },
  { key: 'user.vendor-data', type: 'lines', condition: 'both', live: false, default: '#cloud-config', description: LEGACY('vendor-data'), validate: checkUserData },
];
