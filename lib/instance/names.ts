/** Instance names, and the names of lxq's own files in an instance's directory. */
import { InvalidArgument } from '../core/errors';

/** An instance's record, in its directory (lib/instance/record.ts). */
export const RECORD_FILE = 'lxq.json';
/** The file every process locks (flock) while it changes the instance. */
export const LOCK_FILE = 'lxq.lock';
/**
 * lxq's own entries in a directory start with this: what it keeps of an operation under way
 * (staging entries, the freeze, restore and creating marks, an ephemeral one's ran mark) and the
 * last power state (power.ts); never part of an archive or a copy.
 */
export const LXQ_ENTRY_PREFIX = '.lxq-';
/** The last power state (power.ts), in the instance's directory; `.lxq-` files are never copied nor imported (see Host.adoptStaged). */
export const POWER_MARK = '.lxq-last-power';

/**
 * Instance names follow LXD's rule: a hostname label. 1–63 letters, digits and hyphens, not
 * starting with a digit or hyphen, not ending with a hyphen. This also keeps every name safe
 * as a path component, a liblxc name and a cgroup name.
 */
const NAME = /^[A-Za-z](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$/;

export function validateName(name: unknown): string {
  if (typeof name !== 'string' || name.length === 0) throw new InvalidArgument('instance name must be a non-empty string');
  if (name.length > 63) throw new InvalidArgument(`instance name "${name.slice(0, 20)}…" is ${name.length} characters; the limit is 63`);
  if (!NAME.test(name)) {
    throw new InvalidArgument(
      `invalid instance name ${JSON.stringify(name)}: use letters, digits and hyphens, starting with a letter and not ending with a hyphen`,
    );
  }
  return name;
}
