/**
 * Images in LXD's unified tarball format: `metadata.yaml` beside `rootfs/` (a container) or
 * `rootfs.img` (a VM's qcow2), compressed by the file's extension (`.tar.xz`, `.tar.gz`, `.tar`).
 * lxq's VM images boot Debian's kernel directly, without firmware, so their export carries the
 * kernel and initramfs under `lxq/` (LXD ignores the extra files), and only such VM images import.
 *
 * An import is checked before anything is unpacked: the listing (a truncated archive fails
 * there), every path (none absolute, none with `..`, hard links included), the metadata
 * (present, YAML, an architecture this host runs).
 */
import { createHash } from 'node:crypto';
import { createReadStream, promises as fs } from 'node:fs';
import * as path from 'node:path';
import { parse as parseYaml, stringify as toYaml } from 'yaml';

import type { InstanceType } from '../config/options';
import { InvalidArgument, NotSupported, OperationFailed } from '../errors';
import { run } from './build-tools';
import type { Image } from './catalog';
import type { ContainerImageMeta } from './meta';

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

/** The archive's entries (and hard link targets), refused if any could land outside the image. */
async function checkedListing(file: string): Promise<string[]> {
  let listing: string;
  try {
    listing = await run('tar', ['-tvf', file], { maxBuffer: 512 * 1024 * 1024 });
  } catch (e) {
    throw new InvalidArgument(`${file} is not a complete tar archive: ${(e as OperationFailed).log || (e as Error).message}`);
  }
  const names: string[] = [];
  for (const line of listing.split('\n').filter(Boolean)) {
    // "-rw-r--r-- 0/0  123 2024-01-01 00:00 name", "… name link to target", "… name -> target"
    const m = /^\S+\s+\S+\s+\d+(?:,\s*\d+)?\s+\S+\s+\S+\s+(.*)$/.exec(line);
    if (!m) throw new InvalidArgument(`cannot read the listing of ${file}: ${JSON.stringify(line)}`);
    let name = m[1];
    let hardTarget: string | undefined;
    if (line.startsWith('h')) [name, hardTarget] = name.split(' link to ');
    else if (line.startsWith('l')) name = name.split(' -> ')[0];
    for (const p of [name, hardTarget].filter((x): x is string => x !== undefined)) {
      const clean = p.replace(/^\.\//, '');
      if (clean.startsWith('/') || clean.split('/').includes('..')) throw new InvalidArgument(`${file} has a path that escapes the image: ${JSON.stringify(p)}`);
    }
    names.push(name.replace(/^\.\//, '').replace(/\/$/, ''));
  }
  return names;
}

export interface Unpacked {
  type: InstanceType;
  metadata: LxdMetadata;
  /** ContainerImageMeta for a container; the VM image's files for a VM. */
  meta: Record<string, unknown>;
}

/** Unpacks `file` into `dir` (empty) as an image of the store's shape, after checking it. */
export async function unpackImage(file: string, dir: string): Promise<Unpacked> {
  await fs.access(file).catch(() => {
    throw new InvalidArgument(`no file ${file} to import`);
  });
  const names = await checkedListing(file);
  if (!names.includes('metadata.yaml')) throw new InvalidArgument(`${file} has no metadata.yaml: not an image in LXD's format`);
  let metadata: LxdMetadata;
  try {
    const text = await run('tar', ['-xOf', file, 'metadata.yaml']);
    metadata = parseYaml(text) as LxdMetadata;
  } catch (e) {
    throw new InvalidArgument(`${file} has a malformed metadata.yaml: ${(e as Error).message}`);
  }
  if (!metadata || typeof metadata !== 'object' || typeof metadata.architecture !== 'string') {
    throw new InvalidArgument(`${file}: metadata.yaml names no architecture`);
  }
  if (!HOST_ARCHITECTURES.includes(metadata.architecture)) {
    throw new InvalidArgument(`${file} is for ${metadata.architecture}, which this host (x86_64) cannot run`);
  }
  const props = (metadata.properties ?? {}) as Record<string, string>;
  const type: InstanceType = names.includes('rootfs.img') ? 'vm' : 'container';
  if (type === 'container' && !names.some((n) => n === 'rootfs' || n.startsWith('rootfs/'))) throw new InvalidArgument(`${file} has neither rootfs/ nor rootfs.img`);
  const lxqMeta = (() => {
    try {
      return props['lxq.meta'] ? (JSON.parse(props['lxq.meta']) as Record<string, unknown>) : undefined;
    } catch {
      return undefined;
    }
  })();
  if (type === 'vm') {
    const files = lxqMeta?.files as { kernel: string; initrd: string; disk: string } | undefined;
    if (!files || !names.includes(`lxq/${files.kernel}`) || !names.includes(`lxq/${files.initrd}`)) {
      throw new NotSupported(`${file} is a VM image without lxq's kernel and initramfs: lxq boots VMs without firmware, so only VM images exported by lxq import`);
    }
  }
  await run('tar', ['-xpf', file, '--numeric-owner', '-C', dir]);
  if (type === 'container') {
    await fs.rm(path.join(dir, 'templates'), { recursive: true, force: true });
    await fs.rm(path.join(dir, 'metadata.yaml'), { force: true });
    const systemd = await fs.realpath(path.join(dir, 'rootfs/sbin/init')).then((p) => p.endsWith('/systemd'), () => false);
    const busybox = !systemd && (await fs.readlink(path.join(dir, 'rootfs/sbin/init')).then((l) => l.endsWith('busybox'), () => false));
    // Halt signals: lxq's own record, else what the init is (LXD's default SIGPWR otherwise).
    const guessed: ContainerImageMeta = systemd ? { haltSignal: 'SIGRTMIN+3', init: 'systemd' } : busybox ? { haltSignal: 'SIGUSR1', init: 'busybox' } : { haltSignal: 'SIGPWR' };
    const known = lxqMeta && typeof lxqMeta.haltSignal === 'string' ? { haltSignal: lxqMeta.haltSignal, ...(lxqMeta.init ? { init: lxqMeta.init } : {}) } : guessed;
    return { type, metadata, meta: { ...known, os: props.os, release: props.release, description: props.description } };
  }
  const files = lxqMeta!.files as { kernel: string; initrd: string; disk: string };
  await fs.rename(path.join(dir, 'rootfs.img'), path.join(dir, files.disk));
  await fs.rename(path.join(dir, 'lxq', files.kernel), path.join(dir, files.kernel));
  await fs.rename(path.join(dir, 'lxq', files.initrd), path.join(dir, files.initrd));
  for (const f of ['lxq', 'templates', 'metadata.yaml']) await fs.rm(path.join(dir, f), { recursive: true, force: true });
  const info = JSON.parse(await run('qemu-img', ['info', '--output=json', path.join(dir, files.disk)])) as { format: string };
  if (info.format !== 'qcow2') throw new InvalidArgument(`${file}: rootfs.img is ${info.format}, not qcow2`);
  return { type, metadata, meta: { ...lxqMeta } };
}
