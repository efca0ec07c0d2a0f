/**
 * Instance records from elsewhere: an export's `lxq-export.json` and its snapshots'
 * `snapshot.json`. They are hostile input (README.md, "Copy, rename, export and import"): each is checked exactly as
 * `create` checks what a caller gives it (name, image name, options, devices) and as the image
 * store checks an image's metadata, and what would give the instance power over the host is
 * refused unless the caller consents. LXD restores a backup's config as an admin operation;
 * lxq's import is used on archives from anywhere.
 */
import { validateConfig } from '../config/options';
import { checkRootLimits, devicePath, normalizeDevices } from '../devices/validate';
import { DISK_LIMITS, type RootLimits } from '../devices/declarations';
import { InvalidArgument, NotSupported, PermissionDenied } from '../core/errors';
import { checkContainerImageMeta, checkVmImageMeta, isImageName } from '../images/meta';
import { refuseUnknownKeys } from '../core/keys';
import type { InstanceRecord } from './instance';
import { validatePoolName } from '../storage/pools/pools';
import { validateName } from './names';
import { checkProfileList } from './profiles';

/**
 * What an import may let the instance do to its host. `'host-access'` accepts records that
 * reach into the host (raw liblxc or QEMU configuration, a privileged container, host paths,
 * device nodes, proxies listening on the host, NICs on a host bridge); without it they are
 * refused with PermissionDenied naming each.
 *
 * @example
 * ```ts
 * const trust: ImportTrust = 'host-access';
 * await host.import('./from-my-own-backup.tar.zst', { trust });
 * ```
 */
export type ImportTrust = 'host-access';

const RECORD_KEYS = ['version', 'name', 'type', 'image', 'imageMeta', 'config', 'devices', 'createdAt', 'machineId', 'pool', 'rootSize', 'rootLimits', 'ephemeral', 'profiles', 'idmap'];
const MACHINE_ID = /^[0-9a-f]{32}$/;

function invalid(where: string, e: unknown): InvalidArgument {
  return new InvalidArgument(`${where}: ${(e as Error).message}`);
}

/** A record's root disk limits, checked as create checks them (only their keys, as strings). */
function checkRecordRootLimits(where: string, type: 'container' | 'vm', input: unknown): RootLimits | undefined {
  if (input === undefined) return undefined;
  try {
    if (input === null || typeof input !== 'object' || Array.isArray(input)) throw new Error('rootLimits must be an object');
    refuseUnknownKeys('rootLimits', input as Record<string, unknown>, [...DISK_LIMITS]);
    return checkRootLimits(type, input as Record<string, unknown>);
  } catch (e) {
    throw e instanceof NotSupported ? e : invalid(where, e);
  }
}

/** A record from an archive, checked as create checks its input; returns it normalized (a VM's `imageMeta.dir` is the caller's to set). */
export function checkForeignRecord(where: string, input: unknown): InstanceRecord {
  if (input === null || typeof input !== 'object' || Array.isArray(input)) throw new InvalidArgument(`${where} is not an instance record`);
  const r = input as Record<string, unknown>;
  try {
    refuseUnknownKeys('record', r, RECORD_KEYS);
  } catch (e) {
    throw invalid(where, e);
  }
  if (r.version !== 1) throw new InvalidArgument(`${where}: record version ${JSON.stringify(r.version)} is not one this lxq reads (1)`);
  if (r.type !== 'container' && r.type !== 'vm') throw new InvalidArgument(`${where}: type must be "container" or "vm", got ${JSON.stringify(r.type)}`);
  const type = r.type;
  try {
    validateName(r.name);
  } catch (e) {
    throw invalid(where, e);
  }
  if (typeof r.image !== 'string' || !isImageName(r.image)) throw new InvalidArgument(`${where}: image must be an image name, got ${JSON.stringify(r.image)}`);
  const imageMeta = (() => {
    if (type === 'container') return checkContainerImageMeta(`${where}: imageMeta`, r.imageMeta);
    const { dir: _dir, ...rest } = (r.imageMeta ?? {}) as Record<string, unknown>;
    return checkVmImageMeta(`${where}: imageMeta`, rest);
  })();
  let config, devices;
  try {
    if (r.config !== undefined && Object.values(r.config as object).some((v) => typeof v !== 'string')) throw new Error('option values in a record are strings');
    config = validateConfig(type, r.config as Record<string, unknown> | undefined);
    devices = normalizeDevices(type, r.devices);
  } catch (e) {
    throw invalid(where, e);
  }
  // The pool it was exported from: checked, then dropped (an import's root is a whole tree, on the dir pool).
  try {
    if (r.pool !== undefined) validatePoolName(r.pool);
    // Its root's size limit goes with the pool: the dir pool keeps none.
    if (r.rootSize !== undefined && !(Number.isSafeInteger(r.rootSize) && (r.rootSize as number) > 0)) throw new Error('rootSize must be a positive integer');
  } catch (e) {
    throw invalid(where, e);
  }
  // Its root's I/O limits go with the instance, whatever its pool.
  const rootLimits = checkRecordRootLimits(where, type, r.rootLimits);
  if (r.machineId !== undefined && (typeof r.machineId !== 'string' || !MACHINE_ID.test(r.machineId))) {
    throw new InvalidArgument(`${where}: machineId must be 32 lower-case hex digits`);
  }
  if (r.ephemeral !== undefined && typeof r.ephemeral !== 'boolean') throw new InvalidArgument(`${where}: ephemeral must be a boolean`);
  // A container's own id range where it was exported (security.idmap.isolated): only where its files are; the import gives it a new one.
  const idmap = r.idmap as { base?: unknown; size?: unknown } | undefined;
  const id = (n: unknown) => Number.isSafeInteger(n) && (n as number) >= 0 && (n as number) < 2 ** 32;
  if (idmap !== undefined && (type !== 'container' || typeof idmap !== 'object' || idmap === null || Object.keys(idmap).some((k) => k !== 'base' && k !== 'size') || !id(idmap.base) || !id(idmap.size))) {
    throw new InvalidArgument(`${where}: idmap must be a container's { base, size } of ids`);
  }
  let profiles;
  try {
    profiles = r.profiles === undefined ? undefined : checkProfileList(r.profiles);
  } catch (e) {
    throw invalid(where, e);
  }
  return {
    version: 1,
    name: r.name as string,
    type,
    image: r.image,
    imageMeta,
    config,
    devices,
    createdAt: typeof r.createdAt === 'string' ? r.createdAt : new Date().toISOString(),
    ...(r.machineId !== undefined ? { machineId: r.machineId as string } : {}),
    ...(rootLimits ? { rootLimits } : {}),
    // As LXD's backups: an exported ephemeral instance is imported ephemeral.
    ...(r.ephemeral === true ? { ephemeral: true } : {}),
    // The profiles it names, which the importing host must have (Host.import checks them).
    ...(profiles ? { profiles } : {}),
    ...(idmap !== undefined ? { idmap: { base: idmap.base as number, size: idmap.size as number } } : {}),
  };
}

/** What in `record` reaches into the host, one phrase each ("option raw.lxc", "device data: disk source /srv"). */
export function hostAccessOf(record: InstanceRecord): string[] {
  const out: string[] = [];
  for (const key of Object.keys(record.config)) if (key.startsWith('raw.')) out.push(`option ${key}`);
  if (record.config['security.privileged'] === 'true') out.push('option security.privileged=true');
  for (const [name, d] of Object.entries(record.devices ?? {})) {
    if (d.type === 'disk' && d.source !== undefined) out.push(`device ${name}: disk source ${d.source}`);
    else if (d.type === 'unix-char' || d.type === 'unix-block') out.push(`device ${name}: ${d.type} ${d.source ?? `${d.major}:${d.minor}`} at ${devicePath(d)}`);
    else if (d.type === 'proxy') out.push(`device ${name}: proxy ${['instance', 'guest', 'container'].includes(d.bind ?? '') ? `connecting to the host at ${d.connect}` : `listening on the host at ${d.listen}`}`);
    else if (d.type === 'nic' && d.parent !== undefined) out.push(`device ${name}: nic on the host bridge ${d.parent}`);
    else if (d.type === 'unix-hotplug') out.push(`device ${name}: unix-hotplug of the host's nodes matching ${['vendorid', 'productid', 'subsystem'].filter((k) => d[k] !== undefined).map((k) => `${k} ${d[k]}`).join(', ')}`);
  }
  return out;
}

/** PermissionDenied naming every grant of host access in `records` unless `trust` accepts them. */
export function refuseHostAccess(file: string, records: Array<{ label: string; record: InstanceRecord }>, trust: ImportTrust | undefined): void {
  if (trust === 'host-access') return;
  const grants = records.flatMap(({ label, record }) => hostAccessOf(record).map((g) => `${label}: ${g}`));
  if (grants.length === 0) return;
  throw new PermissionDenied(
    `${file} would give the instance access to this host (${grants.join('; ')}); import it with { trust: 'host-access' } (lxq import --allow-host-access) if you trust its source`,
  );
}
