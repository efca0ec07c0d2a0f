/**
 * Images in LXD's unified tarball format: `metadata.yaml` beside `rootfs/` (a container) or
 * `rootfs.img` (a VM's qcow2), compressed by the file's extension (`.tar.xz`, `.tar.gz`, `.tar`).
 * lxq's VM images boot Debian's kernel directly, without firmware, so their export carries the
 * kernel and initramfs under `lxq/` (LXD ignores the extra files), and only such VM images import.
 *
 * An import is checked before anything is unpacked: the listing (a truncated archive fails
 * there), every member (inside the image, none under a symlink, links pointing inside: see
 * lib/core/tar.ts), the metadata (present, YAML, an architecture this host runs, the file names
 * lxq.meta gives), a VM disk's format (qcow2, no backing or data file) before any rename.
 */
import { createHash } from 'node:crypto';
import { createReadStream, promises as fs } from 'node:fs';
import * as path from 'node:path';
import { parse as parseYaml, stringify as toYaml } from 'yaml';

import type { InstanceType } from '../config/options';
import { InvalidArgument, NotSupported } from '../core/errors';
import { run } from './build-tools';
import type { Image } from './catalog';
import { checkContainerImageMeta, checkVmImageMeta, type ContainerImageMeta, refuseControlCharsDeep } from './meta';
import { checkMembers, listTar } from '../core/tar';

/** The architectures this host runs, as LXD names them. */
const HOST_ARCHITECTURES = ['x86_64', 'amd64'];

function compressor(file: string): string[] {
  if (file.endsWith('.tar.xz') || file.endsWith('.txz')) return ['-I', 'xz -T0 -3'];
  if (file.endsWith('.tar.gz') || file.endsWith('.tgz')) return ['-z'];
  if (file.endsWith('.tar')) return [];
  throw new InvalidArgument(`export file name must end with .tar.xz, .tar.gz or .tar, got ${JSON.stringify(file)}`);
}

export interface LxdMetadata {
  architecture: string;
  creation_date: number;
  properties: Record<string, string>;
  templates: Record<string, unknown>;
}

/** Writes `image` to `file` (atomically: a temporary file beside it, renamed). */
export async function exportImage(image: Image, file: string): Promise<void> {
  const compress = compressor(file);
  const work = await fs.mkdtemp(path.join(path.dirname(image.dir), '.export-'));
  const tmp = `${file}.tmp-${process.pid}`;
  try {
    const meta: LxdMetadata = {
      architecture: 'x86_64',
      creation_date: Math.floor(Date.parse(image.createdAt) / 1000),
      properties: {
        description: `lxq ${image.name} (${image.type})`,
        os: String(image.meta.os ?? image.name.split('/')[0]),
        release: String(image.meta.release ?? ''),
        'lxq.name': image.name,
        'lxq.type': image.type,
        'lxq.meta': JSON.stringify(image.meta),
      },
      templates: {},
    };
    await fs.writeFile(path.join(work, 'metadata.yaml'), toYaml(meta));
    await fs.mkdir(path.join(work, 'templates'));
    const args = ['-c', ...compress, '-f', tmp, '--numeric-owner', '-C', work, 'metadata.yaml', 'templates', '-C', image.dir];
    if (image.type === 'container') args.push('rootfs');
    else {
      const files = image.meta.files as { kernel: string; initrd: string; disk: string };
      args.push('--transform', `s,^${files.disk}$,rootfs.img,;s,^${files.kernel}$,lxq/${files.kernel},;s,^${files.initrd}$,lxq/${files.initrd},`, files.disk, files.kernel, files.initrd);
    }
    await run('tar', args);
    await fs.rename(tmp, file);
  } catch (e) {
    await fs.rm(tmp, { force: true });
    throw e;
  } finally {
    await fs.rm(work, { recursive: true, force: true });
  }
}

/** The sha256 of a file, streamed. */
export function fileDigest(file: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const h = createHash('sha256');
    createReadStream(file)
      .on('data', (d) => h.update(d))
      .once('error', reject)
      .once('end', () => resolve(h.digest('hex')));
  });
}

export interface Unpacked {
  type: InstanceType;
  metadata: LxdMetadata;
  /** ContainerImageMeta for a container; the VM image's files for a VM. */
  meta: Record<string, unknown>;
}

/** What an image archive's top level may hold (LXD's unified format, and lxq's kernel and initramfs). */
const IMAGE_TOP = new Set(['metadata.yaml', 'templates', 'rootfs', 'rootfs.img', 'lxq']);

function parseLxqMeta(file: string, text: string | undefined): Record<string, unknown> | undefined {
  if (text === undefined) return undefined;
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (e) {
    throw new InvalidArgument(`${file}: metadata.yaml's lxq.meta is not JSON: ${(e as Error).message}`);
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) throw new InvalidArgument(`${file}: metadata.yaml's lxq.meta is not an object`);
  return value as Record<string, unknown>;
}

/** The archive's metadata.yaml, read without extracting anything, and checked. */
async function readMetadata(file: string): Promise<LxdMetadata> {
  let metadata: LxdMetadata;
  try {
    metadata = parseYaml(await run('tar', ['-xOf', file, 'metadata.yaml'], { maxBuffer: 1024 * 1024 })) as LxdMetadata;
  } catch (e) {
    throw new InvalidArgument(`${file} has a malformed metadata.yaml: ${(e as Error).message}`);
  }
  if (!metadata || typeof metadata !== 'object' || typeof metadata.architecture !== 'string') {
    throw new InvalidArgument(`${file}: metadata.yaml names no architecture`);
  }
  if (!HOST_ARCHITECTURES.includes(metadata.architecture)) {
    throw new InvalidArgument(`${file} is for ${JSON.stringify(metadata.architecture)}, which this host (x86_64) cannot run`);
  }
  const props = metadata.properties ?? {};
  if (typeof props !== 'object' || Array.isArray(props) || Object.values(props).some((v) => typeof v !== 'string')) {
    throw new InvalidArgument(`${file}: metadata.yaml's properties must be strings`);
  }
  refuseControlCharsDeep(`${file}: metadata.yaml properties`, Object.fromEntries(Object.entries(props).filter(([k]) => k !== 'lxq.meta')));
  return metadata;
}

/** A VM image's disk as the archive brings it: a qcow2 standing alone (a backing file or data file would reach into the host). */
async function checkVmDisk(file: string, disk: string): Promise<void> {
  const info = JSON.parse(await run('qemu-img', ['info', '--output=json', '-f', 'qcow2', disk]).catch(async () => {
    const probed = JSON.parse(await run('qemu-img', ['info', '--output=json', disk]).catch(() => '{"format":"unreadable"}')) as { format: string };
    throw new InvalidArgument(`${file}: rootfs.img is ${probed.format}, not qcow2`);
  })) as { format: string; 'backing-filename'?: string; 'format-specific'?: { data?: { 'data-file'?: string } } };
  if (info['backing-filename'] !== undefined) throw new InvalidArgument(`${file}: rootfs.img names a backing file (${JSON.stringify(info['backing-filename'])}); an image's disk must stand alone`);
  if (info['format-specific']?.data?.['data-file'] !== undefined) throw new InvalidArgument(`${file}: rootfs.img names an external data file; an image's disk must stand alone`);
}

/**
 * Unpacks `file` into `dir` (empty) as an image of the store's shape. Everything is checked
 * before it is unpacked (members, metadata, the names lxq.meta gives files), the VM disk's format
 * before anything is renamed: a refused archive leaves `dir` to be removed, nothing elsewhere.
 */
export async function unpackImage(file: string, dir: string): Promise<Unpacked> {
  await fs.access(file).catch(() => {
    throw new InvalidArgument(`no file ${file} to import`);
  });
  const members = await listTar(file, 'image archive');
  const names = checkMembers(file, members);
  const kinds = new Map(members.map((m, i) => [names[i], m.kind]));
  for (const n of names) {
    if (n !== '' && n !== '.' && !IMAGE_TOP.has(n.split('/')[0])) throw new InvalidArgument(`${file} is refused: member ${JSON.stringify(n)} is not part of an image (metadata.yaml, templates/, rootfs/, rootfs.img, lxq/)`);
  }
  if (kinds.get('metadata.yaml') !== '-') throw new InvalidArgument(`${file} has no metadata.yaml: not an image in LXD's format`);
  const metadata = await readMetadata(file);
  const props = (metadata.properties ?? {}) as Record<string, string>;
  const type: InstanceType = names.includes('rootfs.img') ? 'vm' : 'container';
  const rootfs = kinds.get('rootfs') ?? (names.some((n) => n.startsWith('rootfs/')) ? 'd' : undefined);
  if (type === 'container' && rootfs !== 'd') throw new InvalidArgument(`${file} has neither a rootfs/ directory nor rootfs.img`);
  const lxqMeta = parseLxqMeta(file, props['lxq.meta']);
  if (type === 'vm') {
    if (!lxqMeta) throw new NotSupported(`${file} is a VM image without lxq's kernel and initramfs: lxq boots VMs without firmware, so only VM images exported by lxq import`);
    const files = checkVmImageMeta(`${file}: lxq.meta`, lxqMeta).files;
    for (const member of ['rootfs.img', `lxq/${files.kernel}`, `lxq/${files.initrd}`]) {
      if (kinds.get(member) !== '-') throw new NotSupported(`${file} has no regular file ${member}: lxq boots VMs without firmware, so only VM images exported by lxq (disk, kernel, initramfs) import`);
    }
  }
  const known = type === 'container' && lxqMeta?.haltSignal !== undefined ? checkContainerImageMeta(`${file}: lxq.meta`, { haltSignal: lxqMeta.haltSignal, ...(lxqMeta.init ? { init: lxqMeta.init } : {}) }) : undefined;
  await run('tar', ['-xpf', file, '--numeric-owner', '--no-overwrite-dir', '-C', dir]);
  if (type === 'container') {
    await fs.rm(path.join(dir, 'templates'), { recursive: true, force: true });
    await fs.rm(path.join(dir, 'metadata.yaml'), { force: true });
    await fs.rm(path.join(dir, 'lxq'), { recursive: true, force: true });
    const systemd = await fs.realpath(path.join(dir, 'rootfs/sbin/init')).then((p) => p.endsWith('/systemd'), () => false);
    const busybox = !systemd && (await fs.readlink(path.join(dir, 'rootfs/sbin/init')).then((l) => l.endsWith('busybox'), () => false));
    // Halt signals: lxq's own record, else what the init is (LXD's default SIGPWR otherwise).
    const guessed: ContainerImageMeta = systemd ? { haltSignal: 'SIGRTMIN+3', init: 'systemd' } : busybox ? { haltSignal: 'SIGUSR1', init: 'busybox' } : { haltSignal: 'SIGPWR' };
    return { type, metadata, meta: { ...(known ?? guessed), os: props.os, release: props.release, description: props.description } };
  }
  const files = lxqMeta!.files as { kernel: string; initrd: string; disk: string };
  await checkVmDisk(file, path.join(dir, 'rootfs.img'));
  await fs.rename(path.join(dir, 'rootfs.img'), path.join(dir, files.disk));
  await fs.rename(path.join(dir, 'lxq', files.kernel), path.join(dir, files.kernel));
  await fs.rename(path.join(dir, 'lxq', files.initrd), path.join(dir, files.initrd));
  for (const f of ['lxq', 'templates', 'metadata.yaml']) await fs.rm(path.join(dir, f), { recursive: true, force: true });
  return { type, metadata, meta: { ...lxqMeta } };
}
