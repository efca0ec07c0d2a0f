/**
 * `host.copy`: the options and devices checked against the source's record first, the data
 * copied by the source's driver into a staging directory, moved into place by one rename and
 * the record written last (adoptStaged, which an import's extracted archive goes through too).
 */
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import type { InstanceConfigPatch } from '../config/options';
import { InvalidArgument } from '../core/errors';
import { markUnfinished, stagingPath, unmarkUnfinished } from '../core/staging';
import { BaseInstance } from '../instance/base';
import type { Instance, InstanceRecord } from '../instance/instance';
import { LXQ_ENTRY_PREFIX, validateName } from '../instance/names';
import { unmountUnder } from '../storage/pools/mounts';
import type { CopyOptions } from '../storage/types';
import type { IdMap } from '../drivers/container/host-facts';
import { configOptions, idmapAlloc, move, nic, validate } from './on-demand';
import { checkCopyOptions } from './options';
import { clearInterruptedCreate } from './records';

/** What a copy or an import needs of its host. */
export interface MakingHost {
  readonly instancesDir: string;
  get(name: string): Promise<Instance>;
  /** The instance of a directory and its record, through its type's driver. */
  open(dir: string, record: InstanceRecord): Instance;
  /** The host's id map for containers (a security.idmap.isolated copy or import gets a fresh range of it). */
  idmap(): IdMap;
}

/** Makes `target`, a copy of `source` (see Host.copy); the host then tracks and announces it. */
export async function copyInstance(host: MakingHost, source: string, target: string, options: CopyOptions): Promise<{ from: BaseInstance; copy: Instance }> {
  validateName(target);
  const ephemeral = checkCopyOptions(options);
  const from = await host.get(source);
  if (!(from instanceof BaseInstance)) throw new InvalidArgument(`"${source}" is not an lxq instance`);
  if (options.snapshot !== undefined) await from.snapshots.get(options.snapshot); // NotFound before any work
  const dir = path.join(host.instancesDir, target);
  await clearInterruptedCreate(dir, target);
  // Options and devices are checked against the source's record before anything is copied.
  const config = configOptions().patchConfig(from.type, from.config, (options.config ?? {}) as InstanceConfigPatch);
  if (from.type === 'container') configOptions().refuseCopiedIdChange(from.config, config);
  let range: InstanceRecord['idmap']; // security.idmap.isolated: the copy's own, allocated as the copy begins (a killed copy's is taken back: idmap-alloc.ts)
  const ownRange = async () => (range = await idmapAlloc().allocateIdRange(config, dir, host.idmap()));
  const withoutMac = (d: unknown) => {
    if ((d as { type?: string }).type !== 'nic') return d;
    const { hwaddr: _old, ...rest } = d as Record<string, unknown>;
    return rest;
  };
  const freshMacs = (devices: Record<string, unknown>) => Object.fromEntries(Object.entries(devices).filter(([, d]) => d !== null).map(([n, d]) => [n, withoutMac(d)]));
  const devices = (base: Record<string, unknown>) => nic().withHwaddrs(validate().normalizeDevices(from.type, freshMacs({ ...base, ...(options.devices ?? {}) })));
  devices({ ...from.devices });
  const staging = stagingPath(host.instancesDir, 'copy');
  await fs.mkdir(staging, { mode: 0o711 });
  try {
    const { ephemeral: _source, ...taken } = await from.copyData(staging, { snapshot: options.snapshot, snapshots: options.instanceOnly !== true, flatten: options.flatten === true, pool: options.pool, ownRange });
    const record: InstanceRecord = {
      ...taken,
      ...(ephemeral ? { ephemeral } : {}), // as `lxc copy`: not the source's
      name: target,
      config: options.snapshot === undefined ? config : configOptions().patchConfig(from.type, taken.config, (options.config ?? {}) as InstanceConfigPatch),
      devices: devices({ ...(taken.devices ?? {}) }),
      createdAt: new Date().toISOString(),
      ...(taken.type === 'vm' && taken.imageMeta.init === 'systemd' ? { machineId: move().newMachineId() } : {}),
      ...(range ? { idmap: range } : {}),
    };
    return { from, copy: await adoptStaged(host, staging, dir, record) };
  } catch (e) {
    await fs.rm(staging, { recursive: true, force: true });
    if (range) await idmapAlloc().releaseIdRange(range);
    throw e;
  }
}

/**
 * Moves a staged instance directory (a copy's, an import's) into place by one rename, then lets
 * its driver derive what it needs (liblxc's config) and writes the record last.
 */
export async function adoptStaged(host: MakingHost, staged: string, dir: string, record: InstanceRecord): Promise<Instance> {
  // lxq's own state files come from no archive: a planted restore journal would be rolled forward (paths, record) by the next open.
  for (const n of await fs.readdir(staged)) if (n.startsWith(LXQ_ENTRY_PREFIX)) await fs.rm(path.join(staged, n), { recursive: true, force: true });
  // Until the record is written the directory names this process: if it dies, the next create of the name or Host.open clears it.
  await markUnfinished(staged);
  await move().moveInstanceDir(staged, dir, record.name);
  const instance = host.open(dir, record);
  await (instance as BaseInstance).loadProfiles();
  await (instance as BaseInstance).completeCopy().catch(async (e) => {
    await unmountUnder(dir);
    await fs.rm(dir, { recursive: true, force: true });
    throw e;
  });
  await unmarkUnfinished(dir);
  return instance;
}
