/**
 * A NIC's rate limits, as LXD sets them, on the host end lxq made (a veth's or a tap's): what goes
 * in to the instance leaves the host end, shaped by an htb class on its root; what the instance
 * sends arrives at the host end, redirected from its ingress to an ifb link of lxq's own and
 * shaped there (LXD polices it instead; this kernel has no police action). The qdiscs go with
 * the link; the ifb link does not, and is removed with the NIC (lib/network/host-ends.ts).
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { promisify } from 'node:util';

import { OperationFailed } from '../core/errors';

const execFileP = promisify(execFile);

async function tc(args: string[]): Promise<void> {
  await execFileP('tc', args).catch((e: { stderr?: string; message: string }) => {
    throw new OperationFailed(`tc ${args.join(' ')}: ${e.stderr?.trim() || e.message}`, { call: 'tc' });
  });
}

let egress: Promise<string | undefined> | undefined;

/**
 * What the kernel lacks to limit what an instance sends (undefined: nothing): an ifb link and tc's
 * mirred action, which redirects what arrives at the host end to it. Probed once per process on a
 * veth pair and an ifb link of lxq's own, made for it and deleted at once.
 */
export function egressMissing(): Promise<string | undefined> {
  egress ??= (async () => {
    const dev = `lxqtc${process.pid % 1_000_000}`;
    const ifb = `${dev}i`;
    await execFileP('ip', ['link', 'add', 'name', dev, 'type', 'veth', 'peer', 'name', `${dev}p`]);
    try {
      if (!(await execFileP('ip', ['link', 'add', 'name', ifb, 'type', 'ifb']).then(() => true, () => false))) return 'ifb link type (CONFIG_IFB)';
      await tc(['qdisc', 'add', 'dev', dev, 'handle', 'ffff:', 'ingress']);
      const mirred = await tc(['filter', 'add', 'dev', dev, 'parent', 'ffff:', 'protocol', 'all', 'u32', 'match', 'u32', '0', '0', 'action', 'mirred', 'egress', 'redirect', 'dev', ifb]).then(() => true, () => false);
      return mirred ? undefined : 'tc mirred action or u32 classifier (CONFIG_NET_ACT_MIRRED, CONFIG_NET_CLS_U32)';
    } finally {
      await execFileP('ip', ['link', 'delete', 'dev', ifb]).catch(() => undefined);
      await execFileP('ip', ['link', 'delete', 'dev', dev]).catch(() => undefined);
    }
  })();
  return egress;
}

/** The ifb link that shapes what host end `dev` receives: `lxqe` and a digest of its name (unique, at most 12 bytes). */
export function egressLink(dev: string): string {
  return `lxqe${createHash('sha256').update(dev).digest('hex').slice(0, 8)}`;
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
    // What the instance sends arrives at the host end: redirected to an ifb link of its own whose
    // htb class shapes it (a queue, not a policer: TCP gets the rate, not drops).
    const ifb = egressLink(dev);
    await removeEgress(dev);
    await execFileP('ip', ['link', 'add', 'name', ifb, 'type', 'ifb']).catch((e: { stderr?: string; message: string }) => {
      throw new OperationFailed(`ip link add ${ifb} type ifb: ${e.stderr?.trim() || e.message}`, { call: 'ip' });
    });
    await execFileP('ip', ['link', 'set', 'dev', ifb, 'up']);
    await tc(['qdisc', 'add', 'dev', ifb, 'root', 'handle', '1:', 'htb', 'default', '10']);
    await tc(['class', 'add', 'dev', ifb, 'parent', '1:', 'classid', '1:10', 'htb', 'rate', `${limits.egress}bit`]);
    await tc(['qdisc', 'del', 'dev', dev, 'ingress']).catch(() => undefined);
    await tc(['qdisc', 'add', 'dev', dev, 'handle', 'ffff:', 'ingress']);
    await tc(['filter', 'add', 'dev', dev, 'parent', 'ffff:', 'protocol', 'all', 'u32', 'match', 'u32', '0', '0', 'action', 'mirred', 'egress', 'redirect', 'dev', ifb]);
  }
}

/** Removes host end `dev`'s ifb link, if it has one (it does not go with the host end). */
export async function removeEgress(dev: string): Promise<void> {
  await execFileP('ip', ['link', 'delete', 'dev', egressLink(dev)]).catch(() => undefined);
}
