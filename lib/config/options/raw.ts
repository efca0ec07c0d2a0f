/** LXD's raw group: raw.* options, checked so that they cannot take over what lxq manages. */
import { apparmorEnabled } from '../../core/proc';
import type { OptionSpec } from './spec';

/** liblxc keys that lxq sets itself: overriding them could point destroy at files outside the instance. */
const LXQ_OWNED_LXC_KEYS = ['lxc.rootfs', 'lxc.log.file', 'lxc.uts.name', 'lxc.idmap', 'lxc.console.logfile'];

function rawLxcValidator(value: string): void {
  for (const line of value.split('\n')) {
    const t = line.trim();
    if (!t || t.startsWith('#')) continue;
    const m = /^(lxc\.[A-Za-z0-9_.-]+)\s*=\s*(.*)$/.exec(t);
    if (!m) throw new Error(`each line must read "lxc.<key> = <value>", got ${JSON.stringify(t)}`);
    if (LXQ_OWNED_LXC_KEYS.some((k) => m[1] === k || m[1].startsWith(k + '.'))) {
      throw new Error(`${m[1]} is managed by lxq (${LXQ_OWNED_LXC_KEYS.join(', ')} cannot be set through raw.lxc)`);
    }
  }
}

function rawQemuValidator(value: string): void {
  const args = splitArgs(value);
  const forbidden = ['-qmp', '-chardev', '-monitor', '-daemonize', '-pidfile', '-serial', '-kernel', '-initrd'];
  for (const a of args) {
    if (forbidden.includes(a)) throw new Error(`${a} is managed by lxq and cannot be set through raw.qemu`);
  }
}

/** Splits a raw.qemu string into arguments: whitespace-separated, with '…' or "…" quoting. */
export function splitArgs(value: string): string[] {
  const out: string[] = [];
  const re = /"([^"]*)"|'([^']*)'|(\S+)/g;
  let m: RegExpExecArray | null;
  while ((m = re.exec(value))) out.push(m[1] ?? m[2] ?? m[3]);
  return out;
}

/**
 * A whole seccomp policy in liblxc's version 2 format: "2", then "denylist" or "allowlist" (and
 * a default action), then arch sections ("[all]", "[x86_64]", "[i386]"…), rules and comments.
 * Rules are liblxc's, passed as they are; `notify` is refused (lxq runs no listener).
 */
function rawSeccompValidator(value: string): void {
  const lines = value.split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('#'));
  if (lines[0] !== '2') throw new Error('the first line must be "2" (liblxc\'s seccomp policy format, version 2)');
  if (!/^(denylist|allowlist|blacklist|whitelist)(\s+(kill|allow|trap|errno\s+\d{1,4}))?$/.test(lines[1] ?? '')) {
    throw new Error('the second line must be "denylist" or "allowlist", optionally followed by its default action (kill, allow, trap, errno N)');
  }
  for (const l of lines.slice(2)) {
    if (/^\[[a-z0-9_]+\]$/.test(l) || l === 'reject_force_umount') continue;
    if (!/^[a-z0-9_]+(\s+\S.*)?$/.test(l)) throw new Error(`${JSON.stringify(l)} is not a seccomp rule ("name [action] [arguments]") or section ("[arch]")`);
    if (/\bnotify\b/.test(l)) throw new Error(`${JSON.stringify(l)}: "notify" needs a seccomp listener, which lxq does not run`);
  }
}

export const RAW_OPTIONS: readonly OptionSpec[] = [
  {
    key: 'raw.lxc',
    type: 'lines',
    condition: 'container',
    live: false,
    description: 'Raw liblxc configuration lines ("lxc.key = value"), appended to the generated configuration.',
    validate: rawLxcValidator,
  },
  {
    key: 'raw.seccomp',
    type: 'lines',
    condition: 'container',
    live: false,
    description: "The container's whole seccomp policy in liblxc's format (\"2\", \"denylist\"/\"allowlist\", rules), instead of the one security.syscalls.* make.",
    validate: rawSeccompValidator,
  },
  {
    key: 'raw.apparmor',
    type: 'lines',
    condition: 'both',
    live: false,
    description: "AppArmor rules added to the instance's profile.",
    hostDependent: 'refused (NotSupported): lxq generates no AppArmor profile of its own to hold these rules (and AppArmor must be enabled on the host)',
    notSupported: apparmorEnabled()
      ? "lxq does not generate AppArmor profiles of its own to add these rules to (containers get liblxc's)"
      : 'AppArmor is not enabled on this host (no /sys/kernel/security/apparmor), so no profile can hold these rules',
  },
  {
    key: 'raw.idmap',
    type: 'lines',
    condition: 'both',
    live: false,
    description: 'Host ids mapped into the instance beside its id range ("both 1000 1000").',
    notSupported:
      "lxq maps a container by one contiguous id range (its root's shifting, idmapped lowers and shifted files all take one base); splitting it around single host ids is not implemented",
  },
  {
    key: 'raw.qemu',
    type: 'string',
    condition: 'vm',
    live: false,
    description: 'Extra QEMU command-line arguments (the QMP, agent, serial and kernel arguments are lxq\'s).',
    validate: rawQemuValidator,
  },
];
