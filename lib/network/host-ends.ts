/**
 * What lxq sets up beside a NIC's host end and what does not go with the link: its filters'
 * nftables table (and, for `limits.egress`, its ifb link). Each host end that has any is marked
 * in /run/lxq/host-ends/ (the marks live as long as the kernel's state: a reboot clears both), so
 * that a process that dies before the NIC's stop leaves nothing for good: the next Host.open
 * removes what a host end that no longer exists left (sweepHostEnds), and the next NIC made with
 * that name starts clean. Host ends are unique on the host, so every lxq host shares the marks.
 */
import { promises as fs } from 'node:fs';
import * as path from 'node:path';

import { sweepProxyNat } from './proxy-nat';
import { applyNicFilter, type NicFilter, removeNicFilter } from './nic-filter';
import { applyRateLimits, type RateLimits, removeEgress } from './tc';

const MARKS = '/run/lxq/host-ends';

const marked = (dev: string) => fs.access(path.join(MARKS, dev)).then(() => true, () => false);

/** What a host end gets beyond the link: filters, rate limits. */
export interface HostEndParts {
  filter?: NicFilter;
  limits?: RateLimits;
}

/** Sets up a host end's parts, after removing any an earlier NIC of that name left. */
export async function setUpHostEnd(dev: string, parts: HostEndParts): Promise<void> {
  await releaseHostEnd(dev);
  if (parts.filter || parts.limits?.egress !== undefined) {
    // Marked first: a process killed midway leaves a mark, never an unmarked table or ifb link.
    await fs.mkdir(MARKS, { recursive: true, mode: 0o700 });
    await fs.writeFile(path.join(MARKS, dev), '');
  }
  if (parts.filter) await applyNicFilter(parts.filter);
  if (parts.limits) await applyRateLimits(dev, parts.limits);
}

/** Removes a host end's parts that outlive its link (nothing to do, and no process run, for one without). */
export async function releaseHostEnd(dev: string): Promise<void> {
  if (!(await marked(dev))) return;
  await removeNicFilter(dev);
  await removeEgress(dev);
  await fs.rm(path.join(MARKS, dev), { force: true });
}

/**
 * Removes what host ends that are gone (their instance stopped while no lxq process held it, or
 * its process was killed) left, and the nat proxies' rules of such instances (proxy-nat.ts).
 */
export async function sweepHostEnds(): Promise<void> {
  await sweepProxyNat();
  const names = await fs.readdir(MARKS).catch(() => [] as string[]);
  for (const dev of names) {
    const exists = await fs.access(`/sys/class/net/${dev}`).then(() => true, () => false);
    if (!exists) await releaseHostEnd(dev);
  }
}
