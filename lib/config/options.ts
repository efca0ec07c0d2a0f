/**
 * The instance options, declared once. Validation, the "which type does this apply to" check,
 * live updates and the generated docs (`describeOptions`) all read this table.
 * Keys follow LXD's where LXD has one.
 */
import * as os from 'node:os';

import { InvalidArgument } from '../core/errors';
import { refuseControlChars } from '../core/guard';
import { editDistance, parseBoolean, parseCpus, parseMemory, parsePositiveInteger } from '../core/units';

/**
 * The two kinds of instance: 'container' or 'vm'.
 *
 * @example
 * ```ts
 * const type: InstanceType = 'vm';
 * ```
 */
export type InstanceType = 'container' | 'vm';
/**
 * Which instance types an option applies to.
 *
 * @example
 * ```ts
 * if (OPTIONS.find((o) => o.key === 'limits.processes')?.condition === 'container') console.log('containers only');
 * ```
 */
export type Condition = InstanceType | 'both';

/**
 * How one option is declared: description, default, instance types, live or not, validation.
 *
 * @example
 * ```ts
 * const spec: OptionSpec = OPTIONS.find((o) => o.key === 'limits.memory')!;
 * console.log(spec.description);
 * ```
 */
export interface OptionSpec {
  /** The key, or a namespace ending in `.*` (any key under it). */
  readonly key: string;
  readonly type: 'string' | 'integer' | 'boolean' | 'size' | 'cpus' | 'lines' | 'enum';
  readonly condition: Condition;
  /**
   * true: applied to a running instance at once. false: taken at the next start. 'container':
   * live on containers; a VM takes it only while stopped (QEMU here has no CPU/memory hotplug).
   */
  readonly live: boolean | 'container';
  readonly default?: string;
  readonly description: string;
  /** Throws a message when the value is unacceptable. */
  readonly validate?: (value: string) => void;
}

const MEMORY_FLOOR = { container: 4 * 2 ** 20, vm: 64 * 2 ** 20 };

function memoryValidator(value: string): void {
  parseMemory(value, os.totalmem());
}

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
 * Every instance option lxq knows: its type, default, which instance types it applies to, and whether it changes live.
 *
 * @example
 * ```ts
 * for (const o of OPTIONS) console.log(o.key, o.default, o.description);
 * ```
 */
export const OPTIONS: readonly OptionSpec[] = [
  {
    key: 'limits.cpu',
    type: 'cpus',
    condition: 'both',
    live: 'container',
    description: 'CPUs: a count ("2") or, for containers, a CPU set ("0-1,3"). For VMs, the number of vCPUs.',
    validate: (v) => void parseCpus(v, os.cpus().length),
  },
  {
    key: 'limits.memory',
    type: 'size',
    condition: 'both',
    live: 'container',
    description: 'Memory limit: a size ("256MiB", "1GiB") or a percentage of host memory ("50%").',
    validate: memoryValidator,
  },
  {
    key: 'limits.processes',
    type: 'integer',
    condition: 'container',
    live: true,
    description: 'Maximum number of processes in the container (pids cgroup).',
    validate: (v) => void parsePositiveInteger(v),
  },
  {
    key: 'security.privileged',
    type: 'boolean',
    condition: 'container',
    live: false,
    default: 'false',
    description: 'Run the container without a user namespace (root inside is root outside). Off by default.',
    validate: (v) => void parseBoolean(v),
  },
  {
    key: 'environment.*',
    type: 'string',
    condition: 'both',
    live: false,
    description: 'Environment variables for the instance\'s processes ("environment.GREETING": "hi").',
  },
  {
    key: 'user.*',
    type: 'string',
    condition: 'both',
    live: true,
    description: 'Free-form user metadata, stored with the instance and never interpreted.',
  },
  {
    key: 'raw.lxc',
    type: 'lines',
    condition: 'container',
    live: false,
    description: 'Raw liblxc configuration lines ("lxc.key = value"), appended to the generated configuration.',
    validate: rawLxcValidator,
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
    key: 'agent.nic_config',
    type: 'boolean',
    condition: 'vm',
    live: false,
    default: 'false',
    description:
      "LXD's key: when true, lxq's guest agent names each NIC's interface in the guest as the device says (its `name`, else the device's name) " +
      'and sets its MTU, at each start and when a NIC is plugged (as a container\'s are). Off: the guest names them (enp5s0…). Needs an image with the lxq agent.',
    validate: (v) => void parseBoolean(v),
  },
  {
    key: 'vm.accel',
    type: 'enum',
    condition: 'vm',
    live: false,
    default: 'auto',
    description: 'Accelerator: "auto" (KVM when it really works on this host, else TCG), "kvm" or "tcg".',
    validate: (v) => {
      if (!['auto', 'kvm', 'tcg'].includes(v)) throw new Error(`expected "auto", "kvm" or "tcg", got ${JSON.stringify(v)}`);
    },
  },
];

/**
 * The options whose keys are fixed, as a type: `'limits.cpu' | 'limits.memory' | …`.
 *
 * @example
 * ```ts
 * const key: OptionKey = 'limits.memory';
 * ```
 */
export type OptionKey =
  | 'limits.cpu'
  | 'limits.memory'
  | 'limits.processes'
  | 'security.privileged'
  | 'raw.lxc'
  | 'raw.qemu'
  | 'agent.nic_config'
  | 'vm.accel';

/**
 * Option values as users write them; numbers and booleans are accepted and stored as strings.
 *
 * @example
 * ```ts
 * const cpus: ConfigValue = 2; // stored as '2'
 * await c.update({ 'limits.cpu': cpus });
 * ```
 */
export type ConfigValue = string | number | boolean;
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
  [K: `user.${string}`]: ConfigValue;
};
/**
 * Options as stored: every value a string, as in LXD.
 *
 * @example
 * ```ts
 * console.log(c.config['limits.memory']); // '256MiB'
 * ```
 */
export type InstanceConfig = Record<string, string>;

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

/**
 * Validates options for an instance type and returns them normalized (strings). Throws
 * InvalidArgument naming the key, the problem and what would be accepted.
 */
export function validateConfig(type: InstanceType, input: Record<string, unknown> | undefined): InstanceConfig {
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
      spec.validate?.(value);
      if (key === 'limits.memory') {
        const floor = MEMORY_FLOOR[type];
        if (parseMemory(value, os.totalmem()) < floor) throw new Error(`below the floor of ${floor / 2 ** 20} MiB for a ${type}`);
      }
    } catch (e) {
      throw new InvalidArgument(`bad value for "${key}": ${(e as Error).message}`);
    }
    out[key] = value;
  }
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
      `| \`${o.key}\` | ${o.type} | ${o.condition} | ${o.live === 'container' ? 'containers (VMs: when stopped)' : o.live ? 'yes' : 'next start'} | ${o.default ?? ''} | ${o.description} |`,
  );
  return ['| key | type | applies to | live | default | description |', '|---|---|---|---|---|---|', ...rows].join('\n');
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
export function patchConfig(type: InstanceType, current: InstanceConfig, patch: InstanceConfigPatch): InstanceConfig {
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
  return Object.assign(next, validateConfig(type, sets));
}
