/**
 * A NIC's rate limits, as LXD sets them, on the host end lxq made (a veth's or a tap's): what goes
 * in to the instance leaves the host end, shaped by an htb class on its root; what the instance
 * sends arrives at the host end, policed on its ingress (over the rate: dropped). Both go with
 * the link, so nothing is left when the NIC goes.
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';

import { OperationFailed } from '../core/errors';

const execFileP = promisify(execFile);

async function tc(args: string[]): Promise<void> {
  await execFileP('tc', args).catch((e: { stderr?: string; message: string }) => {
    throw new OperationFailed(`tc ${args.join(' ')}: ${e.stderr?.trim() || e.message}`, { call: 'tc' });
  });
}

let police: Promise<boolean> | undefined;

/**
 * Whether the kernel has tc's police action (what limits a NIC's egress), probed once per
 * process on a veth pair of lxq's own, made for it and deleted at once.
 */
export function policeSupported(): Promise<boolean> {
  police ??= (async () => {
    const dev = `lxqtc${process.pid % 1_000_000}`;
    await execFileP('ip', ['link', 'add', 'name', dev, 'type', 'veth', 'peer', 'name', `${dev}p`]);
    try {
      await tc(['qdisc', 'add', 'dev', dev, 'handle', 'ffff:', 'ingress']);
      return await tc(['filter', 'add', 'dev', dev, 'parent', 'ffff:', 'protocol', 'all', 'u32', 'match', 'u32', '0', '0', 'police', 'rate', '1mbit', 'burst', '16k', 'drop']).then(() => true, () => false);
    } finally {
      await execFileP('ip', ['link', 'delete', 'dev', dev]).catch(() => undefined);
    }
  })();
  return police;
}

/** Rates in bit/s; undefined leaves that direction unlimited. */
export interface RateLimits {
  ingress?: number;
  egress?: number;
}

/** Sets the limits on host end `dev` (replacing any lxq set before). */
export async function applyRateLimits(dev: string, limits: RateLimits): Promise<void> {
  if (limits.ingress !== undefined) {
    await tc(['qdisc', 'replace', 'dev', dev, 'root', 'handle', '1:', 'htb', 'default', '10']);
    await tc(['class', 'replace', 'dev', dev, 'parent', '1:', 'classid', '1:10', 'htb', 'rate', `${limits.ingress}bit`]);
  }
  if (limits.egress !== undefined) {
    await tc(['qdisc', 'del', 'dev', dev, 'ingress']).catch(() => undefined);
    await tc(['qdisc', 'add', 'dev', dev, 'handle', 'ffff:', 'ingress']);
    // A burst of a tenth of a second of the rate (at least 16 kB) lets TCP reach it.
    const burst = Math.max(16_384, Math.floor(limits.egress / 80));
    await tc(['filter', 'add', 'dev', dev, 'parent', 'ffff:', 'protocol', 'all', 'u32', 'match', 'u32', '0', '0', 'police', 'rate', `${limits.egress}bit`, 'burst', String(burst), 'mtu', '64kb', 'drop']);
  }
}
