/**
 * What an image says about running it: the image layer's own vocabulary, which the drivers read
 * (the images know no driver). A container image names its init and the signal that halts it;
 * a VM image names its kernel, initramfs, root disk and kernel command line.
 */
import { InvalidArgument } from '../core/errors';
import { refuseControlChars } from '../core/guard';

/** Image names: lower-case letters, digits, ".", "_", "-", up to 4 parts separated by "/" (each a directory of the store). */
const IMAGE_NAME = /^[a-z0-9][a-z0-9._-]{0,63}(\/[a-z0-9][a-z0-9._-]{0,63}){0,3}$/;

export function isImageName(name: string): boolean {
  return IMAGE_NAME.test(name);
}

/** How a container image's init wants to be run. */
export interface ContainerImageMeta {
  /** Signal that asks this image's init to halt (busybox: SIGUSR1, systemd: SIGRTMIN+3). */
  haltSignal: string;
  /**
   * The init system, default `busybox`. `systemd` needs nothing more of the container config
   * today: liblxc's `cgroup:mixed` mount, `lxc.autodev` and `container=lxc` already give it what
   * it wants (its own writable cgroup, /dev, /run as tmpfs it mounts itself).
   */
  init?: 'busybox' | 'systemd';
  /** The init command, if not `/sbin/init`. */
  initCommand?: string;
}

/** A built VM image's files, as absolute paths. */
export interface VmImage {
  dir: string;
  /** The kernel for `-kernel`: an ELF vmlinux with a PVH entry point, else the bzImage. */
  kernel: string;
  /** The initramfs (cpio newc). */
  initrd: string;
  /** The root disk, a qcow2 base: boot an overlay over it, never the base itself. */
  disk: string;
  /** What `uname -r` says inside the VM. */
  kernelVersion: string;
  /** The kernel command line the image was built for. */
  cmdline: string;
}

/** What a VM image's manifest (`image.json`, the store's shape) records in `meta`. */
export interface VmImageMeta {
  format: 'lxq-vm-image/1';
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
  /** The lxq agent's virtio-serial port, when the image has the agent (lib/images/lxq-agent-binary.ts). */
  lxqAgentPortName?: string;
  cmdline: string;
  /** The root disk's init system: `busybox` (vm/default) or `systemd` (Debian). */
  init?: 'busybox' | 'systemd';
  buildMs: number;
}

/** The halt signals an image may name: a signal name liblxc knows (no numbers, nothing else). */
const SIGNAL = /^SIG(?:[A-Z]{2,7}[0-9]?|RTMIN(?:\+(?:[1-9]|[12][0-9]|30))?|RTMAX(?:-(?:[1-9]|[12][0-9]|30))?)$/;

/** A plain file name inside an image directory: no "/", no "..", nothing QEMU's option syntax reads (","). */
const IMAGE_FILE = /^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$/;

/** Every string in `value` (deeply), refused if it holds a control character; `where` names the field. */
export function refuseControlCharsDeep(where: string, value: unknown, depth = 0): void {
  if (depth > 8) throw new InvalidArgument(`${where} is nested too deeply`);
  if (typeof value === 'string') {
    refuseControlChars(where, value);
  } else if (Array.isArray(value)) {
    value.forEach((v, i) => refuseControlCharsDeep(`${where}[${i}]`, v, depth + 1));
  } else if (value !== null && typeof value === 'object') {
    for (const [k, v] of Object.entries(value)) {
      refuseControlChars(`${where} (a key)`, k);
      refuseControlCharsDeep(`${where}.${k}`, v, depth + 1);
    }
  } else if (value !== undefined && value !== null && typeof value !== 'number' && typeof value !== 'boolean') {
    throw new InvalidArgument(`${where} is a ${typeof value}, not JSON data`);
  }
}

function isObject(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

/**
 * A container image's metadata from elsewhere (an imported image or instance record), checked as
 * strictly as lxq's own builders make it: a known halt signal, a known init, an init command of
 * one line; every other field plain data without control characters.
 */
export function checkContainerImageMeta(where: string, meta: unknown): ContainerImageMeta & Record<string, unknown> {
  if (!isObject(meta)) throw new InvalidArgument(`${where} must be an object`);
  refuseControlCharsDeep(where, meta);
  if (typeof meta.haltSignal !== 'string' || !SIGNAL.test(meta.haltSignal)) {
    throw new InvalidArgument(`${where}.haltSignal must be a signal name such as "SIGPWR" or "SIGRTMIN+3", got ${JSON.stringify(meta.haltSignal)}`);
  }
  if (meta.init !== undefined && meta.init !== 'busybox' && meta.init !== 'systemd') {
    throw new InvalidArgument(`${where}.init must be "busybox" or "systemd", got ${JSON.stringify(meta.init)}`);
  }
  if (meta.initCommand !== undefined && (typeof meta.initCommand !== 'string' || !meta.initCommand.startsWith('/'))) {
    throw new InvalidArgument(`${where}.initCommand must be a command line starting with an absolute path, got ${JSON.stringify(meta.initCommand)}`);
  }
  return meta as ContainerImageMeta & Record<string, unknown>;
}

/** A VM image's file names from elsewhere: plain names inside the image directory. */
export function checkVmImageFiles(where: string, files: unknown): VmImageMeta['files'] {
  if (!isObject(files)) throw new InvalidArgument(`${where}.files must name the kernel, initrd and disk`);
  for (const k of ['kernel', 'initrd', 'disk'] as const) {
    const f = files[k];
    if (typeof f !== 'string' || !IMAGE_FILE.test(f) || f === '..' || f === '.') {
      throw new InvalidArgument(`${where}.files.${k} must be a plain file name inside the image (letters, digits, ".", "_", "+", "-"), got ${JSON.stringify(f)}`);
    }
  }
  const { kernel, initrd, disk } = files as VmImageMeta['files'];
  if (new Set([kernel, initrd, disk]).size !== 3) throw new InvalidArgument(`${where}.files names one file twice`);
  return { kernel, initrd, disk };
}

/** A VM image's metadata from elsewhere: its format, file names, and plain data elsewhere. */
export function checkVmImageMeta(where: string, meta: unknown): VmImageMeta & Record<string, unknown> {
  if (!isObject(meta)) throw new InvalidArgument(`${where} must be an object`);
  refuseControlCharsDeep(where, meta);
  if (meta.format !== 'lxq-vm-image/1') throw new InvalidArgument(`${where}.format must be "lxq-vm-image/1", got ${JSON.stringify(meta.format)}`);
  checkVmImageFiles(where, meta.files);
  if (meta.cmdline !== undefined && typeof meta.cmdline !== 'string') throw new InvalidArgument(`${where}.cmdline must be a string`);
  if (meta.init !== undefined && meta.init !== 'busybox' && meta.init !== 'systemd') {
    throw new InvalidArgument(`${where}.init must be "busybox" or "systemd", got ${JSON.stringify(meta.init)}`);
  }
  return meta as unknown as VmImageMeta & Record<string, unknown>;
}
