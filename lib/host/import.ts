/**
 * `host.import`: an export of lxq's, hostile input, listed and checked whole (its members, its
 * records as `create` checks its input, what would reach into the host) before anything is
 * extracted; extracted in a staging directory and moved into place as a copy is (adoptStaged).
 */
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { InvalidArgument, NotFound } from '../core/errors';
import { refuseUnknownKeys } from '../core/keys';
import { stagingPath } from '../core/staging';
import type { ImageStore } from '../images/store';
import type { Instance, InstanceRecord } from '../instance/instance';
import { validateName } from '../instance/names';
import type { HostStorage } from '../storage/pools/host-storage';
import { adoptStaged, type MakingHost } from './copy';
import { archive, foreign, idmapAlloc, meta } from './on-demand';
import { IMPORT_OPTION_KEYS, type ImportOptions } from './options';
import type { Profiles } from './profiles';
import { clearInterruptedCreate } from './records';

/** What an import needs of its host besides a copy's. */
export interface ImportingHost extends MakingHost {
  readonly profiles: Profiles;
  readonly storage: HostStorage;
  /** The image store (loaded on first use). */
  images(): ImageStore;
}

/** Makes an instance of the export `file` (see Host.import); the host then tracks and announces it. */
export async function importInstance(host: ImportingHost, file: string, options: ImportOptions): Promise<Instance> {
  if (typeof file !== 'string' || !file) throw new InvalidArgument('import needs a file path');
  if (options === null || typeof options !== 'object') throw new InvalidArgument('import options must be an object');
  refuseUnknownKeys('import', options, IMPORT_OPTION_KEYS);
  if (options.name !== undefined) validateName(options.name);
  if (options.trust !== undefined && options.trust !== 'host-access') throw new InvalidArgument(`trust must be "host-access" or absent, got ${JSON.stringify(options.trust)}`);
  await fs.access(file).catch(() => Promise.reject(new NotFound(`${file} does not exist`)));
  const checked = await archive().readExport(file, await archive().checkArchive(file));
  foreign().refuseHostAccess(file, [{ label: 'the instance', record: checked.meta.record }, ...[...checked.snapshots].map(([n, s]) => ({ label: `snapshot ${n}`, record: s.record }))], options.trust);
  const name = validateName(options.name ?? checked.meta.record.name);
  const record: InstanceRecord = { ...checked.meta.record, name, createdAt: new Date().toISOString() };
  await host.profiles.checkImported(file, record); // as LXD's import: the profiles it names must exist here
  const image = record.type === 'vm' ? await host.images().get(record.image, { type: 'vm' }) : undefined;
  await host.storage.adoptImported(record);
  if (image) record.imageMeta = { ...record.imageMeta, dir: image.dir };
  const staging = stagingPath(host.instancesDir, 'import');
  await fs.mkdir(staging, { mode: 0o711 });
  try {
    await archive().extractArchive(file, checked, staging);
    const dir = path.join(host.instancesDir, name);
    await clearInterruptedCreate(dir, name);
    const top = path.join(staging, archive().ARCHIVE_TOP);
    if (record.type === 'container' && (await fs.lstat(path.join(top, 'rootfs')).catch(() => undefined))?.isDirectory() !== true) {
      throw new InvalidArgument(`${file} is not a complete lxq export (no rootfs)`);
    }
    const own = await idmapAlloc().placeImported(top, record, dir, host.idmap()); // security.idmap.isolated: a fresh range
    if (image) await archive().checkImportedVmDisk(file, path.join(top, 'disk.qcow2'), path.join(image.dir, meta().checkVmImageFiles('image', image.meta.files).disk));
    return await adoptStaged(host, top, dir, record).catch(async (e) => Promise.reject(own ? await idmapAlloc().releaseIdRange(own).then(() => e) : e));
  } finally {
    await fs.rm(staging, { recursive: true, force: true });
  }
}
