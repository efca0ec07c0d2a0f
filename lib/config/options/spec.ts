/**
 * What an instance option is: the shapes the options table and its users share. The table itself
 * is one file per LXD option group beside this one (limits.ts, security.ts, raw.ts, misc.ts),
 * assembled in index.ts.
 */
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
  /**
   * Set when the key is declared but this host cannot honour it: what is missing (hardware, a
   * kernel feature, a daemon). Setting the key throws NotSupported with this reason; a key is never
   * accepted and ignored.
   */
  readonly notSupported?: string;
  /**
   * Set for a key that means something to an LXD server but not on a local host (a cluster's):
   * why. A local host refuses it with NotSupported saying so; over an LXD server it is checked
   * as the table says and passed to the server.
   */
  readonly localRefusal?: string;
  /**
   * The table's "honoured for" cell for a key whose support is probed on the host (notSupported
   * set or not by what this machine has): a fixed sentence naming what the host needs, so that the
   * README generated on one machine is the same on every other.
   */
  readonly hostDependent?: string;
  /**
   * LXD's own condition, when lxq honours the key on more types than LXD does (`condition` then
   * says what lxq accepts; the README's table says so).
   */
  readonly lxdCondition?: Condition;
  /**
   * Throws a message when the value is unacceptable (or NotSupported when this host lacks what
   * the key needs). `key` is the full key, for namespaces such as `linux.sysctl.*`.
   */
  readonly validate?: (value: string, key?: string) => void;
}

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
 * Options as stored: every value a string, as in LXD.
 *
 * @example
 * ```ts
 * console.log(c.config['limits.memory']); // '256MiB'
 * ```
 */
export type InstanceConfig = Record<string, string>;
