/**
 * The images lxq can build, each with its variants (one per instance type) and, for each
 * variant, a builder: a version (bumped when the builder makes a different image from the same
 * inputs), the inputs that decide the content (the store's cache key is their digest) and the
 * build itself.
 */
import { promises as fs } from 'node:fs';
import * as path from 'node:path';

import type { InstanceType } from '../config/options';
import { run, sha256 } from './build-tools';
import { BUSYBOX_FILES, buildBusyboxRootfs, HOST_BUSYBOX } from './busybox';
import { buildDebianTree, DEBIAN_FILES, DEBIAN_PACKAGES, DEBIAN_RELEASES, DEBIAN_VM_FILES, DEBIAN_VM_MASKED, type DebianRelease, hostAptOptions, hostAptSources, maskVmUnits } from './debian';
import type { ContainerImageMeta } from './meta';
import { lxqAgentInputs } from './lxq-agent-binary';
import { CLOUD_SEED_MODULES, VM_MODULES } from './modules';
import { HOST_QGA, writeGuestFiles } from './root-disk';
import { INITRAMFS_FILES, ROOTFS_FILES } from './vm-guest';
import { buildVmImage, readVmImageMeta, vmKernelCmdline } from './vm-image';

/**
 * A built image as the store hands it out.
 *
 * @example
 * ```ts
 * const img: Image = await host.images.ensure('debian/12');
 * console.log(img.dir, img.createdAt);
 * ```
 */
export interface Image {
  name: string;
  type: InstanceType;
  /** The image's directory: `rootfs/` for containers; kernel, initrd and disk for VMs. */
  dir: string;
  createdAt: string;
  /** What the builder recorded: e.g. the container halt signal, or the VM kernel's version. */
  meta: Record<string, unknown>;
}

export interface BuildContext {
  /** The image's directory, empty: fill it. */
  dir: string;
  /** The fraction (0..1) of this build done, and what it does now. */
  progress(fraction: number, phase: string): void;
  /** Another image this one is made from, built first if needed. */
  ensure(name: string, type: InstanceType): Promise<Image>;
}

export interface Builder {
  version: number;
  inputs(): Promise<unknown>;
  /** Fills `ctx.dir` and returns the image's metadata. */
  build(ctx: BuildContext): Promise<Record<string, unknown>>;
}

export type ImageVariants = Partial<Record<InstanceType, Builder>>;

/** What a derived image adds to the image it is made from (see ImageStore.build). */
export interface Derivation {
  from: string;
  packages: string[];
  run: string[];
  /** Kernel modules a VM variant's initramfs loads (lxq's own derivations: debian/12/cloud's cidata disk). */
  vmModules?: string[];
}

/**
 * cloud-init's settings in `debian/12/cloud`. Datasources: NoCloud only (a seed in
 * /var/lib/cloud/seed/nocloud, or a disk labelled cidata). `None` is listed first because
 * ds-identify (the generator that enables cloud-init) takes a list of one source (or one and
 * None) without looking for it, which would run cloud-init, and fail, on every instance without a
 * seed; with two it looks, disables cloud-init when NoCloud has no seed, and hands cloud-init the
 * list of what it found (`NoCloud, None`). No locale (the image has no `locales` package, whose
 * update-locale cc_locale runs: C.UTF-8 is glibc's own); no ssh host keys (no ssh server:
 * `openssh-server` makes its own when installed).
 */
const CLOUD_CONFIG = "printf 'datasource_list: [ None, NoCloud ]\\nlocale: false\\nssh_genkeytypes: []\\n' > /etc/cloud/cloud.cfg.d/99_lxq.cfg";

/**
 * lxq's own images that are derived from another, as ImageStore.build's are: an image built
 * `from` one of them takes its packages, commands and VM modules too.
 */
export const BUILTIN_DERIVATIONS: Readonly<Record<string, Derivation>> = {
  // debian/12 with Debian's cloud-init, reading only the NoCloud seed lxq gives it (the
  // cloud-init.* options); without a seed its generator leaves cloud-init disabled.
  'debian/12/cloud': { from: 'debian/12', packages: ['cloud-init'], run: [CLOUD_CONFIG], vmModules: CLOUD_SEED_MODULES },
};

/** A host file copied into images, by content (cached while its size and mtime stay). */
const identities = new Map<string, { stamp: string; digest: string }>();
export async function fileIdentity(file: string): Promise<string> {
  const st = await fs.stat(file).catch(() => undefined);
  if (!st) return 'missing';
  const stamp = `${st.size}:${st.mtimeMs}`;
  const known = identities.get(file);
  if (known?.stamp === stamp) return known.digest;
  const digest = sha256(await fs.readFile(file));
  identities.set(file, { stamp, digest });
  return digest;
}

/** What the initramfs and kernel steps of every VM image depend on. */
async function vmBootInputs(): Promise<unknown> {
  return { initramfs: INITRAMFS_FILES, modules: VM_MODULES, cmdline: vmKernelCmdline(), busybox: await fileIdentity(HOST_BUSYBOX) };
}

/** Debian images: `debian/12`, and images derived from it (extra packages, commands). */
function debianImage(name: string, release: DebianRelease, extra: { packages: string[]; run: string[]; from?: string; vmModules?: string[] }): ImageVariants {
  const containerInputs = async () => ({
    release,
    packages: DEBIAN_PACKAGES,
    extraPackages: extra.packages,
    run: extra.run,
    files: DEBIAN_FILES,
    sources: await hostAptSources(release.suite),
    apt: await hostAptOptions(),
  });
  return {
    container: {
      version: 1,
      inputs: containerInputs,
      build: async (ctx) => {
        const tree = await buildDebianTree(path.join(ctx.dir, 'rootfs'), { release, packages: extra.packages, run: extra.run, onProgress: ctx.progress });
        const meta: ContainerImageMeta = { haltSignal: 'SIGRTMIN+3', init: 'systemd' };
        return { ...meta, os: 'debian', release: release.version, suite: release.suite, packages: tree.packages, ...(extra.from ? { from: extra.from, extraPackages: extra.packages, run: extra.run } : {}) };
      },
    },
    vm: {
      version: 1,
      inputs: async () => ({
        tree: await containerInputs(),
        vmFiles: DEBIAN_VM_FILES,
        vmMasked: DEBIAN_VM_MASKED,
        boot: await vmBootInputs(),
        lxqAgent: await lxqAgentInputs(),
        ...(extra.vmModules ? { extraModules: extra.vmModules } : {}),
      }),
      build: async (ctx) => {
        const tree = await ctx.ensure(name, 'container');
        ctx.progress(0.1, 'making the VM image');
        await buildVmImage(ctx.dir, {
          name,
          init: 'systemd',
          diskSize: '2G',
          extraModules: extra.vmModules,
          rootTree: async (root) => {
            await run('cp', ['-a', '--reflink=auto', path.join(tree.dir, 'rootfs'), root]);
            await writeGuestFiles(root, DEBIAN_VM_FILES);
            await maskVmUnits(root);
          },
          onStep: (done, what) => ctx.progress(0.1 + 0.9 * done, what),
        });
        return { ...(await readVmImageMeta(ctx.dir)), os: 'debian', release: release.version, ...(extra.from ? { from: extra.from } : {}) };
      },
    },
  };
}

/** The images lxq knows how to build, by name. */
export const BUILTIN_IMAGES: Record<string, ImageVariants> = {
  busybox: {
    container: {
      version: 1,
      inputs: async () => ({ files: BUSYBOX_FILES, busybox: await fileIdentity(HOST_BUSYBOX) }),
      build: async (ctx) => ({ ...(await buildBusyboxRootfs(path.join(ctx.dir, 'rootfs'))) }),
    },
  },
  // buildVmImage fills the (empty) directory it is given and writes a manifest of the store's
  // shape; the store then rewrites that manifest with the same metadata.
  'vm/default': {
    vm: {
      version: 1,
      inputs: async () => ({ boot: await vmBootInputs(), rootfs: ROOTFS_FILES, qemuGa: await fileIdentity(HOST_QGA), lxqAgent: await lxqAgentInputs() }),
      build: async (ctx) => {
        await buildVmImage(ctx.dir, { onStep: ctx.progress });
        return { ...(await readVmImageMeta(ctx.dir)) };
      },
    },
  },
  ...Object.fromEntries(DEBIAN_RELEASES.map((r) => [`debian/${r.version}`, debianImage(`debian/${r.version}`, r, { packages: [], run: [] })])),
  'debian/12/cloud': debianImage('debian/12/cloud', DEBIAN_RELEASES[0], BUILTIN_DERIVATIONS['debian/12/cloud']),
};

/** The Debian release an image is, or is derived from; undefined if it is not a Debian image. */
export function debianReleaseOf(name: string, derivations: (n: string) => Derivation | undefined): DebianRelease | undefined {
  for (let n: string | undefined = name, depth = 0; n && depth < 16; depth++) {
    const r = DEBIAN_RELEASES.find((x) => `debian/${x.version}` === n);
    if (r) return r;
    n = derivations(n)?.from;
  }
  return undefined;
}

/** The variants of a derived image: its base's, with the packages and commands of every step. */
export function derivedImage(name: string, chain: Derivation[], release: DebianRelease): ImageVariants {
  const vmModules = [...new Set(chain.flatMap((d) => d.vmModules ?? []))];
  return debianImage(name, release, { packages: chain.flatMap((d) => d.packages), run: chain.flatMap((d) => d.run), from: chain[chain.length - 1].from, ...(vmModules.length ? { vmModules } : {}) });
}
