/**
 * What an image says about running it: the image layer's own vocabulary, which the drivers read
 * (the images know no driver). A container image names its init and the signal that halts it;
 * a VM image names its kernel, initramfs, root disk and kernel command line.
 */

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
  cmdline: string;
  /** The root disk's init system: `busybox` (vm/default) or `systemd` (Debian). */
  init?: 'busybox' | 'systemd';
  buildMs: number;
}
