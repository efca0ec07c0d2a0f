/**
 * lxq's options rendered as liblxc configuration. The instance record is the source of truth;
 * the liblxc `config` file is derived from it (as LXD derives it from its database), so raw
 * edits of that file do not survive an `update`.
 */
import * as path from 'node:path';

import { InstanceConfig } from '../../config/options';
import { InvalidArgument } from '../../core/errors';
import { checkRawLxcSeccomp } from '../../config/options/security';
import { refuseControlChars } from '../../core/guard';
import type { ContainerImageMeta } from '../../images/meta';
import type { CgroupLayout, IdMap } from './host-facts';
import { lxcIdmapLines } from './idmap';

export type LxcItem = [key: string, value: string];

export { SECCOMP_POLICY_FILE, seccompPolicy } from './seccomp';
import { interceptedCalls, interceptPaths } from './intercept';
export { ensureListener, startListener } from './intercept';
import { SECCOMP_POLICY_FILE } from './seccomp';

export interface RenderInput {
  name: string;
  dir: string;
  config: InstanceConfig;
  image: ContainerImageMeta;
  idmap: IdMap | null;
  layout: CgroupLayout;
  apparmor: boolean;
  /** The devices' items (lib/drivers/container/devices.ts), after the defaults. */
  devices: LxcItem[];
}

/**
 * The devices cgroup lets a container use only the nodes every container has (liblxc's own
 * common.conf, as LXD): null, zero, full, random, urandom, tty, console, ptmx, its ptys and fuse.
 * Devices add their own nodes to this list.
 */
const DEFAULT_DEVICE_RULES = ['c *:* m', 'b *:* m', 'c 1:3 rwm', 'c 1:5 rwm', 'c 1:7 rwm', 'c 1:8 rwm', 'c 1:9 rwm', 'c 5:0 rwm', 'c 5:1 rwm', 'c 5:2 rwm', 'c 136:* rwm', 'c 10:229 rwm'];

import { cgroupLimits } from './cgroup-limits';
export { cgroupLimits };

export function renderLxcConfig(input: RenderInput): LxcItem[] {
  const { name, dir, config, layout } = input;
  const items: LxcItem[] = [
    ['lxc.uts.name', name],
    ['lxc.rootfs.path', `dir:${path.join(dir, 'rootfs')}`],
    ['lxc.log.file', path.join(dir, 'lxc.log')],
    ['lxc.log.level', 'WARN'],
    ['lxc.console.logfile', path.join(dir, 'console.log')],
    ['lxc.console.size', '1MB'],
    ['lxc.signal.halt', input.image.haltSignal],
    ...(input.image.initCommand ? [['lxc.init.cmd', input.image.initCommand] as LxcItem] : []),
    ['lxc.autodev', '1'],
    ['lxc.pty.max', '64'],
    ['lxc.tty.max', '0'],
    // security.nesting: /proc and /sys writable and the cgroup tree the container's, as LXD gives a nesting container (a nested liblxc writes them).
    ['lxc.mount.auto', config['security.nesting'] === 'true' ? 'proc:rw sys:rw cgroup:rw:force' : 'proc:mixed sys:mixed cgroup:mixed:force'],
    ['lxc.cap.drop', 'sys_module mac_admin mac_override sys_time'],
    ['lxc.seccomp.profile', path.join(dir, SECCOMP_POLICY_FILE)],
  ];
  // security.syscalls.intercept.*: liblxc's monitor forwards the notify rules' calls to lxq's listener.
  if (interceptedCalls(config).length) items.push(['lxc.seccomp.notify.proxy', `unix:${interceptPaths(dir).socket}`]);
  const devicesCgroup = layout.version('devices') === 1 ? 'lxc.cgroup.devices' : 'lxc.cgroup2.devices';
  items.push([`${devicesCgroup}.deny`, 'a'], ...DEFAULT_DEVICE_RULES.map((r): LxcItem => [`${devicesCgroup}.allow`, r]));
  // Without a NIC device the container has its own loopback only (no bridge is assumed).
  if (!input.devices.some(([k]) => k.startsWith('lxc.net.'))) items.push(['lxc.net.0.type', 'empty']);
  items.push(...input.devices);
  if (!input.apparmor) items.push(['lxc.apparmor.profile', 'unconfined']);
  if (input.idmap) for (const line of lxcIdmapLines(input.idmap)) items.push(['lxc.idmap', line]);
  for (const limit of cgroupLimits(config, layout)) {
    if (!limit.set) continue;
    items.push([`${layout.version(limit.controller) === 1 ? 'lxc.cgroup' : 'lxc.cgroup2'}.${limit.key}`, limit.value]);
  }
  for (const [key, value] of Object.entries(config)) {
    if (key.startsWith('environment.')) items.push(['lxc.environment', `${key.slice('environment.'.length)}=${value}`]);
    // rlimits of init, inherited by every process (LXD's older limits.kernel.* keys).
    if (key.startsWith('limits.kernel.')) items.push([`lxc.prlimit.${key.slice('limits.kernel.'.length)}`, value]);
    // net.*: written by liblxc into the container's network namespace as it starts (names checked: namespaced only).
    if (key.startsWith('linux.sysctl.net.')) items.push([`lxc.sysctl.${key.slice('linux.sysctl.'.length)}`, value]);
  }
  const ipc = ipcSysctlHook(config);
  if (ipc) items.push(['lxc.hook.start-host', ipc]);
  // The writer's own guard: an expanded config (profiles and the instance's own keys) or a record from before this rule is checked too.
  checkRawLxcSeccomp(config);
  for (const line of (config['raw.lxc'] ?? '').split('\n')) {
    const m = /^\s*(lxc\.[^=\s]+)\s*=\s*(.*?)\s*$/.exec(line);
    if (m) items.push([m[1], m[2]]);
  }
  return items;
}

/**
 * The IPC namespace's sysctls (kernel.shm*, kernel.msg*, kernel.sem, fs.mqueue.*): liblxc writes
 * lxc.sysctl.* after mounting /proc, whose /proc/sys is read-only but for net/ (proc:mixed), so
 * they are written from the host's /proc into the container's IPC namespace by a start-host hook, after
 * the namespaces are made and before init runs. Their values are numbers (checked in
 * lib/config/options/linux.ts), so nothing in the hook's shell text comes from elsewhere.
 */
export function ipcSysctlHook(config: InstanceConfig): string | undefined {
  const writes: string[] = [];
  for (const [key, value] of Object.entries(config)) {
    const name = key.slice('linux.sysctl.'.length);
    if (!key.startsWith('linux.sysctl.') || name.startsWith('net.')) continue;
    if (!/^[a-z0-9_.]+$/.test(name) || !/^\d+( \d+)*$/.test(value)) throw new InvalidArgument(`linux.sysctl.${name}: a number (or numbers) expected, got ${JSON.stringify(value)}`);
    writes.push(`echo ${value} > /proc/sys/${name.replace(/\./g, '/')}`);
  }
  if (!writes.length) return undefined;
  // The kernel lets only the IPC namespace's root write them: in an unprivileged container, its user namespace's root.
  const user = config['security.privileged'] === 'true' ? '' : ' --user';
  return `/bin/sh -c 'exec nsenter --target "$LXC_PID"${user} --ipc -- /bin/sh -e -c "${writes.join('; ')}"'`;
}

/** A liblxc key: `lxc.` and a dotted name, nothing liblxc's parser could read as `=` or a second key. */
const LXC_KEY = /^lxc\.[A-Za-z0-9_.-]+$/;

/**
 * The liblxc config file's text, one `key = value` per item. Each key and value is checked here,
 * whatever checked it before: a control character (a tab inside a value aside) or a key of any
 * other shape is refused with InvalidArgument, so no value adds a line or a key.
 */
export function lxcConfigText(items: LxcItem[]): string {
  const lines = items.map(([k, v]) => {
    refuseControlChars('the liblxc config: a key', k);
    if (!LXC_KEY.test(k)) throw new InvalidArgument(`the liblxc config: ${JSON.stringify(k)} is not a liblxc key ("lxc." and letters, digits, ".", "_" and "-")`);
    refuseControlChars(`the liblxc config: "${k}"`, v, { allowTab: true });
    return `${k} = ${v}`;
  });
  return '# Generated by lxq from lxq.json; edit the instance with update(), not this file.\n' + lines.join('\n') + '\n';
}
