/**
 * A Host owns a state directory: its instances (of both types), its image store, and the
 * registry that finds instances made by earlier processes.
 */
import { promises as fs } from 'node:fs';
import * as path from 'node:path';

import { validateConfig } from './config/options';
import { ContainerContext, containerContext, ContainerInstance } from './container/container';
import type { ContainerImageMeta } from './container/lxc-config';
import { AlreadyExists, InvalidArgument, NotFound } from './errors';
import { ImageStore } from './images/store';
import { RECORD_FILE } from './instance/base';
import type { CreateOptions, Instance, InstanceRecord } from './instance/instance';
import { validateName } from './instance/names';
import { clearLeftovers } from './storage/recover';
import { readJson } from './util/fs';
import { VmInstance } from './vm/vm';

export interface HostOptions {
  /** State directory. Default /var/lib/lxq; tests pass a temporary one. */
  path?: string;
  /** Image store directory, if not `<path>/images`: several hosts may share one. */
  images?: string;
}

export const DEFAULT_HOST_PATH = '/var/lib/lxq';
/** A directory without a record older than this is an interrupted create, safe to clear. */
const STALE_PARTIAL_MS = 60_000;

export class Host {
  readonly images: ImageStore;
  private readonly instances = new Map<string, Instance>();
  private containers: ContainerContext | undefined;

  private constructor(
    readonly path: string,
    imagesDir: string,
  ) {
    this.images = new ImageStore(imagesDir);
  }

  static async open(options: HostOptions = {}): Promise<Host> {
    const root = path.resolve(options.path ?? DEFAULT_HOST_PATH);
    await fs.mkdir(path.join(root, 'instances'), { recursive: true, mode: 0o711 });
    // An unprivileged container's root (a high uid) must be able to traverse to its rootfs.
    for (const dir of [root, path.join(root, 'instances')]) {
      const { mode } = await fs.stat(dir);
      if ((mode & 0o001) === 0) await fs.chmod(dir, (mode & 0o7777) | 0o001);
    }
    const images = path.resolve(options.images ?? path.join(root, 'images'));
    await fs.mkdir(images, { recursive: true, mode: 0o711 });
    const host = new Host(root, images);
    // Work of a process that died midway (a snapshot, a restore) is cleared or finished.
    await clearLeftovers(host.instancesDir, (name) => host.get(name));
    return host;
  }

  /** Where instances live; for containers this is liblxc's lxcpath (never the user's /var/lib/lxc). */
  get instancesDir(): string {
    return path.join(this.path, 'instances');
  }

  private containerContext(): ContainerContext {
    this.containers ??= containerContext(this.instancesDir);
    return this.containers;
  }

  async create(name: string, options: CreateOptions): Promise<Instance> {
    validateName(name);
    if (options === null || typeof options !== 'object') throw new InvalidArgument('create options must be an object with an image');
    const type = options.type ?? 'container';
    if (type !== 'container' && type !== 'vm') throw new InvalidArgument(`unknown instance type ${JSON.stringify(type)}; use "container" or "vm"`);
    if (typeof options.image !== 'string' || !options.image) throw new InvalidArgument('create options need an image name, e.g. { image: "busybox" }');
    const config = validateConfig(type, options.config as Record<string, unknown> | undefined);
    if (!ImageStore.known().includes(options.image)) await this.images.get(options.image); // throws the list of images
    const imageType = ImageStore.typeOf(options.image);
    if (imageType !== type) throw new InvalidArgument(`image "${options.image}" is a ${imageType} image, not a ${type} image`);
    const dir = path.join(this.instancesDir, name);
    await this.clearInterruptedCreate(dir, name);
    const image = await this.images.ensure(options.image);
    const record: InstanceRecord = { version: 1, name, type, image: image.name, imageMeta: image.meta, config, createdAt: new Date().toISOString() };
    const made =
      type === 'vm'
        ? VmInstance.create({ hostDir: this.path }, dir, record, image)
        : ContainerInstance.create(this.containerContext(), dir, record, { name: image.name, rootfs: path.join(image.dir, 'rootfs'), meta: image.meta as unknown as ContainerImageMeta });
    const instance = await made.catch((e) => {
      if (e.code === 'EEXIST' && e.path === dir) throw new AlreadyExists(`an instance named "${name}" already exists`);
      throw e;
    });
    this.instances.set(name, instance);
    return instance;
  }

  private async clearInterruptedCreate(dir: string, name: string): Promise<void> {
    const st = await fs.stat(dir).catch(() => undefined);
    if (!st) return;
    const hasRecord = await fs.access(path.join(dir, RECORD_FILE)).then(() => true, () => false);
    if (hasRecord || Date.now() - st.mtimeMs < STALE_PARTIAL_MS) throw new AlreadyExists(`an instance named "${name}" already exists`);
    await fs.rm(dir, { recursive: true, force: true });
  }

  /** The instance of that name, made by this process or an earlier one. */
  async get(name: string): Promise<Instance> {
    validateName(name);
    const dir = path.join(this.instancesDir, name);
    let record: InstanceRecord;
    try {
      record = await readJson<InstanceRecord>(path.join(dir, RECORD_FILE));
    } catch {
      this.instances.delete(name);
      throw new NotFound(`no instance named "${name}" on this host (${this.path})`);
    }
    const known = this.instances.get(name);
    if (known && known.createdAt.toISOString() === record.createdAt) return known;
    const instance = this.open(dir, record);
    // A VM started by an earlier process: reconnect to its QEMU now, so that its events flow.
    if (instance instanceof VmInstance) await instance.status();
    this.instances.set(name, instance);
    return instance;
  }

  /** Every instance on this host, both types, sorted by name. */
  async list(): Promise<Instance[]> {
    const names = (await fs.readdir(this.instancesDir)).filter((n) => !n.startsWith('.')).sort();
    const found = await Promise.all(names.map((n) => this.get(n).catch((e) => (e instanceof NotFound || e instanceof InvalidArgument ? undefined : Promise.reject(e)))));
    return found.filter((i): i is Instance => i !== undefined);
  }

  private open(dir: string, record: InstanceRecord): Instance {
    if (record.type === 'vm') return VmInstance.open({ hostDir: this.path }, dir, record);
    return ContainerInstance.open(this.containerContext(), dir, record, record.imageMeta as unknown as ContainerImageMeta);
  }
}
