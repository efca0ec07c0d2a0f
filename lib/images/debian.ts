/**
 * Debian images (`debian/12`): a systemd root tree made by `mmdebstrap` from the host's own apt
 * sources and apt settings (the only archive this machine reaches; never a hard-coded mirror),
 * then set up to be an instance's root: an empty machine id, no hostname (the instance's name
 * is written at its first start), systemd-networkd with DHCP on every Ethernet interface.
 *
 * The same tree is a container image's `rootfs/` and, with the VM additions below, a VM image's
 * root disk (vm-image.ts makes the disk, the kernel and the initramfs).
 */
import type { ChildProcessByStdio } from 'node:child_process';
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import type { Readable } from 'node:stream';

import { OperationFailed } from '../core/errors';
import { run } from './build-tools';
import { spawnHelper } from '../core/run';
import type { GuestFile } from './vm-guest';
import { writeGuestFiles } from './root-disk';

export interface DebianRelease {
  /** The version in the image name (`debian/12`). */
  version: string;
  suite: string;
}

export const DEBIAN_RELEASES: DebianRelease[] = [{ version: '12', suite: 'bookworm' }];

/** What every Debian image has besides the minbase variant. */
export const DEBIAN_PACKAGES = ['systemd-sysv', 'udev', 'dbus', 'iproute2', 'procps', 'kmod', 'qemu-guest-agent'];

/** The unit that writes the instance's hostname (set by lxq: lxc.uts.name, or the VM's kernel command line) at its first start. */
const FIRST_HOSTNAME = `[Unit]
Description=lxq: keep the instance name as the hostname
DefaultDependencies=no
ConditionPathExists=!/etc/hostname
After=local-fs.target
Before=sysinit.target

[Service]
Type=oneshot
ExecStart=/bin/sh -c 'hostname > /etc/hostname'

[Install]
WantedBy=sysinit.target
`;

/** Files of every Debian tree, written over what the packages installed. */
export const DEBIAN_FILES: Record<string, GuestFile> = {
  // Every Ethernet interface whatever its name (a NIC device's `name`, agent.nic_config's
  // renames; lo is Type=loopback). A cloud-init network-config's files (10-cloud-init-*) come first.
  'etc/systemd/network/20-ether.network': { mode: 0o644, text: '[Match]\nType=ether\n\n[Network]\nDHCP=yes\n' },
  'etc/hosts': { mode: 0o644, text: '127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n' },
  'etc/systemd/system/lxq-hostname.service': { mode: 0o644, text: FIRST_HOSTNAME },
  // debugfs cannot be mounted in an unprivileged container (the one failed unit there).
  'etc/systemd/system/sys-kernel-debug.mount.d/lxq.conf': { mode: 0o644, text: '[Unit]\nConditionVirtualization=!container\n' },
  // An empty machine id: systemd makes a new one at each instance's first boot.
  'etc/machine-id': { mode: 0o444, text: '' },
};

/** Files only the VM variant's root disk has. */
export const DEBIAN_VM_FILES: Record<string, GuestFile> = {
  // Mounted read-write by the initramfs already: no fsck of a mounted root.
  'etc/fstab': { mode: 0o644, text: '/dev/vda / ext4 rw,noatime 0 0\n' },
};

/**
 * What a VM's systemd does not run (masked: a link to /dev/null in /etc, which `rm` undoes).
 * Under TCG every program systemd starts costs tens of milliseconds of emulated CPU, and before
 * any unit starts (the lxq agent's first) systemd runs every generator. Each of these has nothing
 * to do in an lxq VM; what is lost is said here and in the README:
 * - generators: gpt-auto (mounts GPT partitions by type: the root disk has no partition table),
 *   hibernate-resume (no hibernation), cryptsetup/integritysetup/veritysetup (/etc/crypttab,
 *   integritytab, veritytab: none, and no cryptsetup in the image), system-update (offline
 *   updates, which apt does not use), run and debug (`systemd.run=`, `systemd.mask=`,
 *   `systemd.debug_shell` on the kernel command line, which lxq writes). Kept: fstab, getty (the
 *   serial console's login), sysv and rc-local (packages that still ship only an init script);
 * - units: e2scrub_reap (stale LVM snapshots of e2scrub: no LVM), modprobe@drm (no display),
 *   modprobe@efi_pstore (no EFI), modprobe@dm_mod (device-mapper loads on its first use anyway),
 *   the hugetlbfs mount on /dev/hugepages and debugfs/tracefs on /sys/kernel/{debug,tracing}
 *   (mount them by hand to use them: `mount -t debugfs none /sys/kernel/debug`).
 * No security mitigation is involved.
 */
export const DEBIAN_VM_MASKED = {
  generators: ['gpt-auto', 'hibernate-resume', 'cryptsetup', 'integritysetup', 'veritysetup', 'system-update', 'run', 'debug'].map((g) => `systemd-${g}-generator`),
  units: ['e2scrub_reap.service', 'modprobe@drm.service', 'modprobe@efi_pstore.service', 'modprobe@dm_mod.service', 'dev-hugepages.mount', 'sys-kernel-debug.mount', 'sys-kernel-tracing.mount'],
};

/** Masks DEBIAN_VM_MASKED in the tree `root` (systemd's own way: links to /dev/null in /etc). */
export async function maskVmUnits(root: string): Promise<void> {
  const dirs = { generators: 'etc/systemd/system-generators', units: 'etc/systemd/system' };
  for (const kind of ['generators', 'units'] as const) {
    const dir = path.join(root, dirs[kind]);
    await fs.mkdir(dir, { recursive: true, mode: 0o755 });
    for (const name of DEBIAN_VM_MASKED[kind]) {
      await fs.rm(path.join(dir, name), { force: true });
      await fs.symlink('/dev/null', path.join(dir, name));
    }
  }
}

/** Units enabled (and disabled) in every Debian tree. */
const ENABLE = ['systemd-networkd.service', 'lxq-hostname.service'];
/**
 * network-online.target would wait up to two minutes for an address (and fail the boot) where
 * no network is attached; lxq reports the boot done when systemd is.
 */
const DISABLE = ['systemd-networkd-wait-online.service'];

export interface DebianTreeOptions {
  release: DebianRelease;
  /** More packages (a derived image). */
  packages?: string[];
  /** Shell commands run in the tree (chroot) after the packages are installed. */
  run?: string[];
  /** Each status line of mmdebstrap. */
  log?: (line: string) => void;
  /** The fraction (0..1) of the tree done. */
  onProgress?: (fraction: number, phase: string) => void;
}

/** The host's apt sources, one file each (one-line `.list` or deb822 `.sources`), for `suite`. */
export async function hostAptSources(suite: string): Promise<string[]> {
  const files: string[] = [];
  const main = '/etc/apt/sources.list';
  if ((await fs.readFile(main, 'utf8').catch(() => '')).trim()) files.push(main);
  const dir = '/etc/apt/sources.list.d';
  for (const f of (await fs.readdir(dir).catch(() => [] as string[])).sort()) {
    if (f.endsWith('.list') || f.endsWith('.sources')) files.push(path.join(dir, f));
  }
  const texts: string[] = [];
  const hostSuite = /^VERSION_CODENAME=(\S+)/m.exec(await fs.readFile('/etc/os-release', 'utf8').catch(() => ''))?.[1];
  for (const f of files) {
    let text = await fs.readFile(f, 'utf8');
    // The host's own release's entries stand for this one (bookworm-updates → <suite>-updates).
    if (hostSuite && hostSuite !== suite) text = text.replace(new RegExp(`\\b${hostSuite}(?=(-[a-z]+)?\\b)`, 'g'), suite);
    if (!/debian/i.test(text)) continue; // a third-party archive is not the image's
    texts.push(text);
  }
  if (texts.length === 0) throw new OperationFailed(`the host's apt has no Debian sources (${main}, ${dir}): an image needs Debian's archive`);
  return texts;
}

/**
 * The host's network settings for apt (`Acquire::…`: proxies, retries, validity checks of a
 * snapshot mirror), as apt.conf lines for the build's apt.
 */
export async function hostAptOptions(): Promise<string> {
  // An image's cache key includes these, so every create asked for them: `apt-config dump` costs
  // a process (30–80 ms here). Its answer only changes when apt's configuration files do.
  const stamp = await aptConfigStamp();
  if (aptOptions?.stamp !== stamp) aptOptions = { stamp, value: await aptOptionsNow() };
  return aptOptions.value;
}

let aptOptions: { stamp: string; value: string } | undefined;

/** Size and mtime of every file `apt-config` reads (and APT_CONFIG, which names another). */
async function aptConfigStamp(): Promise<string> {
  const confd = '/etc/apt/apt.conf.d';
  const names = (await fs.readdir(confd).catch(() => [] as string[])).sort().map((f) => path.join(confd, f));
  const files = ['/etc/apt/apt.conf', confd, ...names, ...(process.env.APT_CONFIG ? [process.env.APT_CONFIG] : [])];
  const stamps = await Promise.all(files.map((f) => fs.stat(f).then((st) => `${f}:${st.size}:${st.mtimeMs}`, () => `${f}:-`)));
  return stamps.join('|');
}

async function aptOptionsNow(): Promise<string> {
  const dump = await run('apt-config', ['dump']).catch(() => '');
  const skip = /^Acquire::(IndexTargets|Changelogs|cdrom|CompressionTypes)\b/;
  return dump
    .split('\n')
    .filter((l) => l.startsWith('Acquire::') && !skip.test(l))
    .join('\n');
}

/** mmdebstrap's phases (status lines) and how far along the tree each one means. */
const PHASES: [RegExp, number, string][] = [
  [/^I: running apt-get update/, 0.05, 'updating the package lists'],
  [/^I: downloading packages/, 0.15, 'downloading packages'],
  [/^I: extracting archives/, 0.4, 'extracting archives'],
  [/^I: installing essential packages/, 0.5, 'installing essential packages'],
  [/^I: installing remaining packages/, 0.65, 'installing packages'],
  [/^I: running --customize-hook/, 0.85, 'running the commands'],
  [/^I: cleaning package lists/, 0.95, 'cleaning up'],
];

/**
 * Makes the Debian tree in `root` (which must not exist). A package apt cannot find fails with
 * apt's own message.
 */
export async function buildDebianTree(root: string, opts: DebianTreeOptions): Promise<{ packages: number }> {
  const work = `${root}.mmdebstrap`;
  await fs.mkdir(work, { recursive: true, mode: 0o700 });
  try {
    const sources = await hostAptSources(opts.release.suite);
    const aptopt = path.join(work, 'host-apt.conf');
    await fs.writeFile(aptopt, (await hostAptOptions()) + '\n');
    const options = ['--variant=minbase', `--include=${[...DEBIAN_PACKAGES, ...(opts.packages ?? [])].join(',')}`, '--format=directory', `--aptopt=${aptopt}`];
    for (const cmd of opts.run ?? []) options.push(`--customize-hook=chroot "$1" /bin/sh -ec ${shellQuote(cmd)}`);
    const sourceFiles: string[] = [];
    for (const [i, text] of sources.entries()) {
      sourceFiles.push(path.join(work, `source-${i}${text.includes('URIs:') ? '.sources' : '.list'}`));
      await fs.writeFile(sourceFiles[i], text);
    }
    await mmdebstrap([...options, '--', opts.release.suite, root, ...sourceFiles], opts);
  } finally {
    await fs.rm(work, { recursive: true, force: true });
  }
  await writeGuestFiles(root, DEBIAN_FILES);
  await fs.rm(path.join(root, 'etc/hostname'), { force: true });
  await fs.rm(path.join(root, 'var/lib/dbus/machine-id'), { force: true });
  await run('systemctl', ['--root', root, 'enable', ...ENABLE]);
  await run('systemctl', ['--root', root, 'disable', ...DISABLE]).catch(() => undefined);
  // The lists are stale by the time anyone uses the image (apt-get update fetches them again).
  await fs.rm(path.join(root, 'var/lib/apt/lists'), { recursive: true, force: true });
  await fs.mkdir(path.join(root, 'var/lib/apt/lists/partial'), { recursive: true, mode: 0o700 });
  const status = await fs.readFile(path.join(root, 'var/lib/dpkg/status'), 'utf8');
  return { packages: (status.match(/^Status: install ok installed$/gm) ?? []).length };
}

function shellQuote(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

/** Runs mmdebstrap, reporting its phases; a failure quotes apt's errors. */
function mmdebstrap(args: string[], opts: DebianTreeOptions): Promise<void> {
  return new Promise((resolve, reject) => {
    // Its own process group, killed whole if this process dies (apt and dpkg are its children).
    const p = spawnHelper('mmdebstrap', args, { stdio: ['ignore', 'ignore', 'pipe'], group: true }) as ChildProcessByStdio<null, null, Readable>;
    const lines: string[] = [];
    let buf = '';
    p.stderr.setEncoding('utf8');
    p.stderr.on('data', (d: string) => {
      buf += d;
      let i: number;
      while ((i = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        lines.push(line);
        if (lines.length > 400) lines.shift();
        opts.log?.(line);
        const phase = PHASES.find(([re]) => re.test(line));
        if (phase) opts.onProgress?.(phase[1], phase[2]);
      }
    });
    p.once('error', (e) => reject(new OperationFailed(`cannot run mmdebstrap (is it installed? apt-get install mmdebstrap): ${e.message}`, { call: 'mmdebstrap' }, { cause: e })));
    p.once('close', (code) => {
      if (code === 0) return resolve();
      if (code === 127 && lines.some((l) => /mmdebstrap: (not found|No such file)/.test(l))) {
        return reject(new OperationFailed('cannot run mmdebstrap (is it installed? apt-get install mmdebstrap)', { call: 'mmdebstrap' }));
      }
      const errors = lines.filter((l) => /^E: /.test(l));
      const log = (errors.length ? errors : lines.slice(-8)).join('\n');
      reject(new OperationFailed(`mmdebstrap failed (exit code ${code}): ${log}`, { call: 'mmdebstrap', log: lines.slice(-40).join('\n') }));
    });
  });
}
