/**
 * The `vm/default` image: what an lxq VM boots, built here from Debian's archive and the host's
 * packages, with no other network.
 *
 * - `vmlinux`: a Debian cloud kernel (`apt-get download linux-image-<ver>-cloud-amd64-unsigned`),
 *   unpacked from its bzImage so that QEMU boots it through its PVH entry point (`vmlinuz`, the
 *   bzImage itself, if that is not possible);
 * - `initrd.img`: a small uncompressed initramfs (busybox-static and the virtio/ACPI modules the
 *   kernel has as modules, in dependency order) whose `/init` loads them, mounts `/dev/vda` and
 *   `switch_root`s into it (see vm-guest.ts);
 * - `disk.qcow2`: the root disk (ext4, made with `mkfs.ext4 -d`, no loop mount) with busybox init,
 *   qemu-ga and its libraries, busybox acpid for the power button and a `/sbin/shutdown` for
 *   `guest-shutdown`. It is a qcow2 *base*: each VM boots its own qcow2 overlay over it.
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
import { execFile, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { Worker } from 'node:worker_threads';
import { gunzip as gunzipCb } from 'node:zlib';

import { InvalidArgument, OperationFailed } from '../errors';
import { writeJsonAtomic } from '../util/fs';
import { BUSYBOX_ID_FILE, INITRAMFS_FILES, QGA_PORT_NAME, ROOTFS_FILES, type GuestFile } from './vm-guest';
import { HOST_BUSYBOX, requireStaticBusybox } from './busybox';

const execFileP = promisify(execFile);
const gunzip = promisify(gunzipCb);

export interface VmImage {
  dir: string;
  /** Absolute path of the kernel for `-kernel`: an ELF vmlinux with a PVH entry point, else the bzImage. */
  kernel: string;
  /** Absolute path of the initramfs (cpio newc). */
  initrd: string;
  /** Absolute path of the root disk, a qcow2 base: boot an overlay over it, never the base itself. */
  disk: string;
  /** What `uname -r` says inside the VM. */
  kernelVersion: string;
}

/** What `image.json` holds. Its shape is the image store's (`name`, `type`, `createdAt`, `meta`). */
export interface VmImageManifest {
  name: 'vm/default';
  type: 'vm';
  createdAt: string;
  meta: VmImageMeta;
}

export interface VmImageMeta {
  format: typeof MANIFEST_FORMAT;
  kernelVersion: string;
  kernelPackage: string;
  kernelPackageVersion: string;
  /** `pvh-elf`: the uncompressed vmlinux, booted through its PVH entry; `bzimage`: the packaged image. */
  kernelFormat: 'pvh-elf' | 'bzimage';
  /** Module signatures are stripped (see stripModuleSignature). */
  moduleSignatures: 'stripped';
  /** File names, relative to the image directory. */
  files: { kernel: string; initrd: string; disk: string };
  /** Bytes on the host (the qcow2's allocated size for the disk). */
  sizes: { kernel: number; initrd: number; disk: number };
  /** The disk's virtual size, in bytes. */
  diskVirtualSize: number;
  /** Modules loaded by the initramfs, in order. */
  modules: string[];
  qgaPortName: string;
  cmdline: string;
  buildMs: number;
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
}

const MANIFEST = 'image.json';
const MANIFEST_FORMAT = 'lxq-vm-image/1';
const FILES = { initrd: 'initrd.img', disk: 'disk.qcow2' } as const;
const KERNEL_META_PACKAGE = 'linux-image-cloud-amd64';
const HOST_QGA = '/usr/sbin/qemu-ga';

/**
 * Modules the guest needs that the cloud kernel may build as modules: virtio transport, disk,
 * console (the agent's channel), the root filesystem, the ACPI power button with evdev (busybox
 * acpid reads /dev/input/event*), virtiofs and virtio-scsi for devices, and the network driver, which `/init` loads only when the VM
 * has a virtio NIC (virtio device id 1). Built-in ones are skipped; dependencies come first.
 */
export const VM_MODULES: { name: string; onlyWithVirtioDevice?: number }[] = [
  { name: 'virtio_pci' },
  { name: 'virtio_blk' },
  { name: 'virtio_console' },
  { name: 'ext4' },
  { name: 'button' },
  { name: 'evdev' },
  { name: 'virtio_net', onlyWithVirtioDevice: 1 },
  // Devices (lib/devices/vm.ts), loaded even without the device at boot, since it may be
  // hot-plugged: virtiofs shares, and disks on virtio-scsi.
  { name: 'virtiofs' },
  { name: 'virtio_scsi' },
  { name: 'sd_mod' },
];

/**
 * The kernel command line for this image, tuned for boot time under TCG:
 * - `console=ttyS0 quiet loglevel=4`: every kernel message crosses the emulated UART; a verbose
 *   boot reaches /init ~2 s later;
 * - `cryptomgr.notests`: no crypto self-tests at boot, the largest single saving (the guest
 *   reaches /init in ~40% of the instructions: 1.2 s instead of 3.0 s of `-icount` virtual time);
 * - `8250.nr_uarts=1`, `i8042.noaux i8042.nokbd`: fewer legacy devices to probe (small);
 * - `panic=-1`: reboot at once on a panic rather than hang;
 * - `lxq.root=/dev/vda`: what the initramfs mounts (`none` keeps the VM in the initramfs).
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
  ].join(' ');
}

export interface QemuArgsOptions {
  /** The VM's own qcow2 overlay over `img.disk`. */
  disk: string;
  qmpSocket: string;
  qgaSocket: string;
  serialLog: string;
  memoryMiB: number;
  cpus: number;
  accel: 'tcg' | 'kvm';
  /** Extra kernel command line words, appended to vmKernelCmdline(). */
  appendCmdline?: string;
  /**
   * A virtio NIC on QEMU's user-mode network (slirp). Off by default: slirp is optional in QEMU
   * builds (check `qemu-system-x86_64 -netdev help`) and the image does not configure it.
   */
  userNet?: boolean;
}

/**
 * QEMU's argv (without the binary) for booting `img` with the VM's overlay `opts.disk`.
 * Machine `q35`: on `pc` (i440FX) the guest spends ~0.3-0.6 s under TCG in ACPI AML routing the
 * legacy PCI interrupt links of the virtio devices (q35's links are fixed), and `pci=noacpi`,
 * which avoids that, leaves this Debian kernel without local APIC, MSI or SMP (it has no MP-table
 * support). `microvm` stalls here.
 */
export function qemuArgsForImage(img: VmImage, opts: QemuArgsOptions): string[] {
  if (!Number.isInteger(opts.cpus) || opts.cpus < 1) throw new InvalidArgument(`cpus must be a positive integer, got ${opts.cpus}`);
  if (!Number.isInteger(opts.memoryMiB) || opts.memoryMiB < 64) {
    throw new InvalidArgument(`memoryMiB must be an integer of at least 64, got ${opts.memoryMiB}`);
  }
  const comma = (s: string) => s.replace(/,/g, ',,'); // QEMU option values escape ',' by doubling
  const append = opts.appendCmdline ? `${vmKernelCmdline()} ${opts.appendCmdline}` : vmKernelCmdline();
  const args = [
    '-nodefaults',
    '-no-user-config',
    '-display', 'none',
    // q35 without the devices lxq does not use (AHCI, SMBus, PS/2, VMware port).
    '-machine', `q35,accel=${opts.accel},sata=off,smbus=off,i8042=off,vmport=off`,
    ...(opts.accel === 'kvm' ? ['-cpu', 'host'] : []),
    '-m', String(opts.memoryMiB),
    '-smp', String(opts.cpus),
    '-kernel', img.kernel,
    '-initrd', img.initrd,
    '-append', append,
    '-drive', `file=${comma(opts.disk)},if=virtio,format=qcow2,discard=unmap`,
    '-serial', `file:${opts.serialLog}`,
    '-qmp', `unix:${comma(opts.qmpSocket)},server=on,wait=off`,
    '-device', 'virtio-serial-pci,id=vser0',
    '-chardev', `socket,path=${comma(opts.qgaSocket)},server=on,wait=off,id=qga0`,
    '-device', `virtserialport,bus=vser0.0,chardev=qga0,name=${QGA_PORT_NAME}`,
  ];
  if (opts.userNet) args.push('-netdev', 'user,id=net0', '-device', 'virtio-net-pci,netdev=net0');
  return args;
}

/** Creates a VM's qcow2 overlay over the image's base disk (optionally grown to `size`, e.g. "1G"). */
export async function createVmOverlay(img: VmImage, overlay: string, size?: string): Promise<void> {
  const args = ['create', '-q', '-f', 'qcow2', '-F', 'qcow2', '-b', path.resolve(img.disk), overlay];
  if (size) args.push(size);
  await run('qemu-img', args);
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

async function buildOnce(dir: string, opts: BuildVmImageOptions): Promise<VmImage> {
  const cached = await readVmImage(dir);
  if (cached) return cached;

  const log = opts.log ?? (() => undefined);
  const t0 = Date.now();
  const step = async <T>(what: string, fn: () => Promise<T>): Promise<T> => {
    const s = Date.now();
    log(`vm image: ${what}...`);
    const r = await fn();
    log(`vm image: ${what}: done in ${Date.now() - s} ms`);
    return r;
  };

  await preflight();
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
    const kernelSide = (async () => {
      const kernel = await step('kernel package', () => fetchKernel(cacheDir, work, opts.kernelPackage, log));
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
      const modules = await step('initramfs', () => buildInitramfs(kernel, path.join(tmp, FILES.initrd)));
      return { kernel, kernelFile, kernelFormat: 'elf' in pvh ? ('pvh-elf' as const) : ('bzimage' as const), modules };
    })();
    const diskSide = step('root disk', () => buildRootDisk(path.join(work, 'rootfs'), path.join(work, 'disk.raw'), path.join(tmp, FILES.disk), opts.diskSize ?? '256M'));
    const [k, d] = await Promise.allSettled([kernelSide, diskSide]);
    if (k.status === 'rejected') throw k.reason;
    if (d.status === 'rejected') throw d.reason;
    const { kernel, kernelFile, kernelFormat, modules } = k.value;
    const disk = d.value;
    await fs.rm(work, { recursive: true, force: true });

    const size = async (f: string) => (await fs.stat(path.join(tmp, f))).size;
    const manifest: VmImageManifest = {
      name: 'vm/default',
      type: 'vm',
      createdAt: new Date().toISOString(),
      meta: {
        format: MANIFEST_FORMAT,
        kernelVersion: kernel.version,
        kernelPackage: kernel.pkg,
        kernelPackageVersion: kernel.pkgVersion,
        kernelFormat,
        moduleSignatures: 'stripped',
        files: { kernel: kernelFile, ...FILES },
        sizes: { kernel: await size(kernelFile), initrd: await size(FILES.initrd), disk: await size(FILES.disk) },
        diskVirtualSize: disk.virtualSize,
        modules,
        qgaPortName: QGA_PORT_NAME,
        cmdline: vmKernelCmdline(),
        buildMs: Date.now() - t0,
      },
    };
    await writeJsonAtomic(path.join(tmp, MANIFEST), manifest);
    try {
      // Replaces `dir` if it does not exist or is an empty directory (e.g. made by an image store).
      await fs.rename(tmp, dir);
    } catch (e) {
      const theirs = await readVmImage(dir);
      if (!theirs) {
        throw new OperationFailed(`cannot move the built VM image into ${dir}: ${(e as Error).message} (remove the directory if it holds no complete image)`, {}, { cause: e });
      }
      await fs.rm(tmp, { recursive: true, force: true });
      return theirs;
    }
    log(`vm image: built ${dir} in ${Date.now() - t0} ms (kernel ${kernel.version})`);
    const img = await readVmImage(dir);
    if (!img) throw new OperationFailed(`the VM image in ${dir} vanished after it was built`);
    return img;
  } catch (e) {
    await fs.rm(tmp, { recursive: true, force: true }).catch(() => undefined);
    throw e;
  }
}

// ---------------------------------------------------------------------------------------------
// Helpers

async function run(cmd: string, args: string[], options: { cwd?: string; maxBuffer?: number } = {}): Promise<string> {
  try {
    const { stdout } = await execFileP(cmd, args, { cwd: options.cwd, maxBuffer: options.maxBuffer ?? 64 * 1024 * 1024, encoding: 'utf8' });
    return stdout;
  } catch (e) {
    const err = e as NodeJS.ErrnoException & { stderr?: string; code?: string | number };
    const hint = err.code === 'ENOENT' ? ` (is ${cmd} installed?)` : '';
    const stderr = String(err.stderr ?? '').trim().split('\n').slice(-5).join('\n');
    throw new OperationFailed(`${cmd} ${args.join(' ')} failed${hint}: ${stderr || err.message}`, { call: cmd, log: stderr }, { cause: e });
  }
}

async function preflight(): Promise<void> {
  await requireStaticBusybox();
  try {
    await fs.access(HOST_QGA);
  } catch {
    throw new OperationFailed(`${HOST_QGA} is missing: install it with "apt-get install qemu-guest-agent"`);
  }
}

/** Debian version comparison, by dpkg itself. */
async function versionGt(a: string, b: string): Promise<boolean> {
  try {
    await execFileP('dpkg', ['--compare-versions', a, 'gt', b]);
    return true;
  } catch {
    return false;
  }
}

async function aptCandidate(pkg: string): Promise<string | undefined> {
  const out = await run('apt-cache', ['policy', pkg]).catch(() => '');
  const m = /Candidate:\s*(\S+)/.exec(out);
  return m && m[1] !== '(none)' ? m[1] : undefined;
}

/**
 * The kernel package: the unsigned image that Debian's `linux-image-cloud-amd64` currently
 * depends on (the suite's kernel), else the newest `linux-image-*-cloud-amd64(-unsigned)` apt
 * knows. (Newer series from the same archive, e.g. 6.12 in bookworm, boot about twice as slowly
 * under TCG here, so the suite's default is preferred to a plain "highest version".)
 */
async function pickKernelPackage(): Promise<string> {
  const deps = await run('apt-cache', ['depends', KERNEL_META_PACKAGE]).catch(() => '');
  const m = /Depends:\s*(linux-image-\S+-cloud-amd64)\b/.exec(deps);
  if (m) {
    for (const name of [`${m[1]}-unsigned`, m[1]]) if (await aptCandidate(name)) return name;
  }
  const found = await run('apt-cache', ['search', '--names-only', '^linux-image-[0-9].*-cloud-amd64(-unsigned)?$']).catch(() => '');
  let best: { name: string; ver: string } | undefined;
  for (const line of found.split('\n')) {
    const name = line.split(' - ')[0]?.trim();
    if (!name || name.endsWith('-dbg')) continue;
    const ver = await aptCandidate(name);
    if (!ver) continue;
    if (!best || (await versionGt(ver, best.ver)) || (ver === best.ver && name.endsWith('-unsigned'))) best = { name, ver };
  }
  if (!best) {
    throw new OperationFailed(`apt knows no Debian cloud kernel (${KERNEL_META_PACKAGE}); run "apt-get update" with Debian's main archive configured`);
  }
  return best.name;
}

async function debField(deb: string, field: string): Promise<string> {
  return (await run('dpkg-deb', ['-f', deb, field])).trim();
}

/** A cached .deb of `pkg` (newest if several). */
async function cachedDeb(cacheDir: string, pkg: string | undefined): Promise<string | undefined> {
  let best: { file: string; ver: string } | undefined;
  for (const f of await fs.readdir(cacheDir).catch(() => [] as string[])) {
    if (!f.endsWith('.deb')) continue;
    if (pkg ? !f.startsWith(`${pkg}_`) : !/^linux-image-.*-cloud-amd64(-unsigned)?_/.test(f)) continue;
    const file = path.join(cacheDir, f);
    const ver = await debField(file, 'Version').catch(() => '');
    if (!ver) continue;
    if (!best || (await versionGt(ver, best.ver))) best = { file, ver };
  }
  return best?.file;
}

interface Kernel {
  pkg: string;
  pkgVersion: string;
  version: string;
  /** The unpacked package. */
  root: string;
  vmlinuz: string;
}

async function fetchKernel(cacheDir: string, work: string, wanted: string | undefined, log: (l: string) => void): Promise<Kernel> {
  let pkg: string | undefined = wanted;
  let deb: string | undefined;
  try {
    pkg ??= await pickKernelPackage();
  } catch (e) {
    // Offline apt: fall back to any cached cloud kernel.
    deb = await cachedDeb(cacheDir, undefined);
    if (!deb) throw e;
    log(`vm image: apt cannot pick a kernel (${(e as Error).message}); using the cached ${path.basename(deb)}`);
  }
  if (!deb && pkg) {
    const want = await aptCandidate(pkg);
    const have = await cachedDeb(cacheDir, pkg);
    if (have && (!want || (await debField(have, 'Version')) === want)) {
      deb = have;
      log(`vm image: using the cached ${path.basename(have)}`);
    } else {
      const dl = await fs.mkdtemp(path.join(cacheDir, '.download-'));
      try {
        deb = await download(pkg, dl, cacheDir, log);
        if (have && have !== deb) await fs.rm(have, { force: true });
      } catch (e) {
        if (!have) throw e;
        deb = have; // offline: an older cached kernel beats no image
        log(`vm image: ${(e as Error).message}; using the cached ${path.basename(have)}`);
      } finally {
        await fs.rm(dl, { recursive: true, force: true });
      }
    }
  }
  if (!deb) throw new OperationFailed('no kernel package to use');
  return unpackKernel(deb, work);
}

/** `apt-get download`s `pkg` into `dl`, then moves it into the cache; the cached file. */
async function download(pkg: string, dl: string, cacheDir: string, log: (l: string) => void): Promise<string> {
  // apt drops privileges to _apt for downloads, which cannot write into our directory.
  const sandbox = process.getuid?.() === 0 ? ['-o', 'APT::Sandbox::User=root'] : [];
  log(`vm image: apt-get download ${pkg}`);
  await run('apt-get', ['download', '-q', ...sandbox, pkg], { cwd: dl });
  const got = (await fs.readdir(dl)).filter((f) => f.endsWith('.deb'));
  if (got.length !== 1) throw new OperationFailed(`apt-get download ${pkg} left ${got.length} .deb files`);
  const deb = path.join(cacheDir, got[0]);
  await fs.rename(path.join(dl, got[0]), deb);
  return deb;
}

async function unpackKernel(deb: string, work: string): Promise<Kernel> {
  const root = path.join(work, 'kernel');
  await fs.mkdir(root);
  await run('dpkg-deb', ['-x', deb, root]);
  const boot = await fs.readdir(path.join(root, 'boot'));
  const vmlinuz = boot.find((f) => f.startsWith('vmlinuz-'));
  if (!vmlinuz) throw new OperationFailed(`${path.basename(deb)} holds no boot/vmlinuz-*`);
  const version = vmlinuz.slice('vmlinuz-'.length);
  await fs.access(path.join(root, 'lib/modules', version));
  return {
    pkg: await debField(deb, 'Package'),
    pkgVersion: await debField(deb, 'Version'),
    version,
    root,
    vmlinuz: path.join(root, 'boot', vmlinuz),
  };
}

/** The module files to insmod, in dependency order, with their paths inside `k.root`. */
async function resolveModules(k: Kernel): Promise<{ file: string; virtioDevice?: number }[]> {
  await run('depmod', ['-b', k.root, k.version]);
  const order: { file: string; virtioDevice?: number }[] = [];
  for (const m of VM_MODULES) {
    const out = await run('modprobe', ['-d', k.root, '-S', k.version, '--show-depends', m.name]);
    for (const line of out.split('\n')) {
      const ins = /^insmod\s+(\S+)/.exec(line.trim());
      if (ins && !order.some((o) => o.file === ins[1])) order.push({ file: ins[1], virtioDevice: m.onlyWithVirtioDevice });
    }
  }
  return order;
}

/** A module file as the kernel takes it (decompressed: busybox insmod may not handle .xz/.zst). */
async function moduleBytes(file: string): Promise<Buffer> {
  const decompress = async (cmd: string) => {
    const { stdout } = await execFileP(cmd, ['-dc', file], { encoding: 'buffer', maxBuffer: 256 * 1024 * 1024 });
    return stdout;
  };
  if (file.endsWith('.ko.xz')) return decompress('xz');
  if (file.endsWith('.ko.zst')) return decompress('zstd');
  if (file.endsWith('.ko.gz')) return decompress('gzip');
  return fs.readFile(file);
}

const MODULE_SIG_MAGIC = Buffer.from('~Module signature appended~\n');

/**
 * The module without its appended signature. Checking a signature costs the guest ~20 ms per
 * module under TCG (RSA in software), most of the module-loading time; the packages were verified
 * by apt, and the kernel, which does not enforce signatures unless locked down (Secure Boot), only
 * notes "module verification failed" and taints itself 'E'.
 */
export function stripModuleSignature(mod: Buffer): Buffer {
  if (mod.length < MODULE_SIG_MAGIC.length + 12 || !mod.subarray(mod.length - MODULE_SIG_MAGIC.length).equals(MODULE_SIG_MAGIC)) return mod;
  const info = mod.subarray(mod.length - MODULE_SIG_MAGIC.length - 12, mod.length - MODULE_SIG_MAGIC.length);
  // struct module_signature: algo, hash, id_type, signer_len, key_id_len, pad[3], sig_len (be32)
  const total = MODULE_SIG_MAGIC.length + 12 + info[3] + info[4] + info.readUInt32BE(8);
  return total <= mod.length ? mod.subarray(0, mod.length - total) : mod;
}

async function busyboxApplets(): Promise<string[]> {
  const out = await run(HOST_BUSYBOX, ['--list-full']);
  return out.split('\n').map((l) => l.trim()).filter((l) => l && l !== 'bin/busybox');
}

async function buildInitramfs(k: Kernel, out: string): Promise<string[]> {
  const mods = await resolveModules(k);
  const cpio = new CpioWriter();
  for (const d of ['bin', 'sbin', 'usr', 'usr/bin', 'usr/sbin', 'etc', 'etc/lxq', 'lib', 'lib/modules', 'dev', 'proc', 'sys', 'run', 'tmp', 'newroot']) {
    cpio.dir(d, d === 'tmp' ? 0o1777 : 0o755);
  }
  cpio.dev('dev/console', 0o600, 5, 1);
  cpio.dev('dev/null', 0o666, 1, 3);
  const busybox = await fs.readFile(HOST_BUSYBOX);
  cpio.file('bin/busybox', 0o755, busybox);
  cpio.file(BUSYBOX_ID_FILE, 0o644, Buffer.from(`${sha256(busybox)}\n`));
  for (const applet of await busyboxApplets()) {
    if (applet in INITRAMFS_FILES) continue;
    cpio.symlink(applet, '/bin/busybox');
  }
  for (const [name, f] of Object.entries(INITRAMFS_FILES)) cpio.file(name, f.mode, Buffer.from(f.text));
  const names: string[] = [];
  const lines: string[] = [];
  for (const m of mods) {
    const name = path.basename(m.file).replace(/\.(xz|zst|gz)$/, '');
    if (names.includes(name)) throw new OperationFailed(`two modules named ${name}`);
    names.push(name);
    lines.push(m.virtioDevice === undefined ? `${name}\n` : `${name} virtio=0x${m.virtioDevice.toString(16).padStart(4, '0')}\n`);
    cpio.file(`lib/modules/${name}`, 0o644, stripModuleSignature(await moduleBytes(m.file)));
  }
  cpio.file('lib/modules/load', 0o644, Buffer.from(lines.join('')));
  // Not compressed: the kernel then only copies it (gzip cost ~0.1 s of guest time to unpack
  // under TCG), and QEMU loads the few MB from the host's page cache.
  await fs.writeFile(out, cpio.finish());
  return names;
}

async function writeGuestFiles(root: string, files: Record<string, GuestFile>): Promise<void> {
  for (const [name, f] of Object.entries(files)) {
    const p = path.join(root, name);
    await fs.mkdir(path.dirname(p), { recursive: true, mode: 0o755 });
    await fs.rm(p, { force: true }); // an applet link of the same name
    await fs.writeFile(p, f.text, { mode: f.mode });
    await fs.chmod(p, f.mode);
  }
}

/** The shared libraries (and loader) a host binary needs, as `ldd` lists them. */
async function lddDeps(bin: string): Promise<string[]> {
  const out = await run('ldd', [bin]);
  const deps: string[] = [];
  for (const line of out.split('\n')) {
    const m = /=>\s*(\/\S+)/.exec(line) ?? /^\s*(\/\S+)\s+\(/.exec(line);
    if (m && !deps.includes(m[1])) deps.push(m[1]);
    if (/=>\s*not found/.test(line)) throw new OperationFailed(`${bin} needs a library the host lacks: ${line.trim()}`);
  }
  return deps;
}

async function buildRootDisk(rootfs: string, raw: string, qcow2: string, size: string): Promise<{ virtualSize: number }> {
  await fs.mkdir(rootfs, { mode: 0o755 });
  for (const d of ['bin', 'sbin', 'usr/bin', 'usr/sbin', 'usr/libexec/lxq', 'etc/init.d', 'etc/acpi', 'lib', 'lib64', 'dev', 'proc', 'sys', 'run', 'tmp', 'var/log', 'var/lib', 'root', 'home', 'mnt']) {
    await fs.mkdir(path.join(rootfs, d), { recursive: true, mode: 0o755 });
  }
  await fs.chmod(path.join(rootfs, 'tmp'), 0o1777);
  await fs.chmod(path.join(rootfs, 'root'), 0o700);
  await fs.symlink('../run', path.join(rootfs, 'var/run'));
  await fs.symlink('../tmp', path.join(rootfs, 'var/tmp'));

  const busybox = await fs.readFile(HOST_BUSYBOX);
  await fs.writeFile(path.join(rootfs, 'bin/busybox'), busybox, { mode: 0o755 });
  await fs.chmod(path.join(rootfs, 'bin/busybox'), 0o755);
  for (const applet of await busyboxApplets()) {
    const p = path.join(rootfs, applet);
    await fs.mkdir(path.dirname(p), { recursive: true });
    await fs.symlink('/bin/busybox', p).catch((e) => {
      if (e.code !== 'EEXIST') throw e;
    });
  }

  // qemu-ga with every library ldd lists (and the loader), at the same paths: the loader finds
  // them in its built-in multiarch directories without an ld.so.cache.
  await fs.copyFile(HOST_QGA, path.join(rootfs, 'usr/sbin/qemu-ga'));
  await fs.chmod(path.join(rootfs, 'usr/sbin/qemu-ga'), 0o755);
  for (const lib of await lddDeps(HOST_QGA)) {
    const dst = path.join(rootfs, lib);
    await fs.mkdir(path.dirname(dst), { recursive: true, mode: 0o755 });
    await fs.copyFile(lib, dst); // follows symlinks: the file lands under the name ldd printed
    await fs.chmod(dst, 0o755);
  }
  await writeGuestFiles(rootfs, ROOTFS_FILES);
  // Written after busybox (the initramfs checks that busybox is not newer than its id).
  await writeGuestFiles(rootfs, { [BUSYBOX_ID_FILE]: { mode: 0o644, text: `${sha256(busybox)}\n` } });

  // ext4 straight from the tree (no loop mount). Inode tables are zeroed now so that the guest
  // kernel does not start its lazy-init thread at boot; no reserved blocks on a VM's own disk.
  await run('mkfs.ext4', ['-q', '-F', '-L', 'lxq-root', '-m', '0', '-d', rootfs, '-E', 'root_owner=0:0,lazy_itable_init=0,lazy_journal_init=0,nodiscard', raw, size]);
  await run('qemu-img', ['convert', '-q', '-f', 'raw', '-O', 'qcow2', raw, qcow2]);
  const info = JSON.parse(await run('qemu-img', ['info', '--output=json', qcow2])) as { 'virtual-size': number };
  await fs.rm(raw, { force: true });
  return { virtualSize: info['virtual-size'] };
}

// ---------------------------------------------------------------------------------------------
// The kernel as an ELF with a PVH entry point

/**
 * The ELF `vmlinux` inside a bzImage, if QEMU can boot it directly through its PVH entry point
 * (a Xen ELF note of type XEN_ELFNOTE_PHYS32_ENTRY): this skips the firmware's real-mode kernel
 * setup and the kernel's self-decompression, about 0.5 s of a TCG boot. Returns the reason when
 * it cannot (the caller then boots the bzImage).
 */
export async function extractPvhKernel(bz: Buffer): Promise<{ elf: Buffer } | { reason: string }> {
  if (bz.length < 0x260 || bz.toString('latin1', 0x202, 0x206) !== 'HdrS') return { reason: 'not a bzImage' };
  if (bz.readUInt16LE(0x206) < 0x208) return { reason: 'boot protocol older than 2.08 (no payload fields)' };
  const setupSects = bz[0x1f1] || 4;
  const start = (setupSects + 1) * 512 + bz.readUInt32LE(0x248);
  const payload = bz.subarray(start, start + bz.readUInt32LE(0x24c));
  if (payload.length < 16 || start + payload.length > bz.length) return { reason: 'bad payload bounds' };
  // The build appends the uncompressed length (le32) to every compressed payload.
  const outLen = payload.readUInt32LE(payload.length - 4);
  if (outLen < 1024 * 1024 || outLen > 512 * 1024 * 1024) return { reason: `implausible vmlinux size ${outLen}` };
  let elf: Buffer;
  try {
    const magic = payload.subarray(0, 6).toString('hex');
    if (magic.startsWith('02214c18')) elf = await lz4LegacyDecompress(payload, outLen);
    else if (magic.startsWith('1f8b')) elf = await gunzip(payload);
    else if (magic === 'fd377a585a00') elf = await pipeThrough('xz', ['-dc', '--single-stream'], payload);
    else if (magic.startsWith('28b52ffd')) elf = await pipeThrough('zstd', ['-dc'], payload);
    else return { reason: `unsupported kernel compression (payload starts with ${magic})` };
  } catch (e) {
    return { reason: `cannot decompress the kernel: ${(e as Error).message}` };
  }
  if (elf.length !== outLen) return { reason: `decompressed ${elf.length} bytes, expected ${outLen}` };
  if (!hasPvhNote(elf)) return { reason: 'the kernel has no PVH entry point (CONFIG_PVH)' };
  return { elf };
}

/** True for an x86-64 ELF with a Xen note of type 18 (XEN_ELFNOTE_PHYS32_ENTRY). */
function hasPvhNote(elf: Buffer): boolean {
  if (elf.length < 64 || elf.readUInt32BE(0) !== 0x7f454c46 || elf[4] !== 2 || elf.readUInt16LE(0x12) !== 0x3e) return false;
  const phoff = Number(elf.readBigUInt64LE(0x20));
  const phentsize = elf.readUInt16LE(0x36);
  const phnum = elf.readUInt16LE(0x38);
  for (let i = 0; i < phnum; i++) {
    const ph = phoff + i * phentsize;
    if (ph + 56 > elf.length || elf.readUInt32LE(ph) !== 4 /* PT_NOTE */) continue;
    let off = Number(elf.readBigUInt64LE(ph + 8));
    const end = off + Number(elf.readBigUInt64LE(ph + 32));
    while (off + 12 <= end && end <= elf.length) {
      const namesz = elf.readUInt32LE(off);
      const descsz = elf.readUInt32LE(off + 4);
      const type = elf.readUInt32LE(off + 8);
      const name = elf.toString('latin1', off + 12, off + 12 + Math.max(0, namesz - 1));
      if (name === 'Xen' && type === 18) return true;
      off += 12 + align4(namesz) + align4(descsz);
    }
  }
  return false;
}

function align4(n: number): number {
  return (n + 3) & ~3;
}

/** Runs `cmd` with `input` on stdin; its stdout, if it looks complete even when it complains. */
function pipeThrough(cmd: string, args: string[], input: Buffer): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const p = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'ignore'] });
    const out: Buffer[] = [];
    p.stdout.on('data', (d: Buffer) => out.push(d));
    p.stdin.on('error', () => undefined); // the tool may stop reading at the trailing length word
    p.once('error', reject);
    p.once('close', () => resolve(Buffer.concat(out)));
    p.stdin.end(input);
  });
}

/** LZ4 "legacy" frames (what `lz4 -l` and the kernel build make), decoded on a worker thread. */
const LZ4_WORKER = `
const { parentPort, workerData } = require('node:worker_threads');
const src = new Uint8Array(workerData.src);
const out = new Uint8Array(workerData.outLen);
const MAGIC = 0x184c2102;
const u32 = (i) => (src[i] | (src[i + 1] << 8) | (src[i + 2] << 16) | (src[i + 3] << 24)) >>> 0;
let ip = 4, op = 0, err = null;
try {
  if (u32(0) !== MAGIC) throw new Error('not an LZ4 legacy frame');
  while (ip + 4 <= src.length) {
    const size = u32(ip);
    if (size === MAGIC) { ip += 4; continue; }
    if (ip + 4 + size > src.length) break; // the trailing length word
    ip += 4;
    const end = ip + size;
    while (ip < end) {
      const token = src[ip++];
      let lit = token >>> 4;
      if (lit === 15) { let b; do { b = src[ip++]; lit += b; } while (b === 255); }
      if (op + lit > out.length || ip + lit > end) throw new Error('corrupt LZ4 literals');
      out.set(src.subarray(ip, ip + lit), op); ip += lit; op += lit;
      if (ip >= end) break;
      const off = src[ip] | (src[ip + 1] << 8); ip += 2;
      let len = token & 15;
      if (len === 15) { let b; do { b = src[ip++]; len += b; } while (b === 255); }
      len += 4;
      if (off === 0 || off > op || op + len > out.length) throw new Error('corrupt LZ4 match');
      if (off >= len) { out.copyWithin(op, op - off, op - off + len); op += len; }
      else { for (let i = 0; i < len; i++, op++) out[op] = out[op - off]; }
    }
  }
} catch (e) { err = String((e && e.message) || e); }
parentPort.postMessage({ err, len: op, out: out.buffer }, [out.buffer]);
`;

function lz4LegacyDecompress(src: Buffer, outLen: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const copy = new Uint8Array(src.length);
    copy.set(src);
    const w = new Worker(LZ4_WORKER, { eval: true, workerData: { src: copy.buffer, outLen }, transferList: [copy.buffer] });
    let done = false;
    w.once('message', (m: { err: string | null; len: number; out: ArrayBuffer }) => {
      done = true;
      if (m.err) reject(new Error(m.err));
      else resolve(Buffer.from(m.out, 0, m.len));
    });
    w.once('error', (e) => {
      done = true;
      reject(e);
    });
    w.once('exit', (code) => {
      if (!done) reject(new Error(`the LZ4 worker exited with code ${code}`));
    });
  });
}

/** A cpio archive in the "newc" format the kernel unpacks, built in memory (owner root). */
class CpioWriter {
  private readonly chunks: Buffer[] = [];
  private ino = 1;
  private readonly mtime = Math.floor(Date.now() / 1000);

  dir(name: string, mode: number): void {
    this.entry(name, 0o040000 | mode, Buffer.alloc(0), 2);
  }

  file(name: string, mode: number, data: Buffer): void {
    this.entry(name, 0o100000 | mode, data);
  }

  symlink(name: string, target: string): void {
    this.entry(name, 0o120000 | 0o777, Buffer.from(target));
  }

  dev(name: string, mode: number, major: number, minor: number): void {
    this.entry(name, 0o020000 | mode, Buffer.alloc(0), 1, major, minor);
  }

  finish(): Buffer {
    this.entry('TRAILER!!!', 0, Buffer.alloc(0), 1, 0, 0, 0);
    return Buffer.concat(this.chunks);
  }

  private entry(name: string, mode: number, data: Buffer, nlink = 1, rmajor = 0, rminor = 0, ino = this.ino++): void {
    const hex = (n: number) => n.toString(16).padStart(8, '0');
    const nameBuf = Buffer.from(`${name}\0`);
    const fields = [ino, mode, 0, 0, nlink, name === 'TRAILER!!!' ? 0 : this.mtime, data.length, 0, 0, rmajor, rminor, nameBuf.length, 0];
    const header = Buffer.from(`070701${fields.map(hex).join('')}`, 'ascii');
    this.chunks.push(header, nameBuf, pad4(header.length + nameBuf.length), data, pad4(data.length));
  }
}

function sha256(b: Buffer): string {
  return createHash('sha256').update(b).digest('hex');
}

function pad4(n: number): Buffer {
  return Buffer.alloc((4 - (n % 4)) % 4);
}
