/**
 * The initramfs of a VM image: busybox-static, the modules the kernel has as modules, and the
 * `/init` of vm-guest.ts that loads them, mounts the root disk and `switch_root`s into it. Not
 * compressed: the kernel then only copies it.
 */
import { promises as fs } from 'node:fs';
import * as path from 'node:path';

import { OperationFailed } from '../core/errors';
import { run, sha256 } from './build-tools';
import { HOST_BUSYBOX } from './busybox';
import { CpioWriter } from './cpio';
import type { Kernel } from './kernel-package';
import { moduleBytes, resolveModules, stripModuleSignature } from './modules';
import { BUSYBOX_ID_FILE, INITRAMFS_FILES } from './vm-guest';

/** The applet paths of the host's busybox (without bin/busybox itself). */
export async function busyboxApplets(): Promise<string[]> {
  const out = await run(HOST_BUSYBOX, ['--list-full']);
  return out.split('\n').map((l) => l.trim()).filter((l) => l && l !== 'bin/busybox');
}

/** Writes the initramfs to `out` (with `extraModules` besides VM_MODULES); the names of the modules it loads, in order. */
export async function buildInitramfs(k: Kernel, out: string, extraModules: string[] = []): Promise<string[]> {
  const mods = await resolveModules(k, extraModules);
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

