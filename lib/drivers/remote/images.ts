/**
 * `host.images` on a remote host: the LXD server's images, listed in the shape of the local
 * store's listing where the two meet (name, type, size, createdAt), and lxq-built images copied
 * there: exported in LXD's unified format (lib/images/lxd-format.ts), streamed to POST
 * /1.0/images, given an alias. An image the server already has from the same lxq build is not
 * sent again (its properties record the build: lxq.name, lxq.type, lxq.meta and the creation date).
 */
import { createHash } from 'node:crypto';
import { createReadStream, promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import type { InstanceType } from '../../config/options';
import { checkAborted, checkLongOptions, currentSignal, detached, type LongOptions, longOperation, phase, reportProgress } from '../../core/abort';
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
 * await lxd.images.copyFrom(host.images, 'debian/12', { alias: 'debian-12', type: 'vm', signal: AbortSignal.timeout(600_000) });
 * ```
 */
export interface CopyImageOptions extends LongOptions {
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
   * does not have that build yet; the alias is made, or moved to it. `signal` aborts it (Aborted):
   * an image sent by this call is deleted from the server again, whatever its upload had reached
   * (the connection cut mid-body, LXD's operation cancelled or waited for, then the image deleted);
   * `onProgress`: exporting, uploading (bytes sent), then LXD's own progress.
   */
  async copyFrom(store: ImageStore, name: string, options: CopyImageOptions = {}): Promise<RemoteImageInfo> {
    refuseUnknownKeys('images.copyFrom', options, ['alias', 'type', 'signal', 'onProgress']);
    checkLongOptions(options);
    if (!store || typeof store.ensure !== 'function') throw new InvalidArgument('images.copyFrom: the first argument is a local image store (localHost.images)');
    const alias = options.alias ?? name;
    if (typeof alias !== 'string' || !ALIAS.test(alias)) throw new InvalidArgument(`images.copyFrom: alias ${JSON.stringify(alias)} is not an LXD alias name (no spaces, ':' or '\\', not starting with '/')`);
    return longOperation(`copying image ${name} to ${this.client.where}`, options, async () => {
      const image = await store.ensure(name, options.type ? { type: options.type } : {});
      checkAborted();
      const created = Math.floor(Date.parse(image.createdAt) / 1000);
      const meta = JSON.stringify(image.meta);
      const same = (await this.list()).find(
        (i) => i.properties['lxq.name'] === image.name && i.properties['lxq.type'] === image.type && i.properties['lxq.meta'] === meta && Date.parse(i.createdAt) / 1000 === created,
      );
      if (same) {
        await this.setAlias(alias, same.fingerprint, image.name);
        return this.get(same.fingerprint);
      }
      const { fingerprint, made } = await this.upload(image);
      try {
        checkAborted();
        await this.setAlias(alias, fingerprint, image.name);
        return await this.get(fingerprint);
      } catch (e) {
        if (made && currentSignal()?.aborted) await detached(() => this.deleteQuietly(fingerprint));
        throw e;
      }
    });
  }

  /** Makes `alias` name `fingerprint` (made, or moved to it). */
  private async setAlias(alias: string, fingerprint: string, imageName: string): Promise<void> {
    const aliasPath = this.client.url(`/1.0/images/aliases/${encodeURIComponent(alias)}`);
    const existing = await this.client.request('GET', aliasPath).then(
      (r) => r.metadata.target as string,
      (e) => {
        if (e instanceof NotFound) return undefined;
        throw e;
      },
    );
    if (existing === undefined) await this.client.call('POST', this.client.url('/1.0/images/aliases'), { name: alias, target: fingerprint, description: `lxq ${imageName}` });
    else if (existing !== fingerprint) await this.client.call('PUT', aliasPath, { target: fingerprint, description: `lxq ${imageName}` });
  }

  /**
   * Exports the image as an uncompressed unified tarball (nothing to unpack on either side) and
   * posts it. Its fingerprint is LXD's (the tarball's SHA-256), known before it is sent: an abort
   * at any point (mid-body, or while LXD's operation runs) then waits for the server's image
   * operations to end and deletes that image if the server made it anyway.
   */
  private async upload(image: Awaited<ReturnType<ImageStore['ensure']>>): Promise<{ fingerprint: string; made: boolean }> {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'lxq-image-copy-'));
    try {
      const file = path.join(dir, 'image.tar');
      await phase('exporting', 0, 40);
      await exportImage(image, file);
      checkAborted();
      const fingerprint = await sha256(file);
      // The same tarball there already (other properties: another client sent it): used as it is.
      if (await this.client.request('GET', this.client.url(`/1.0/images/${fingerprint}`)).then(() => true, (e) => (e instanceof NotFound ? false : Promise.reject(e)))) return { fingerprint, made: false };
      const size = (await fs.stat(file)).size;
      const since = Date.now();
      try {
        const r = await this.client.request('POST', this.client.url('/1.0/images'), undefined, {
          stream: file,
          timeoutMs: 600_000,
          signal: currentSignal(),
          onSent: (bytes) => reportProgress('uploading', 40 + (50 * bytes) / size, bytes),
        });
        const op = await this.client.wait(r, 'POST /1.0/images', 600);
        return { fingerprint: (op.metadata?.fingerprint as string | undefined) ?? fingerprint, made: true };
      } catch (e) {
        if (currentSignal()?.aborted) await detached(() => this.undoUpload(fingerprint, since));
        throw e;
      }
    } finally {
      await fs.rm(dir, { recursive: true, force: true });
    }
  }

  /**
   * After an aborted upload: the server may still be reading or unpacking it (a body it had
   * whole, an operation it cannot cancel). Waits (up to a minute) until none of its image
   * operations begun since the upload runs, then deletes the image if it was made.
   */
  private async undoUpload(fingerprint: string, since: number): Promise<void> {
    const deadline = Date.now() + 60_000;
    while (Date.now() < deadline) {
      const ops = await this.client
        .request('GET', this.client.url('/1.0/operations', { recursion: '1' }))
        .then((r) => ((r.metadata?.running ?? []) as Array<{ description?: string; created_at?: string }>))
        .catch(() => []);
      if (!ops.some((o) => /image/i.test(o.description ?? '') && Date.parse(o.created_at ?? '') >= since - 5_000)) break;
      await new Promise((r) => setTimeout(r, 200));
    }
    await this.deleteQuietly(fingerprint);
  }

  /** Deletes the image if the server has it. */
  private async deleteQuietly(fingerprint: string): Promise<void> {
    await this.client.call('DELETE', this.client.url(`/1.0/images/${fingerprint}`)).catch(() => undefined);
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

/** A file's SHA-256 in hex: LXD's fingerprint of a unified image tarball. */
async function sha256(file: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(file)) {
    hash.update(chunk as Buffer);
    checkAborted();
  }
  return hash.digest('hex');
}
