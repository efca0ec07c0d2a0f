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

/** Sections of a QEMU config file that would take over lxq's channels to QEMU (its monitors, agents, serial console). */
const LXQ_OWNED_QEMU_SECTIONS = ['chardev', 'mon'];

/**
 * raw.qemu.conf is a QEMU config file (`-readconfig`): `[group]` or `[group "id"]` headers,
 * `key = "value"` lines, comments. Checked line by line so that a typo is an error at create,
 * not a VM that will not start.
 */
function rawQemuConfValidator(value: string): void {
  let section: string | undefined;
  for (const line of value.split('\n')) {
    const t = line.trim();
    if (!t || t.startsWith('#')) continue;
    const header = /^\[([a-z][a-z0-9_-]*)(?:\s+"([A-Za-z0-9_.-]+)")?\]$/.exec(t);
    if (header) {
      if (LXQ_OWNED_QEMU_SECTIONS.includes(header[1])) throw new Error(`[${header[1]}] sections are managed by lxq (${LXQ_OWNED_QEMU_SECTIONS.join(', ')} cannot be set through raw.qemu.conf)`);
      section = header[1];
      continue;
    }
    if (!/^[a-z][a-z0-9_.-]*\s*=\s*"[^"]*"$/.test(t)) throw new Error(`each line must be a [group] or [group "id"] header or read key = "value", got ${JSON.stringify(t)}`);
    if (!section) throw new Error(`${JSON.stringify(t)} comes before any [group] header`);
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

/**
 * One line of raw.idmap: `count` host ids from `host` seen as `ns`… inside, for uids, gids or both.
 *
 * @example
 * ```ts
 * const [e] = parseRawIdmap('both 1000 1000'); // { uid: true, gid: true, host: 1000, ns: 1000, count: 1, line: 'both 1000 1000' }
 * ```
 */
export interface RawIdmapEntry {
  readonly uid: boolean;
  readonly gid: boolean;
  readonly host: number;
  readonly ns: number;
  readonly count: number;
  /** The line as written, for errors. */
  readonly line: string;
}

/** The highest id plus one (the kernel's (uid_t)-1 is never an id). */
const ID_LIMIT = 2 ** 32 - 1;

function idRange(text: string, line: string): { start: number; count: number } {
  const m = /^(\d{1,10})(?:-(\d{1,10}))?$/.exec(text);
  if (!m) throw new Error(`${JSON.stringify(line)}: ${JSON.stringify(text)} is not an id or a range of ids ("1000", "1000-1999")`);
  const start = Number(m[1]);
  const end = m[2] === undefined ? start : Number(m[2]);
  if (end < start) throw new Error(`${JSON.stringify(line)}: the range ${text} ends before it starts`);
  if (end >= ID_LIMIT) throw new Error(`${JSON.stringify(line)}: ${end} is not an id (ids are below ${ID_LIMIT})`);
  return { start, count: end - start + 1 };
}

/**
 * LXD's raw.idmap, parsed and checked on its own: each line "both|uid|gid HOST[-END] INSIDE[-END]"
 * with ranges of one size; no two lines may map the same host id or the same inside id (of one kind).
 * Whether the host ids are the caller's to map is the container driver's check (it knows the range).
 *
 * @example
 * ```ts
 * parseRawIdmap('uid 50-60 500-510\ngid 100000-110000 10000-20000');
 * ```
 */
export function parseRawIdmap(value: string): RawIdmapEntry[] {
  const out: RawIdmapEntry[] = [];
  for (const raw of value.split('\n')) {
    const line = raw.trim();
    if (!line) continue;
    const fields = line.split(/\s+/);
    if (fields.length !== 3 || !['both', 'uid', 'gid'].includes(fields[0])) {
      throw new Error(`${JSON.stringify(line)}: each line reads "both|uid|gid HOST[-END] INSIDE[-END]" (e.g. "both 1000 1000")`);
    }
    const host = idRange(fields[1], line);
    const ns = idRange(fields[2], line);
    if (host.count !== ns.count) throw new Error(`${JSON.stringify(line)}: the host range has ${host.count} ids and the inside one ${ns.count}`);
    const entry: RawIdmapEntry = { uid: fields[0] !== 'gid', gid: fields[0] !== 'uid', host: host.start, ns: ns.start, count: host.count, line };
    for (const other of out) {
      if (!((entry.uid && other.uid) || (entry.gid && other.gid))) continue;
      const hit = (a: number, b: number): boolean => a < b + other.count && b < a + entry.count;
      if (hit(entry.host, other.host)) throw new Error(`${JSON.stringify(line)} and ${JSON.stringify(other.line)} map the same host ids`);
      if (hit(entry.ns, other.ns)) throw new Error(`${JSON.stringify(line)} and ${JSON.stringify(other.line)} map the same ids inside`);
    }
    out.push(entry);
  }
  return out;
}

export const RAW_OPTIONS: readonly OptionSpec[] = [
  {
    key: 'raw.lxc',
    type: 'lines',
    condition: 'container',
    live: false,
    description: 'Raw liblxc configuration lines ("lxc.key = value"), appended to the generated configuration. A line that would replace lxq\'s seccomp policy (lxc.seccomp.profile, lxc.seccomp.notify.*, lxc.include) needs security.syscalls.deny_default: false beside it.',
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
    condition: 'container',
    lxdCondition: 'both',
    live: false,
    description:
      'Host ids mapped into the container beside its id range, one line each ("both 1000 1000", "uid 50-60 500-510": both, uid or gid, the host id or range, the inside one), punched into its map as LXD does. ' +
      "The host ids must be root's in /etc/subuid and /etc/subgid (e.g. \"root:1000:1\") and outside the container's own range. Files under those ids keep their host owner; " +
      "when it changes, the container's own tree is re-shifted as LXD's (at once if stopped, else at the next start) so that its files keep their inside owners (on an overlay pool its upper directory is, and the image's shared lower layer is seen through the new map; POSIX ACLs and namespaced file capabilities move with the files). VMs: refused (LXD maps a VM's virtiofs shares with it; lxq's shares are not mapped).",
    validate: (v) => void parseRawIdmap(v),
  },
  {
    key: 'raw.qemu',
    type: 'string',
    condition: 'vm',
    live: false,
    description: 'Extra QEMU command-line arguments (the QMP, agent, serial and kernel arguments are lxq\'s).',
    validate: rawQemuValidator,
  },
  {
    key: 'raw.qemu.conf',
    type: 'lines',
    condition: 'vm',
    live: false,
    description:
      "A QEMU config file given to QEMU with -readconfig: [group \"id\"] sections and key = \"value\" lines adding devices, objects or drives. Unlike LXD's, it cannot override or remove lxq's own devices (lxq writes them as command-line arguments, not config sections); chardev and mon sections are lxq's.",
    validate: rawQemuConfValidator,
  },
];
