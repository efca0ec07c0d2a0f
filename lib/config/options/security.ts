/**
 * LXD's security group: security.* options. Every key of LXD's group is declared: those lxq
 * honours with their effect, the others refused with NotSupported naming what is missing, so
 * that an LXD config is never accepted and silently ignored.
 */
import { existsSync, readFileSync } from 'node:fs';

import { InvalidArgument, NotSupported } from '../../core/errors';
import { parseBoolean, parsePositiveInteger } from '../../core/units';
import type { Condition, OptionSpec } from './spec';
import { SYSCALL_NAMES } from './syscalls';

/** liblxc's rule actions (`notify` is for lxq's own listener: security.syscalls.intercept.*). */
const ACTION = /^(kill|allow|trap|errno\s+\d{1,4})$/;

/**
 * A list of seccomp rules as LXD's security.syscalls.allow/deny take them: one per line, a
 * system call name and optionally liblxc's action (a bare name: the process is killed, as
 * liblxc does in LXD). Names are checked against the host's system calls: an unknown one
 * would be skipped by liblxc and leave the call allowed.
 */
export function checkSyscallRules(value: string): string[] {
  const rules: string[] = [];
  for (const line of value.split('\n')) {
    const t = line.trim();
    if (!t || t.startsWith('#')) continue;
    const [name, ...rest] = t.split(/\s+/);
    if (!SYSCALL_NAMES.has(name)) throw new Error(`${JSON.stringify(name)} is not a system call of this host (one name per line, then optionally kill, allow, trap or errno N)`);
    const action = rest.join(' ');
    if (action && !ACTION.test(action)) throw new Error(`${JSON.stringify(action)} is not a seccomp action lxq applies (kill, allow, trap or errno N; notify is lxq's own, through security.syscalls.intercept.*)`);
    rules.push(action ? `${name} ${action}` : name);
  }
  if (rules.length === 0) throw new Error('no system call named (one per line)');
  return rules;
}

function bool(v: string): void {
  parseBoolean(v);
}

/** A boolean key whose `true` needs what lxq or this host lacks: NotSupported, saying why; `false` is what lxq does anyway. */
function refusedWhenTrue(key: string, why: () => string | undefined): (v: string) => void {
  return (v) => {
    if (!parseBoolean(v)) return;
    const reason = why();
    if (reason) throw new NotSupported(`"${key}": ${reason}`);
  };
}

/** AMD SEV needs kvm_amd with sev=1 on the host; absent here (probed, not assumed). */
function sevMissing(): string | undefined {
  try {
    if (/^(1|Y)$/.test(readFileSync('/sys/module/kvm_amd/parameters/sev', 'utf8').trim())) return 'lxq does not start SEV guests (no sev-guest object or launch measurement is set up)';
  } catch {
    // not there: no AMD SEV on this host
  }
  return existsSync('/sys/module/kvm_amd') ? 'AMD SEV is off on this host (kvm_amd sev=0)' : 'this host has no AMD SEV (no kvm_amd module with sev=1)';
}

/** Why the intercepts lxq's listener (lxq_intercept) does not answer are refused. */
const NO_BPF = "lxq's seccomp listener does not answer bpf (it would have to load the device program into the container's cgroup for it)";
const NO_MOUNT = "lxq's seccomp listener does not answer mount (it would have to mount filesystems, or run FUSE helpers, for the container)";
const NO_INTERCEPT: Record<string, string> = {
  bpf: NO_BPF,
  'bpf.devices': NO_BPF,
  mount: NO_MOUNT,
  'mount.shift': NO_MOUNT,
  'mount.allowed': NO_MOUNT,
  'mount.fuse': NO_MOUNT,
  sched_setscheduler: "lxq's seccomp listener does not answer sched_setscheduler (it would have to change a process's scheduling policy from the host)",
};

/** What lxq's listener does for each call it answers (native/intercept/main.c). */
const INTERCEPT_DOC: Record<string, string> = {
  mknod:
    'mknod/mknodat of the nodes every container has (char 1:3 null, 1:5 zero, 1:7 full, 1:8 random, 1:9 urandom, 5:0 tty, 5:1 console, 5:2 ptmx) work in an unprivileged container: made by lxq\'s seccomp listener in its mount namespace with the caller\'s ids, cwd, umask and capabilities (it needs CAP_MKNOD in the container); any other node fails as the kernel says (EPERM).',
  setxattr:
    'setxattr of trusted.overlay.opaque = "y" (what LXD allows: an overlayfs whiteout directory made inside) works in an unprivileged container, made by lxq\'s seccomp listener with the caller\'s ids (it needs CAP_SYS_ADMIN in the container); any other attribute goes to the kernel.',
  sysinfo:
    "sysinfo (free, uptime, top) answers with the container's own figures: its memory limit and use, swap, process count and uptime (the host's load averages), from lxq's seccomp listener.",
};

const NO_DEVLXD = 'lxq has no daemon to serve /dev/lxd inside instances';
const NO_BPF_DELEGATION = 'lxq does not mount a delegated bpffs (BPF token) in containers';

function spec(key: string, condition: Condition, description: string, extra: Partial<OptionSpec> = {}): OptionSpec {
  return { key, type: 'boolean', condition, live: false, default: 'false', description, validate: bool, ...extra };
}

const SYSCALL_OPTIONS: OptionSpec[] = [
  spec('security.syscalls.allow', 'container', 'System calls allowed, one per line (liblxc\'s "name [action]"): every other one kills the caller. Excludes security.syscalls.deny*.', {
    type: 'lines',
    default: undefined,
    validate: (v) => void checkSyscallRules(v),
  }),
  spec('security.syscalls.deny', 'container', 'System calls denied, one per line ("name" kills the caller as in LXD; "name errno 1" fails it with EPERM), after the default list.', {
    type: 'lines',
    default: undefined,
    validate: (v) => void checkSyscallRules(v),
  }),
  spec('security.syscalls.deny_compat', 'container', "Also deny LXD's list of 32-bit (i386) compat system calls with ENOSYS.", {}),
  spec(
    'security.syscalls.deny_default',
    'container',
    'The default deny list: kexec_load, open_by_handle_at, init_module, finit_module, delete_module, keyctl, add_key, request_key fail with ENOSYS, and umount -f with EACCES.',
    { default: 'true' },
  ),
  ...['mknod', 'setxattr', 'sysinfo'].map((k) => spec(`security.syscalls.intercept.${k}`, 'container', `${INTERCEPT_DOC[k]} Applied at the next start.`)),
  ...['bpf', 'bpf.devices', 'mount', 'mount.shift', 'sched_setscheduler'].map((k) =>
    spec(`security.syscalls.intercept.${k}`, 'container', `Refused when true: ${NO_INTERCEPT[k]}.`, { validate: refusedWhenTrue(`security.syscalls.intercept.${k}`, () => NO_INTERCEPT[k]) }),
  ),
  ...['mount.allowed', 'mount.fuse'].map((k) =>
    spec(`security.syscalls.intercept.${k}`, 'container', `Refused when set: ${NO_INTERCEPT[k]}.`, {
      type: 'string',
      default: undefined,
      notSupported: NO_INTERCEPT[k],
      validate: undefined,
    }),
  ),
];

const IDMAP_OPTIONS: OptionSpec[] = [
  spec(
    'security.idmap.isolated',
    'container',
    "An id range of the container's own (no other container's overlaps it), allocated from root's /etc/subuid range under a host-wide lock and released at delete. Fixed at create; refused with security.privileged. A copy (of it or of a snapshot) and an import get a fresh range, their root and snapshots shifted into it (file capabilities' namespaced root id with them, as LXD's shifting).",
  ),
  spec('security.idmap.base', 'container', "The first host id of the container's range (with or without isolated): inside root's /etc/subuid range, overlapping no isolated container's range. Fixed at create.", {
    type: 'integer',
    default: undefined,
    validate: (v) => void parsePositiveInteger(v),
  }),
  spec('security.idmap.size', 'container', "How many ids the container's range has (at least 65536, so that an image's ids all map). Fixed at create.", {
    type: 'integer',
    default: undefined,
    validate: (v) => {
      if (parsePositiveInteger(v) < 65536) throw new Error('at least 65536 (an image owns files up to uid 65534)');
    },
  }),
];

const on = (config: Record<string, string>, key: string): boolean => config[key] !== undefined && parseBoolean(config[key]);

/**
 * The first line of raw.lxc that would replace lxq's seccomp policy: liblxc's seccomp keys (the
 * profile, which an empty value clears, and the notify proxy) and `lxc.include`, whose file may
 * set them (liblxc's common.conf does). raw.lxc is appended last, so its value wins. Undefined
 * where there is none (`lxc.seccomp.allow_nesting` only stacks filters: it removes none).
 */
export function rawLxcSeccompLine(rawLxc: string | undefined): string | undefined {
  for (const line of (rawLxc ?? '').split('\n')) {
    const key = /^\s*(lxc\.[^=\s]+)\s*=/.exec(line)?.[1];
    if (key !== undefined && ((key.startsWith('lxc.seccomp.') && key !== 'lxc.seccomp.allow_nesting') || key === 'lxc.include')) return line.trim();
  }
  return undefined;
}

/**
 * raw.lxc may replace lxq's seccomp policy (rawLxcSeccompLine) only with the caller's consent to
 * losing its default deny list, given as LXD gives it: `security.syscalls.deny_default: false`.
 * The other security.syscalls.* and raw.seccomp would then be ignored, so they are refused with
 * it. Checked at create and update and again by the liblxc config's writer (the expanded config).
 */
export function checkRawLxcSeccomp(config: Record<string, string>): void {
  const line = rawLxcSeccompLine(config['raw.lxc']);
  if (line === undefined) return;
  const consent = config['security.syscalls.deny_default'];
  if (consent === undefined || parseBoolean(consent)) {
    throw new InvalidArgument(
      `raw.lxc's ${JSON.stringify(line)} would replace lxq's seccomp policy and drop its default deny list (kexec, module loading, open_by_handle_at, the keyring); set "security.syscalls.deny_default": "false" with it to consent, or give a whole policy in "raw.seccomp"`,
    );
  }
  const ignored = ['raw.seccomp', ...Object.keys(config).filter((k) => k.startsWith('security.syscalls.') && k !== 'security.syscalls.deny_default' && (k === 'security.syscalls.allow' || k === 'security.syscalls.deny' || on(config, k)))].find((k) => config[k] !== undefined);
  if (ignored) throw new InvalidArgument(`raw.lxc's ${JSON.stringify(line)} replaces lxq's seccomp policy: "${ignored}" would be ignored with it`);
}

/** Keys that contradict each other, in a whole config (as created, or after a patch): InvalidArgument naming both. */
export function checkCombination(config: Record<string, string>): void {
  checkRawLxcSeccomp(config);
  if (on(config, 'security.privileged')) {
    for (const key of ['security.idmap.isolated', 'security.idmap.base', 'security.idmap.size', 'raw.idmap']) {
      if (config[key] !== undefined && (key !== 'security.idmap.isolated' || on(config, key))) {
        throw new InvalidArgument(`"${key}" cannot be set on a privileged container ("security.privileged" is true: it has no id map)`);
      }
    }
  }
  for (const key of ['security.idmap.base', 'security.idmap.size']) {
    if (config[key] !== undefined && !on(config, 'security.idmap.isolated')) throw new InvalidArgument(`"${key}" needs "security.idmap.isolated": true (it places the container's own id range)`);
  }
  if (config['security.syscalls.allow'] !== undefined) {
    const deny = ['security.syscalls.deny', 'security.syscalls.deny_compat', 'security.syscalls.deny_default'].find((k) => config[k] !== undefined && (k === 'security.syscalls.deny' || on(config, k)));
    if (deny) throw new InvalidArgument(`"security.syscalls.allow" and "${deny}" exclude each other (an allow list denies everything else)`);
  }
  if (config['raw.seccomp'] !== undefined) {
    const other = Object.keys(config).find((k) => k.startsWith('security.syscalls.') && (k === 'security.syscalls.allow' || k === 'security.syscalls.deny' || on(config, k)) && k !== 'security.syscalls.deny_default');
    if (other) throw new InvalidArgument(`"raw.seccomp" is the whole seccomp policy: "${other}" would be ignored with it`);
  }
}

export const SECURITY_OPTIONS: readonly OptionSpec[] = [
  spec('security.agent.metrics', 'vm', "Whether metrics() asks the guest agent (lxq's agent) for the guest's own figures; false: host-side figures only.", { default: 'true' }),
  ...['', '.attach_types', '.cmd_types', '.map_types', '.prog_types'].map((k) =>
    spec(`security.delegate_bpf${k}`, 'container', `Refused when true: ${NO_BPF_DELEGATION}.`, {
      type: k ? 'string' : 'boolean',
      ...(k ? { notSupported: NO_BPF_DELEGATION, validate: undefined } : { validate: refusedWhenTrue('security.delegate_bpf', () => NO_BPF_DELEGATION) }),
    }),
  ),
  spec('security.devlxd', 'both', `LXD's /dev/lxd (default true in LXD): lxq has none, so false is what it does and true is refused (${NO_DEVLXD}).`, {
    validate: refusedWhenTrue('security.devlxd', () => NO_DEVLXD),
  }),
  ...['images', 'management.volumes'].map((k) =>
    spec(`security.devlxd.${k}`, 'both', `Refused when true: ${NO_DEVLXD}.`, { live: true, validate: refusedWhenTrue(`security.devlxd.${k}`, () => NO_DEVLXD) }),
  ),
  spec('security.privileged', 'container', 'Run the container without a user namespace (root inside is root outside). Fixed at create.'),
  spec(
    'security.protection.shift',
    'container',
    "Keeps the container's root from being shifted (as LXD's): a raw.idmap change, which shifts the files of the remapped ids, is refused while it is true, and so is a start that would shift. (A copy or import is shifted into its new range before it exists.)",
    { live: true },
  ),
  ...['security.sev', 'security.sev.policy.es', 'security.sev.session.data', 'security.sev.session.dh'].map((key) =>
    spec(key, 'vm', key.includes('session') ? 'An AMD SEV session parameter (for a SEV guest).' : `AMD SEV${key.endsWith('.es') ? '-ES' : ''} memory encryption of the guest.`, {
      ...(key.includes('session') ? { type: 'string' as const, default: undefined } : {}),
      ...(sevMissing() ? { notSupported: sevMissing(), validate: undefined } : {}),
      hostDependent: 'refused (NotSupported): lxq starts no AMD SEV guests (and the host would need kvm_amd with sev=1)',
    }),
  ),
  ...IDMAP_OPTIONS,
  spec('security.nesting', 'container', 'Lets the container run containers: /proc and /sys mounted read-write and the cgroup tree writable inside.'),
  ...SYSCALL_OPTIONS,
  {
    key: 'security.protection.delete',
    type: 'boolean',
    condition: 'both',
    live: true,
    default: 'false',
    description: "When true, delete() is refused (PermissionDenied naming the key), even with force; snapshots can still be deleted and an ephemeral instance still goes at its stop (as LXD).",
    validate: (v) => void parseBoolean(v),
  },
  {
    key: 'security.protection.start',
    type: 'boolean',
    condition: 'both',
    live: true,
    default: 'false',
    description: 'When true, start() and restart() are refused (PermissionDenied naming the key; a running instance is left running) and autostart skips the instance (as LXD).',
    validate: (v) => void parseBoolean(v),
  },
];

/** A container's keys fixed when it is made: its root's ownership was shifted (or not) for its id map then. */
const FIXED_AT_CREATE = ['security.privileged', 'security.idmap.isolated', 'security.idmap.base', 'security.idmap.size'];

/** InvalidArgument naming the first key fixed at create that differs from `previous` in `next` (a container's whole expanded options). */
export function refuseFixedChange(name: string, previous: Record<string, string>, next: Record<string, string>): void {
  const key = FIXED_AT_CREATE.find((k) => (next[k] ?? (k === 'security.privileged' ? 'false' : undefined)) !== (previous[k] ?? (k === 'security.privileged' ? 'false' : undefined)));
  if (key) throw new InvalidArgument(`${key} of ${name} is fixed when the container is created`);
  if (next['security.protection.shift'] === 'true' && (next['raw.idmap'] ?? '') !== (previous['raw.idmap'] ?? '')) {
    throw new InvalidArgument(`raw.idmap of ${name} cannot change while security.protection.shift is true: its root's files would have to be shifted`);
  }
}

/**
 * A container's copy keeps its source's kind of id map (privileged, the shared range, or a range
 * of its own, which the copy gets afresh and is shifted into): security.privileged and
 * security.idmap.isolated cannot change on the way (InvalidArgument naming the key).
 */
export function refuseCopiedIdChange(source: Record<string, string>, copy: Record<string, string>): void {
  const key = ['security.privileged', 'security.idmap.isolated'].find((k) => String(copy[k] ?? false) !== String(source[k] ?? false));
  if (key) throw new InvalidArgument(`${key} cannot change in a copy: a container's id map is fixed when it is made`);
}
