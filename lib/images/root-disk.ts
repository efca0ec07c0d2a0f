/**
 * VM root disks: the `vm/default` tree (busybox init, the host's qemu-ga with its libraries, the
 * guest files of vm-guest.ts), and any tree made into a qcow2 base disk, ext4 made with
 * `mkfs.ext4 -d` (no loop mount, no root needed).
 */
import { promises as fs } from 'node:fs';
import * as path from 'node:path';

import { OperationFailed } from '../core/errors';
import { run, sha256 } from './build-tools';
import { HOST_BUSYBOX } from './busybox';
import { busyboxApplets } from './initramfs';
import { BUSYBOX_ID_FILE, ROOTFS_FILES, type GuestFile } from './vm-guest';

export const HOST_QGA = '/usr/sbin/qemu-ga';

/** Writes each file with its mode, replacing whatever is at its path (e.g. an applet link). */
export async function writeGuestFiles(root: string, files: Record<string, GuestFile>): Promise<void> {
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

/** Fills `rootfs` (which must not exist) with the `vm/default` root tree. */
export async function buildBusyboxVmTree(rootfs: string): Promise<void> {
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

}

/**
 * Makes the qcow2 base disk `qcow2` of `size` (e.g. "256M") from the tree `rootfs`, through the
 * raw image `raw` (removed after). Returns the disk's virtual size in bytes.
 */
export async function makeRootDisk(rootfs: string, raw: string, qcow2: string, size: string, label = 'lxq-root'): Promise<{ virtualSize: number }> {
  // ext4 straight from the tree (no loop mount). Inode tables are zeroed now so that the guest
  // kernel does not start its lazy-init thread at boot; no reserved blocks on a VM's own disk.
  await run('mkfs.ext4', ['-q', '-F', '-L', label, '-m', '0', '-d', rootfs, '-E', 'root_owner=0:0,lazy_itable_init=0,lazy_journal_init=0,nodiscard', raw, size]);
  await run('qemu-img', ['convert', '-q', '-f', 'raw', '-O', 'qcow2', raw, qcow2]);
  const info = JSON.parse(await run('qemu-img', ['info', '--output=json', qcow2])) as { 'virtual-size': number };
  await fs.rm(raw, { force: true });
  return { virtualSize: info['virtual-size'] };
}
