/**
 * `host.images` on a remote host: the LXD server's images, listed in the shape of the local
 * store's listing where the two meet (name, type, size, createdAt), and lxq-built images copied
 * there: exported in LXD's unified format (lib/images/lxd-format.ts), streamed to POST
 * /1.0/images, given an alias. An image the server already has from the same lxq build is not
 * sent again (its properties record the build: lxq.name, lxq.type, lxq.meta and the creation date).
 */
import { promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import type { InstanceType } from '../../config/options';
import { InvalidArgument, NotFound } from '../../core/errors';
import { exportImage } from '../../images/lxd-format';
import type { ImageStore } from '../../images/store';
import { refuseUnknownKeys } from '../../core/keys';
import type { LxdClient } from './client';

/**
 * An image on the LXD server.
 *
 * @example
 * ```ts
 * const img: RemoteImageInfo = await lxd.images.get('busybox');
 * console.log(img.fingerprint, img.aliases, img.properties.os);
 * ```
 */
export interface RemoteImageInfo {
  /** Its first alias, else its fingerprint: what `create(name, { image })` takes. */
  name: string;
  fingerprint: string;
  aliases: string[];
  type: InstanceType;
  /** Bytes of the image file(s) on the server. */
  size: number;
  /** When it was made (ISO 8601), as the local store reports it. */
  createdAt: string;
  architecture: string;
  /** os, release, description…; for an image lxq copied there also lxq.name, lxq.type, lxq.meta. */
  properties: Record<string, string>;
}

/**
 * Options of `RemoteImages.copyFrom`: the alias on the server and the local variant.
 *
 * @example
 * ```ts
 * await lxd.images.copyFrom(host.images, 'debian/12', { alias: 'debian-12', type: 'vm' });
 * ```
 */
export interface CopyImageOptions {
  /** The alias on the server (default: the image's lxq name, e.g. `busybox`, `debian/12`). */
  alias?: string;
  /** Which variant of the local image (default: its only one, or `container`). */
  type?: InstanceType;
}

// An alias any LXD client can address: no whitespace, ':' or '\\', not starting with '/'.
const ALIAS = /^[^\s:/\\][^\s:\\]{0,254}$/;

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- LXD's JSON: its fields are read where they are used
const info = (m: any): RemoteImageInfo => {
  const aliases = (m.aliases ?? []).map((a: { name: string }) => a.name);
  return {
    name: aliases[0] ?? m.fingerprint,
    fingerprint: m.fingerprint,
    aliases,
    type: m.type === 'virtual-machine' ? 'vm' : 'container',
    size: Number(m.size ?? 0),
    createdAt: new Date(m.created_at).toISOString(),
    architecture: m.architecture ?? '',
    properties: m.properties ?? {},
  };
};

/**
 * The images of an LXD server (`remote.images`): list, get, and copy one of lxq's images there.
 *
 * @example
 * ```ts
 * const lxd = await Host.connect();
 * await lxd.images.copyFrom(host.images, 'busybox');
 * for (const i of await lxd.images.list()) console.log(i.name, i.type, i.size);
 * ```
 */
export class RemoteImages {
  constructor(private readonly client: LxdClient) {}

  /** Every image on the server (in the host's project). */
  async list(): Promise<RemoteImageInfo[]> {
    const all = (await this.client.request('GET', this.client.url('/1.0/images', { recursion: '1' }))).metadata as unknown[];
    return all.map(info);
  }

  /** The image with this alias or fingerprint (a unique prefix of it, as LXD accepts), else NotFound. */
  async get(nameOrFingerprint: string): Promise<RemoteImageInfo> {
    if (typeof nameOrFingerprint !== 'string' || !nameOrFingerprint) throw new InvalidArgument('images.get: an alias or fingerprint is required');
    const fingerprint = await this.resolve(nameOrFingerprint);
    return info((await this.client.request('GET', this.client.url(`/1.0/images/${fingerprint}`))).metadata);
  }

  /** Deletes the image (by alias or fingerprint) from the server; its aliases go with it. */
  async delete(nameOrFingerprint: string): Promise<void> {
    const { fingerprint } = await this.get(nameOrFingerprint);
    await this.client.call('DELETE', this.client.url(`/1.0/images/${fingerprint}`));
  }

  /**
   * Copies an lxq image (built first if needed) from a local store to the server under `alias`,
   * so that `create(name, { image: alias })` on this host launches it. Sent only if the server
   * does not have that build yet; the alias is made, or moved to it.
   */
  async copyFrom(store: ImageStore, name: string, options: CopyImageOptions = {}): Promise<RemoteImageInfo> {
    refuseUnknownKeys('images.copyFrom', options, ['alias', 'type']);
    if (!store || typeof store.ensure !== 'function') throw new InvalidArgument('images.copyFrom: the first argument is a local image store (localHost.images)');
    const alias = options.alias ?? name;
    if (typeof alias !== 'string' || !ALIAS.test(alias)) throw new InvalidArgument(`images.copyFrom: alias ${JSON.stringify(alias)} is not an LXD alias name (no spaces, ':' or '\\', not starting with '/')`);
    const image = await store.ensure(name, options.type ? { type: options.type } : {});
    const created = Math.floor(Date.parse(image.createdAt) / 1000);
    const meta = JSON.stringify(image.meta);
    const same = (await this.list()).find(
      (i) => i.properties['lxq.name'] === image.name && i.properties['lxq.type'] === image.type && i.properties['lxq.meta'] === meta && Date.parse(i.createdAt) / 1000 === created,
    );
    const fingerprint = same?.fingerprint ?? (await this.upload(image));
    const aliasPath = this.client.url(`/1.0/images/aliases/${encodeURIComponent(alias)}`);
    const existing = await this.client.request('GET', aliasPath).then(
      (r) => r.metadata.target as string,
      (e) => {
        if (e instanceof NotFound) return undefined;
        throw e;
      },
    );
    if (existing === undefined) await this.client.call('POST', this.client.url('/1.0/images/aliases'), { name: alias, target: fingerprint, description: `lxq ${image.name}` });
    else if (existing !== fingerprint) await this.client.call('PUT', aliasPath, { target: fingerprint, description: `lxq ${image.name}` });
    return this.get(fingerprint);
  }

  /** Exports the image as an uncompressed unified tarball (nothing to unpack on either side) and posts it. */
  private async upload(image: Awaited<ReturnType<ImageStore['ensure']>>): Promise<string> {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'lxq-image-copy-'));
    try {
      const file = path.join(dir, 'image.tar');
      await exportImage(image, file);
      const r = await this.client.request('POST', this.client.url('/1.0/images'), undefined, { stream: file, timeoutMs: 600_000 });
      const op = await this.client.wait(r, 'POST /1.0/images', 600);
      return op.metadata.fingerprint as string;
    } finally {
      await fs.rm(dir, { recursive: true, force: true });
    }
  }

  /** An alias to the fingerprint it names; a fingerprint (or its prefix) as it is. */
  private async resolve(nameOrFingerprint: string): Promise<string> {
    try {
      return (await this.client.request('GET', this.client.url(`/1.0/images/aliases/${encodeURIComponent(nameOrFingerprint)}`))).metadata.target;
    } catch (e) {
      if (!(e instanceof NotFound) || !/^[0-9a-f]{8,64}$/.test(nameOrFingerprint)) throw e;
      return nameOrFingerprint;
    }
  }
}
