/**
 * The instance options, declared once. Validation, the "which type does this apply to" check,
 * live updates and the generated docs (`describeOptions`) all read this table. Keys follow LXD's
 * where LXD has one; each LXD option group declares its keys in a file of its own here.
 */
import * as os from 'node:os';

import { InvalidArgument, NotSupported } from '../../core/errors';
import { refuseControlChars } from '../../core/guard';
import { editDistance, parseMemory } from '../../core/units';
import { BOOT_OPTIONS } from './boot';
import { CLOUD_INIT_OPTIONS } from './cloud-init';
import { CLUSTER_OPTIONS } from './cluster';
import { LIMITS_OPTIONS, MEMORY_FLOOR } from './limits';
import { LINUX_OPTIONS } from './linux';
import { MIGRATION_OPTIONS } from './migration';
import { MISC_OPTIONS } from './misc';
import { RAW_OPTIONS } from './raw';
import { checkCombination, SECURITY_OPTIONS } from './security';
import { SNAPSHOTS_OPTIONS } from './snapshots';
import type { ConfigValue, InstanceConfig, InstanceType, OptionSpec } from './spec';

export type { Condition, ConfigValue, InstanceConfig, InstanceType, OptionSpec } from './spec';
export { splitArgs, parseRawIdmap, type RawIdmapEntry } from './raw';
export { refuseFixedChange, refuseCopiedIdChange } from './security';

/**
 * Every instance option lxq knows: its type, default, which instance types it applies to, and whether it changes live.
 *
 * @example
 * ```ts
 * for (const o of OPTIONS) console.log(o.key, o.default, o.description);
 * ```
 */
export const OPTIONS: readonly OptionSpec[] = [...BOOT_OPTIONS, ...CLOUD_INIT_OPTIONS, ...LIMITS_OPTIONS, ...MIGRATION_OPTIONS, ...SECURITY_OPTIONS, ...MISC_OPTIONS, ...CLUSTER_OPTIONS, ...LINUX_OPTIONS, ...RAW_OPTIONS, ...SNAPSHOTS_OPTIONS];

/**
 * The options whose keys are fixed, as a type: `'limits.cpu' | 'limits.memory' | …`.
 *
 * @example
 * ```ts
 * const key: OptionKey = 'limits.memory';
 * ```
 */
export type OptionKey =
  | 'boot.autostart'
  | 'boot.autostart.delay'
  | 'boot.autostart.priority'
  | 'boot.host_shutdown_timeout'
  | 'boot.stop.priority'
  | 'cloud-init.network-config'
  | 'cloud-init.user-data'
  | 'cloud-init.vendor-data'
  | 'user.network-config'
  | 'user.user-data'
  | 'user.vendor-data'
  | 'limits.cpu'
  | 'limits.memory'
  | 'limits.processes'
  | 'limits.cpu.allowance'
  | 'limits.cpu.priority'
  | 'limits.cpu.nodes'
  | 'limits.memory.enforce'
  | 'limits.memory.swap'
  | 'limits.memory.swap.priority'
  | 'limits.cpu.pin_strategy'
  | 'limits.memory.hugepages'
  | 'limits.max_bus_ports'
  | 'limits.disk.priority'
  | 'linux.kernel_modules'
  | 'linux.kernel_modules.load'
  | 'security.privileged'
  | 'security.protection.delete'
  | 'security.protection.start'
  | 'security.agent.metrics'
  | 'security.delegate_bpf'
  | 'security.delegate_bpf.attach_types'
  | 'security.delegate_bpf.cmd_types'
  | 'security.delegate_bpf.map_types'
  | 'security.delegate_bpf.prog_types'
  | 'security.devlxd'
  | 'security.devlxd.images'
  | 'security.devlxd.management.volumes'
  | 'security.idmap.base'
  | 'security.idmap.isolated'
  | 'security.idmap.size'
  | 'security.nesting'
  | 'security.protection.shift'
  | 'security.sev'
  | 'security.sev.policy.es'
  | 'security.sev.session.data'
  | 'security.sev.session.dh'
  | 'security.syscalls.allow'
  | 'security.syscalls.deny'
  | 'security.syscalls.deny_compat'
  | 'security.syscalls.deny_default'
  | 'security.syscalls.intercept.bpf'
  | 'security.syscalls.intercept.bpf.devices'
  | 'security.syscalls.intercept.mknod'
  | 'security.syscalls.intercept.mount'
  | 'security.syscalls.intercept.mount.allowed'
  | 'security.syscalls.intercept.mount.fuse'
  | 'security.syscalls.intercept.mount.shift'
  | 'security.syscalls.intercept.sched_setscheduler'
  | 'security.syscalls.intercept.setxattr'
  | 'security.syscalls.intercept.sysinfo'
  | 'migration.incremental.memory'
  | 'migration.incremental.memory.goal'
  | 'migration.incremental.memory.iterations'
  | 'migration.stateful'
  | 'raw.apparmor'
  | 'raw.seccomp'
  | 'raw.lxc'
  | 'raw.idmap'
  | 'raw.qemu'
  | 'raw.qemu.conf'
  | 'ubuntu_pro.guest_attach'
  | 'agent.nic_config'
  | 'cluster.evacuate'
  | 'placement.group'
  | 'snapshots.expiry'
  | 'snapshots.pattern'
  | 'snapshots.schedule'
  | 'snapshots.schedule.stopped'
  | 'vm.accel'
  | 'vm.saved_boot';

/**
 * Options as given to `create`: strings, numbers or booleans, checked and stored as strings.
 *
 * @example
 * ```ts
 * await host.create('web1', { image: 'busybox', config: { 'limits.cpu': 2, 'environment.MODE': 'prod' } });
 * ```
 */
export type InstanceConfigInput = { [K in OptionKey]?: ConfigValue } & {
  [K: `environment.${string}`]: ConfigValue;
  [K: `cloud-init.ssh-keys.${string}`]: ConfigValue;
  [K: `user.${string}`]: ConfigValue;
  [K: `limits.hugepages.${string}`]: ConfigValue;
  [K: `limits.kernel.${string}`]: ConfigValue;
  [K: `linux.sysctl.${string}`]: ConfigValue;
};

const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

export function findOption(key: string): OptionSpec | undefined {
  return OPTIONS.find((o) => o.key === key || (o.key.endsWith('.*') && key.startsWith(o.key.slice(0, -1)) && key.length > o.key.length - 1));
}

function closeMatches(key: string): string[] {
  return OPTIONS.map((o) => o.key)
    .map((k) => ({ k, d: editDistance(key, k) }))
    .filter(({ k, d }) => d <= Math.max(3, Math.floor(key.length / 3)) || k.startsWith(key.split('.')[0] + '.'))
    .sort((a, b) => a.d - b.d)
    .slice(0, 3)
    .map(({ k }) => k);
}

/** Where options are checked: for an instance of this host, or of an LXD server (keys with a `localRefusal` pass there). */
export type ConfigTarget = 'local' | 'remote';

/**
 * Validates options for an instance type and returns them normalized (strings). Throws
 * InvalidArgument naming the key, the problem and what would be accepted.
 */
export function validateConfig(type: InstanceType, input: Record<string, unknown> | undefined, target: ConfigTarget = 'local'): InstanceConfig {
  const out: InstanceConfig = {};
  if (input === undefined) return out;
  if (input === null || typeof input !== 'object' || Array.isArray(input)) {
    throw new InvalidArgument('config must be an object of option keys to values');
  }
  for (const [key, raw] of Object.entries(input)) {
    const spec = findOption(key);
    if (!spec) {
      const near = closeMatches(key);
      throw new InvalidArgument(
        `unknown option "${key}"` + (near.length ? `; did you mean ${near.map((k) => `"${k}"`).join(', ')}?` : ''),
      );
    }
    if (spec.condition !== 'both' && spec.condition !== type) {
      throw new InvalidArgument(`option "${key}" applies to ${spec.condition} instances only, not to a ${type}`);
    }
    if (spec.notSupported !== undefined) throw new NotSupported(`option "${key}" is not supported on this host: ${spec.notSupported}`);
    if (spec.localRefusal !== undefined && target === 'local') throw new NotSupported(`option "${key}" is an LXD cluster's, refused here: ${spec.localRefusal}`);
    if (typeof raw !== 'string' && typeof raw !== 'number' && typeof raw !== 'boolean') {
      throw new InvalidArgument(`option "${key}" must be a string, number or boolean, got ${raw === null ? 'null' : typeof raw}`);
    }
    const value = String(raw);
    if (key.startsWith('environment.') && !ENV_NAME.test(key.slice('environment.'.length))) {
      throw new InvalidArgument(`"${key}": environment variable names are letters, digits and _, not starting with a digit`);
    }
    // Values reach the liblxc config and QEMU's command line: no control character but a tab, and newlines only between lines.
    for (const line of spec.type === 'lines' ? value.split('\n') : [value]) refuseControlChars(`option "${key}"`, line, { allowTab: true });
    try {
      spec.validate?.(value, key);
      if (key === 'limits.memory') {
        const floor = MEMORY_FLOOR[type];
        if (parseMemory(value, os.totalmem()) < floor) throw new Error(`below the floor of ${floor / 2 ** 20} MiB for a ${type}`);
      }
    } catch (e) {
      if (e instanceof NotSupported) throw e; // names the key and what this host lacks
      throw new InvalidArgument(`bad value for "${key}": ${(e as Error).message}`);
    }
    out[key] = value;
  }
  checkCombination(out);
  return out;
}

/**
 * A Markdown table of the options, for the README.
 *
 * @example
 * ```ts
 * fs.writeFileSync('options.md', describeOptions());
 * ```
 */
export function describeOptions(): string {
  const rows = OPTIONS.map(
    (o) =>
      `| \`${o.key}\` | ${o.type} | ${describeSupport(o)} | ${o.live === 'container' ? 'containers (VMs: when stopped)' : o.live ? 'yes' : 'next start'} | ${o.default ?? ''} | ${o.description} |`,
  );
  return ['| key | type | honoured for | live | default | description |', '|---|---|---|---|---|---|', ...rows].join('\n');
}

const TYPE_WORDS = { both: 'containers, VMs', container: 'containers', vm: 'VMs' } as const;

/** The table's "honoured for" cell: the types lxq applies the key to, or why it refuses it. */
export function describeSupport(o: OptionSpec): string {
  if (o.hostDependent !== undefined) return o.hostDependent;
  if (o.notSupported !== undefined) return `refused (NotSupported): ${o.notSupported}`;
  if (o.localRefusal !== undefined) return `LXD servers (passed on); a local host refuses it (NotSupported): ${o.localRefusal}`;
  const lxd = o.lxdCondition !== undefined && o.lxdCondition !== o.condition ? ` (LXD: ${TYPE_WORDS[o.lxdCondition]})` : '';
  return TYPE_WORDS[o.condition] + lxd;
}

/**
 * A change of options: a value sets the key, `null` removes it.
 *
 * @example
 * ```ts
 * await c.update({ 'limits.memory': '512MiB', 'user.note': null });
 * ```
 */
export type InstanceConfigPatch = { [K in keyof InstanceConfigInput]?: ConfigValue | null };

/** Applies a patch to stored options after validating the keys it sets. */
export function patchConfig(type: InstanceType, current: InstanceConfig, patch: InstanceConfigPatch, target: ConfigTarget = 'local'): InstanceConfig {
  if (patch === null || typeof patch !== 'object' || Array.isArray(patch)) {
    throw new InvalidArgument('config must be an object of option keys to values');
  }
  const sets: Record<string, unknown> = {};
  const next: InstanceConfig = { ...current };
  for (const [key, value] of Object.entries(patch)) {
    if (value === null) {
      if (!findOption(key)) validateConfig(type, { [key]: '' }); // unknown key: same error as a set
      delete next[key];
    } else {
      sets[key] = value;
    }
  }
  Object.assign(next, validateConfig(type, sets, target));
  checkCombination(next);
  return next;
}

/**
 * The options a running instance of `type` takes from a change from `previous` to `next`: the
 * keys that change live take their new value, the others keep theirs until the next start.
 */
export function liveChange(type: InstanceType, previous: InstanceConfig, next: InstanceConfig): InstanceConfig {
  const out: InstanceConfig = { ...previous };
  for (const key of new Set([...Object.keys(previous), ...Object.keys(next)])) {
    const live = findOption(key)?.live;
    if (live !== true && !(live === 'container' && type === 'container')) continue;
    if (key in next) out[key] = next[key];
    else delete out[key];
  }
  return out;
}
