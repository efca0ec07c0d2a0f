/**
 * The kernel modules a VM's initramfs loads: which ones, in dependency order (depmod and
 * modprobe on the unpacked kernel package), decompressed and without their signatures.
 */
import { promises as fs } from 'node:fs';

import { execFileP, run } from './build-tools';
import type { Kernel } from './kernel-package';

/**
 * Modules the guest needs that the cloud kernel may build as modules: virtio transport, disk,
 * console (the agent's channel), the root filesystem, the ACPI power button with evdev (busybox
 * acpid reads /dev/input/event*), virtiofs and virtio-scsi for devices, and the network driver. Built-in ones are skipped; dependencies come first.
 */
export const VM_MODULES: { name: string; onlyWithVirtioDevice?: number }[] = [
  { name: 'virtio_pci' },
  { name: 'virtio_blk' },
  { name: 'virtio_console' },
  { name: 'ext4' },
  { name: 'button' },
  { name: 'evdev' },
  // Loaded at boot even without a NIC: one may be hot-plugged.
  { name: 'virtio_net' },
  // Devices (lib/drivers/vm/devices.ts), loaded even without the device at boot, since it may be
  // hot-plugged: virtiofs shares, and disks on virtio-scsi.
  { name: 'virtiofs' },
  { name: 'virtio_scsi' },
  { name: 'sd_mod' },
];

/**
 * What the `debian/12/cloud` VM image loads besides: FAT (with the code page and character set
 * its mount asks for), for cloud-init's `cidata` seed disk. The root disk has no /lib/modules, so
 * the kernel cannot load them on demand.
 */
export const CLOUD_SEED_MODULES = ['vfat', 'nls_cp437', 'nls_ascii'];

/** The module files to insmod, in dependency order, with their paths inside `k.root`. */
export async function resolveModules(k: Kernel, extra: string[] = []): Promise<{ file: string; virtioDevice?: number }[]> {
  await run('depmod', ['-b', k.root, k.version]);
  const order: { file: string; virtioDevice?: number }[] = [];
  const all: { name: string; onlyWithVirtioDevice?: number }[] = [...VM_MODULES, ...extra.map((name) => ({ name }))];
  for (const m of all) {
    const out = await run('modprobe', ['-d', k.root, '-S', k.version, '--show-depends', m.name]);
    for (const line of out.split('\n')) {
      const ins = /^insmod\s+(\S+)/.exec(line.trim());
      if (ins && !order.some((o) => o.file === ins[1])) order.push({ file: ins[1], virtioDevice: m.onlyWithVirtioDevice });
    }
  }
  return order;
}

/** A module file as the kernel takes it (decompressed: busybox insmod may not handle .xz/.zst). */
export async function moduleBytes(file: string): Promise<Buffer> {
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

