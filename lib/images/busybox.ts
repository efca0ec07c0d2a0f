/**
 * The `busybox` container image, built from the host's static busybox (Debian's busybox-static):
 * one binary, its applet links, and just enough of /etc for init and a root shell.
 */
import { promises as fs } from 'node:fs';
import * as path from 'node:path';

import { OperationFailed } from '../core/errors';
import { isStaticElf } from '../core/elf';
import { execHelper } from '../core/run';
import { DHCP_FILES } from './dhcp-client';
import type { ContainerImageMeta } from './meta';

const run = (cmd: string, args: string[]) => execHelper(cmd, args);
export const HOST_BUSYBOX = '/bin/busybox';

export const BUSYBOX_FILES: Record<string, { mode: number; text: string }> = {
  'etc/passwd': { mode: 0o644, text: 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' },
  'etc/group': { mode: 0o644, text: 'root:x:0:\nnogroup:x:65534:\n' },
  'etc/shadow': { mode: 0o600, text: 'root:*:19000:0:99999:7:::\n' },
  'etc/hosts': { mode: 0o644, text: '127.0.0.1 localhost\n::1 localhost\n' },
  'etc/resolv.conf': { mode: 0o644, text: '' },
  // init runs rcS, then a root shell on the console once someone presses Enter there (`lxq console`;
  // root has no password, so a getty's login could not be used). /dev/console is lxc's pty: opened
  // by name it becomes the shell's controlling terminal (job control, Ctrl-C). lxc's halt signal
  // (SIGUSR1) stops init.
  'etc/inittab': { mode: 0o644, text: '::sysinit:/etc/init.d/rcS\nconsole::askfirst:-/bin/sh\n::shutdown:/bin/sync\n' },
  'etc/init.d/rcS': {
    mode: 0o755,
    text: '#!/bin/sh\nmkdir -p /run /tmp /var/run\nip link set lo up 2>/dev/null\n/sbin/lxq-dhcp &\necho "lxq busybox: up"\n',
  },
  ...DHCP_FILES,
};

/** Both image builders copy the host's busybox into a root without libraries: it must be static. */
export async function requireStaticBusybox(): Promise<void> {
  try {
    await fs.access(HOST_BUSYBOX);
  } catch {
    throw new OperationFailed(`${HOST_BUSYBOX} is missing: install it with "apt-get install busybox-static"`);
  }
  if (!(await isStaticElf(HOST_BUSYBOX))) {
    throw new OperationFailed(`${HOST_BUSYBOX} is dynamically linked: install Debian's busybox-static, which replaces it`);
  }
}

/** Builds the image's root filesystem into `rootfs` (which must not exist). */
export async function buildBusyboxRootfs(rootfs: string): Promise<ContainerImageMeta & { busybox: string }> {
  await requireStaticBusybox();
  const [{ stdout: applets }, { stdout: banner }] = await Promise.all([
    run(HOST_BUSYBOX, ['--list-full']),
    run(HOST_BUSYBOX, ['--help']).catch((e) => ({ stdout: String(e.stdout ?? '') })),
  ]);
  await fs.mkdir(rootfs, { mode: 0o755 });
  for (const d of ['bin', 'sbin', 'usr/bin', 'usr/sbin', 'etc/init.d', 'dev', 'proc', 'sys', 'run', 'var/log', 'home', 'mnt', 'root', 'tmp']) {
    await fs.mkdir(path.join(rootfs, d), { recursive: true, mode: 0o755 });
  }
  await fs.chmod(path.join(rootfs, 'tmp'), 0o1777);
  await fs.chmod(path.join(rootfs, 'root'), 0o700);
  await fs.copyFile(HOST_BUSYBOX, path.join(rootfs, 'bin/busybox'));
  await fs.chmod(path.join(rootfs, 'bin/busybox'), 0o755);
  for (const applet of applets.split('\n').map((l) => l.trim()).filter(Boolean)) {
    if (applet === 'bin/busybox') continue;
    await fs.symlink('/bin/busybox', path.join(rootfs, applet)).catch((e) => {
      if (e.code !== 'EEXIST') throw e;
    });
  }
  for (const [file, { mode, text }] of Object.entries(BUSYBOX_FILES)) {
    await fs.writeFile(path.join(rootfs, file), text, { mode });
    await fs.chmod(path.join(rootfs, file), mode);
  }
  return { haltSignal: 'SIGUSR1', busybox: banner.split('\n')[0].trim() };
}
