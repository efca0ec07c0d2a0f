/**
 * A VM image: what an lxq VM boots, built here from Debian's archive and the host's packages,
 * with no other network. The steps are in their own files, shared by every VM image:
 *
 * - `vmlinux`: a Debian cloud kernel (kernel-package.ts), unpacked from its bzImage so that QEMU
 *   boots it through its PVH entry point (pvh-kernel.ts; `vmlinuz`, the bzImage itself, if that
 *   is not possible);
 * - `initrd.img`: a small uncompressed initramfs (initramfs.ts: busybox-static and the virtio and
 *   ACPI modules of modules.ts) whose `/init` loads them, mounts `/dev/vda` and `switch_root`s
 *   into it (see vm-guest.ts);
 * - `disk.qcow2`: the root disk (root-disk.ts: ext4 made with `mkfs.ext4 -d`, no loop mount) from
 *   a root tree the image names: for `vm/default` busybox init, qemu-ga with its libraries,
 *   busybox acpid for the power button and a `/sbin/shutdown` for `guest-shutdown`. It is a
 *   qcow2 *base*: each VM boots its own qcow2 overlay over it.
 *
 * The image is built into `<dir>.tmp-<pid>` and renamed into place with its manifest
 * (`image.json`) written last inside it, so a half-built image is never used; a complete image is
 * reused.
 * The downloaded kernel package is kept in `<dir>/../.cache`. Everything runs in child processes,
 * fs/promises and a worker thread: the event loop is never blocked.
 *
 * Boot time under TCG is what most of the choices here are about; the numbers are in the
 * comments where each choice is made (measured on a 2-vCPU host, medians, noisy).
 */
import { promises as fs } from 'node:fs';
import * as path from 'node:path';

import { OperationFailed } from '../core/errors';
import { writeJsonAtomic } from '../core/fs';
import { requireStaticBusybox } from './busybox';
import { buildInitramfs } from './initramfs';
import { fetchKernel, type Kernel } from './kernel-package';
import type { VmImage, VmImageMeta } from './meta';
import { installLxqAgent, LXQ_AGENT_PORT_NAME } from './lxq-agent-binary';
import { extractPvhKernel } from './pvh-kernel';
import { buildBusyboxVmTree, HOST_QGA, makeRootDisk } from './root-disk';
import { QGA_PORT_NAME } from './vm-guest';

export type { VmImage, VmImageMeta } from './meta';

/** What `image.json` holds. Its shape is the image store's (`name`, `type`, `createdAt`, `meta`). */
export interface VmImageManifest {
  name: string;
  type: 'vm';
  createdAt: string;
  meta: VmImageMeta;
}

export interface BuildVmImageOptions {
  /** Progress lines. */
  log?: (line: string) => void;
  /** Where downloaded packages are kept between builds; default `<dir>/../.cache`. */
  cacheDir?: string;
  /** The kernel package to use instead of the one apt picks (e.g. `linux-image-6.1.0-56-cloud-amd64-unsigned`). */
  kernelPackage?: string;
  /** Size of the root disk; default 256M. */
  diskSize?: string;
  /** The image's name in its manifest; default `vm/default`. */
  name?: string;
  /** Fills the root disk's tree `root` (which does not exist yet); default the `vm/default` tree. */
  rootTree?: (root: string) => Promise<void>;
  /** The root tree's init system (recorded in the manifest); default `busybox`. */
  init?: 'busybox' | 'systemd';
  /** The kernel command line; default vmKernelCmdline(). */
  cmdline?: string;
  /** Kernel modules the initramfs loads besides VM_MODULES (modules.ts). */
  extraModules?: string[];
  /** Put lxq's own guest agent into the root tree (lxq-agent-binary.ts); default true. */
  lxqAgent?: boolean;
  /** Called with the fraction done (0..1) of the build's steps. */
  onStep?: (done: number, what: string) => void;
}

const MANIFEST = 'image.json';
const MANIFEST_FORMAT = 'lxq-vm-image/1';
const FILES = { initrd: 'initrd.img', disk: 'disk.qcow2' } as const;

/**
 * The kernel command line for this image, tuned for boot time under TCG:
 * - `console=ttyS0 quiet loglevel=4`: every kernel message crosses the emulated UART; a verbose
 *   boot reaches /init ~2 s later;
 * - `cryptomgr.notests`: no crypto self-tests at boot, the largest single saving (the guest
 *   reaches /init in ~40% of the instructions: 1.2 s instead of 3.0 s of `-icount` virtual time);
 * - `8250.nr_uarts=1`, `i8042.noaux i8042.nokbd`: fewer legacy devices to probe (small);
 * - `panic=-1`: reboot at once on a panic rather than hang;
 * - `lxq.root=/dev/vda`: what the initramfs mounts (`none` keeps the VM in the initramfs);
 * - `net.ifnames=0`: NICs keep the kernel's names (eth0, eth1…), as a nic device's `name` says
 *   and the images' DHCP configuration expects (udev would rename them by slot).
 * Tried without a measurable gain: mitigations=off, nokaslr, no_timer_check, tsc=reliable,
 * lsm=capability, audit=0, init_on_alloc=0, nowatchdog, rcupdate.rcu_expedited=1, and
 * initcall_blacklist= for the slowest initcalls. `pci=noacpi` saves the ACPI interrupt-link setup
 * on `pc` but leaves this kernel (no MP-table support) without APIC, MSI and SMP: not used.
 */
export function vmKernelCmdline(): string {
  return [
    'console=ttyS0',
    'quiet',
    'loglevel=4',
    'panic=-1',
    'cryptomgr.notests',
    '8250.nr_uarts=1',
    'i8042.noaux',
    'i8042.nokbd',
    'lxq.root=/dev/vda',
    'net.ifnames=0',
  ].join(' ');
}


/** The image in `dir` if it is complete (manifest and files present), else undefined. */
export async function readVmImage(dir: string): Promise<VmImage | undefined> {
  let m: VmImageManifest;
  try {
    m = JSON.parse(await fs.readFile(path.join(dir, MANIFEST), 'utf8')) as VmImageManifest;
  } catch {
    return undefined;
  }
  if (m?.meta?.format !== MANIFEST_FORMAT || !m.meta.files) return undefined;
  const abs = path.resolve(dir);
  const img: VmImage = {
    dir: abs,
    kernel: path.join(abs, m.meta.files.kernel),
    initrd: path.join(abs, m.meta.files.initrd),
    disk: path.join(abs, m.meta.files.disk),
    kernelVersion: m.meta.kernelVersion,
    cmdline: m.meta.cmdline ?? vmKernelCmdline(),
  };
  for (const f of [img.kernel, img.initrd, img.disk]) {
    try {
      await fs.access(f);
    } catch {
      return undefined;
    }
  }
  return img;
}

/** The manifest's metadata of a built image. */
export async function readVmImageMeta(dir: string): Promise<VmImageMeta> {
  return (JSON.parse(await fs.readFile(path.join(dir, MANIFEST), 'utf8')) as VmImageManifest).meta;
}

const inFlight = new Map<string, Promise<VmImage>>();

/**
 * Builds the image into `dir` (atomically), or returns it if `dir` already holds a complete one.
 * Concurrent calls for one directory share a build; another process building the same directory
 * at once is tolerated (the first rename wins, the other build is discarded).
 */
export function buildVmImage(dir: string, opts: BuildVmImageOptions = {}): Promise<VmImage> {
  const key = path.resolve(dir);
  let p = inFlight.get(key);
  if (!p) {
    p = buildOnce(key, opts).finally(() => inFlight.delete(key));
    inFlight.set(key, p);
  }
  return p;
}

/** Runs one step of a build: logged with its duration, and counted for `onStep`. */
type Step = <T>(what: string, fn: () => Promise<T>) => Promise<T>;

/** What the kernel side of a build leaves in the image directory. */
interface BuiltKernel {
  kernel: Kernel;
  kernelFile: string;
  kernelFormat: VmImageMeta['kernelFormat'];
  modules: string[];
}

async function buildOnce(dir: string, opts: BuildVmImageOptions): Promise<VmImage> {
  const cached = await readVmImage(dir);
  if (cached) return cached;

  const log = opts.log ?? (() => undefined);
  const t0 = Date.now();
  const steps = 4; // kernel package, PVH kernel, initramfs, root disk
  let done = 0;
  const step: Step = async (what, fn) => {
    const s = Date.now();
    log(`vm image: ${what}...`);
    const r = await fn();
    log(`vm image: ${what}: done in ${Date.now() - s} ms`);
    opts.onStep?.(++done / steps, what);
    return r;
  };

  await preflight(opts.rootTree === undefined);
  const cacheDir = path.resolve(opts.cacheDir ?? path.join(path.dirname(dir), '.cache'));
  const tmp = `${dir}.tmp-${process.pid}`;
  await fs.rm(tmp, { recursive: true, force: true });
  await fs.mkdir(tmp, { recursive: true, mode: 0o755 });
  const work = path.join(tmp, 'work');
  await fs.mkdir(work);
  try {
    await fs.mkdir(cacheDir, { recursive: true, mode: 0o755 });
    // The kernel (download, unpack, initramfs) and the root disk are independent: build both at
    // once, and let both settle before cleaning up after a failure.
    const [k, d] = await Promise.allSettled([
      buildKernel({ tmp, work, cacheDir, opts, step, log }),
      step('root disk', async () => {
        const rootfs = path.join(work, 'rootfs');
        await (opts.rootTree ?? buildBusyboxVmTree)(rootfs);
        if (opts.lxqAgent !== false) await installLxqAgent(rootfs, opts.init ?? 'busybox');
        return makeRootDisk(rootfs, path.join(work, 'disk.raw'), path.join(tmp, FILES.disk), opts.diskSize ?? '256M');
      }),
    ]);
    if (k.status === 'rejected') throw k.reason;
    if (d.status === 'rejected') throw d.reason;
    await fs.rm(work, { recursive: true, force: true });
    await writeJsonAtomic(path.join(tmp, MANIFEST), await manifestOf(tmp, opts, k.value, d.value.virtualSize, Date.now() - t0));
    const theirs = await moveIntoPlace(tmp, dir);
    if (theirs) return theirs;
    log(`vm image: built ${dir} in ${Date.now() - t0} ms (kernel ${k.value.kernel.version})`);
    const img = await readVmImage(dir);
    if (!img) throw new OperationFailed(`the VM image in ${dir} vanished after it was built`);
    return img;
  } catch (e) {
    await fs.rm(tmp, { recursive: true, force: true }).catch(() => undefined);
    throw e;
  }
}

/** The kernel side: the kernel package, its PVH ELF (else the bzImage as it is), the initramfs. */
async function buildKernel(b: { tmp: string; work: string; cacheDir: string; opts: BuildVmImageOptions; step: Step; log: (line: string) => void }): Promise<BuiltKernel> {
  const { tmp, step, log } = b;
  const kernel = await step('kernel package', () => fetchKernel(b.cacheDir, b.work, b.opts.kernelPackage, log));
  const pvh = await step('PVH kernel', async () => extractPvhKernel(await fs.readFile(kernel.vmlinuz)));
  let kernelFile: string;
  if ('elf' in pvh) {
    kernelFile = 'vmlinux';
    await fs.writeFile(path.join(tmp, kernelFile), pvh.elf);
  } else {
    log(`vm image: booting the bzImage: ${pvh.reason}`);
    kernelFile = 'vmlinuz';
    await fs.copyFile(kernel.vmlinuz, path.join(tmp, kernelFile));
  }
  const modules = await step('initramfs', () => buildInitramfs(kernel, path.join(tmp, FILES.initrd), b.opts.extraModules));
  return { kernel, kernelFile, kernelFormat: 'elf' in pvh ? 'pvh-elf' : 'bzimage', modules };
}

/** The manifest of a build whose files are all in `tmp`. */
async function manifestOf(tmp: string, opts: BuildVmImageOptions, k: BuiltKernel, diskVirtualSize: number, buildMs: number): Promise<VmImageManifest> {
  const size = async (f: string) => (await fs.stat(path.join(tmp, f))).size;
  return {
    name: opts.name ?? 'vm/default',
    type: 'vm',
    createdAt: new Date().toISOString(),
    meta: {
      format: MANIFEST_FORMAT,
      kernelVersion: k.kernel.version,
      kernelPackage: k.kernel.pkg,
      kernelPackageVersion: k.kernel.pkgVersion,
      kernelFormat: k.kernelFormat,
      moduleSignatures: 'stripped',
      files: { kernel: k.kernelFile, ...FILES },
      sizes: { kernel: await size(k.kernelFile), initrd: await size(FILES.initrd), disk: await size(FILES.disk) },
      diskVirtualSize,
      modules: k.modules,
      qgaPortName: QGA_PORT_NAME,
      ...(opts.lxqAgent !== false ? { lxqAgentPortName: LXQ_AGENT_PORT_NAME } : {}),
      cmdline: opts.cmdline ?? vmKernelCmdline(),
      init: opts.init ?? 'busybox',
      buildMs,
    },
  };
}

/**
 * Renames the finished build to `dir`. Returns the image another process completed there first
 * (this build is then removed), or undefined once this one is in place.
 */
async function moveIntoPlace(tmp: string, dir: string): Promise<VmImage | undefined> {
  try {
    // Replaces `dir` if it does not exist or is an empty directory (e.g. made by an image store).
    await fs.rename(tmp, dir);
    return undefined;
  } catch (e) {
    const theirs = await readVmImage(dir);
    if (!theirs) {
      throw new OperationFailed(`cannot move the built VM image into ${dir}: ${(e as Error).message} (remove the directory if it holds no complete image)`, {}, { cause: e });
    }
    await fs.rm(tmp, { recursive: true, force: true });
    return theirs;
  }
}

/** The static busybox goes into every initramfs; the host's qemu-ga only into the `vm/default` tree. */
async function preflight(needQga: boolean): Promise<void> {
  await requireStaticBusybox();
  if (!needQga) return;
  try {
    await fs.access(HOST_QGA);
  } catch {
    throw new OperationFailed(`${HOST_QGA} is missing: install it with "apt-get install qemu-guest-agent"`);
  }
}
