/**
 * The host's image store: images are built locally (no image server is reachable), once, then
 * reused by every instance. An image is a directory with an `image.json` written last, so a
 * half-built image is never used.
 *
 * Each image lives in `<store>/<name>/<recipe>/`, where the recipe is a digest of the builder's
 * declared inputs: a version the builder bumps when its output changes, and the data that
 * decides the content (guest file texts, module list, kernel command line, the identity of the
 * host binaries copied in). Moving code around rebuilds nothing; a changed input makes a new
 * image beside the old one instead of replacing it: VMs keep their qcow2 backing file.
 */
import { randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import * as path from 'node:path';

import type { InstanceType } from '../config/options';
import { InvalidArgument, NotFound } from '../errors';
import { exists, readJson, writeJsonAtomic } from '../util/fs';
import { sha256 } from './build-tools';
import { BUSYBOX_FILES, buildBusyboxRootfs, HOST_BUSYBOX } from './busybox';
import { VM_MODULES } from './modules';
import { HOST_QGA } from './root-disk';
import { INITRAMFS_FILES, ROOTFS_FILES } from './vm-guest';
import { buildVmImage, readVmImageMeta, vmKernelCmdline } from './vm-image';

export interface Image {
  name: string;
  type: InstanceType;
  /** The image's directory: `rootfs/` for containers; kernel, initrd and disk for VMs. */
  dir: string;
  createdAt: string;
  /** What the builder recorded: e.g. the container halt signal, or the VM kernel's version. */
  meta: Record<string, unknown>;
}

interface Builder {
  type: InstanceType;
  /** Bumped whenever the builder makes a different image from the same inputs. */
  version: number;
  /** The data that decides the image's content, besides the version (JSON). */
  inputs(): Promise<unknown>;
  /** Fills `dir` (which exists and is empty) and returns the image's metadata. */
  build(dir: string): Promise<Record<string, unknown>>;
}

/** A host file copied into images, by content (cached while its size and mtime stay). */
const identities = new Map<string, { stamp: string; digest: string }>();
async function fileIdentity(file: string): Promise<string> {
  const st = await fs.stat(file).catch(() => undefined);
  if (!st) return 'missing';
  const stamp = `${st.size}:${st.mtimeMs}`;
  const known = identities.get(file);
  if (known?.stamp === stamp) return known.digest;
  const digest = sha256(await fs.readFile(file));
  identities.set(file, { stamp, digest });
  return digest;
}

const BUILDERS: Record<string, Builder> = {
  busybox: {
    type: 'container',
    version: 1,
    inputs: async () => ({ files: BUSYBOX_FILES, busybox: await fileIdentity(HOST_BUSYBOX) }),
    build: async (dir) => ({ ...(await buildBusyboxRootfs(path.join(dir, 'rootfs'))) }),
  },
  // buildVmImage fills the (empty) directory it is given and writes a manifest of the store's
  // shape; the store then rewrites that manifest with the same metadata.
  'vm/default': {
    type: 'vm',
    version: 1,
    inputs: async () => ({
      initramfs: INITRAMFS_FILES,
      rootfs: ROOTFS_FILES,
      modules: VM_MODULES,
      cmdline: vmKernelCmdline(),
      busybox: await fileIdentity(HOST_BUSYBOX),
      qemuGa: await fileIdentity(HOST_QGA),
    }),
    build: async (dir) => {
      await buildVmImage(dir);
      return { ...(await readVmImageMeta(dir)) };
    },
  },
};

const MANIFEST = 'image.json';

/** The digest naming the current version of an image: its builder's version and inputs. */
async function recipe(name: string): Promise<string> {
  const b = BUILDERS[name];
  return sha256(JSON.stringify({ version: b.version, inputs: await b.inputs() })).slice(0, 12);
}

export class ImageStore {
  private readonly building = new Map<string, Promise<Image>>();

  constructor(readonly dir: string) {}

  /** The images this store can build. */
  static known(): string[] {
    return Object.keys(BUILDERS);
  }

  /** The instance type an image is for, known before it is built. */
  static typeOf(name: string): InstanceType | undefined {
    return BUILDERS[name]?.type;
  }

  /** Registers how to build an image (used by the VM driver for `vm/default`). */
  static register(name: string, builder: Builder): void {
    BUILDERS[name] = builder;
  }

  private async pathOf(name: string): Promise<string> {
    if (!BUILDERS[name]) {
      throw new InvalidArgument(`unknown image "${name}"; available: ${Object.keys(BUILDERS).map((n) => `"${n}"`).join(', ')}`);
    }
    return path.join(this.dir, ...name.split('/'), await recipe(name));
  }

  /** The image if it is built, else NotFound. */
  async get(name: string): Promise<Image> {
    const dir = await this.pathOf(name);
    try {
      const m = await readJson<Omit<Image, 'dir'>>(path.join(dir, MANIFEST));
      return { ...m, dir };
    } catch {
      throw new NotFound(`image "${name}" is not built yet; call host.images.ensure("${name}")`);
    }
  }

  async list(): Promise<Image[]> {
    const out: Image[] = [];
    for (const name of Object.keys(BUILDERS)) out.push(...(await this.get(name).then((i) => [i], () => [])));
    return out;
  }

  /** The image, built first if needed. Concurrent calls share one build. */
  ensure(name: string): Promise<Image> {
    let p = this.building.get(name);
    if (!p) {
      p = this.get(name).catch((e) => (e instanceof NotFound ? this.build(name) : Promise.reject(e)));
      this.building.set(name, p);
      p.finally(() => this.building.delete(name)).catch(() => undefined);
    }
    return p;
  }

  async remove(name: string): Promise<void> {
    await fs.rm(await this.pathOf(name), { recursive: true, force: true });
  }

  private async build(name: string): Promise<Image> {
    const final = await this.pathOf(name);
    const builder = BUILDERS[name];
    await fs.mkdir(path.dirname(final), { recursive: true });
    const tmp = path.join(path.dirname(final), `.${path.basename(final)}.tmp-${randomBytes(6).toString('hex')}`);
    await fs.mkdir(tmp, { mode: 0o755 });
    try {
      const meta = await builder.build(tmp);
      const image = { name, type: builder.type, createdAt: new Date().toISOString(), meta };
      await writeJsonAtomic(path.join(tmp, MANIFEST), image);
      try {
        await fs.rename(tmp, final);
      } catch (e) {
        // Another process finished the same image first: keep theirs.
        if (!(await exists(path.join(final, MANIFEST)))) throw e;
        await fs.rm(tmp, { recursive: true, force: true });
      }
      return this.get(name);
    } catch (e) {
      await fs.rm(tmp, { recursive: true, force: true });
      throw e;
    }
  }
}
