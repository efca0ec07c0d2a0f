/**
 * What this host has for the resource-limit and linux.* options, probed (files under /sys and
 * /proc), never assumed from a kernel version. A key whose meaning needs what is missing is
 * refused with NotSupported naming it.
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';

import { NotSupported } from '../../core/errors';

function read(file: string): string | undefined {
  try {
    return readFileSync(file, 'utf8');
  } catch {
    return undefined;
  }
}

/** Where a cgroup v1 controller is mounted, from /proc/self/mounts (undefined: not on v1). */
export function v1Mount(controller: string): string | undefined {
  for (const line of (read('/proc/self/mounts') ?? '').split('\n')) {
    const [, mountpoint, fstype, options] = line.split(' ');
    if (fstype === 'cgroup' && options.split(',').includes(controller)) return mountpoint;
  }
  return undefined;
}

/** A list such as "0-1,3" as numbers. */
export function parseIdList(text: string): number[] {
  const t = text.trim();
  if (!/^\d+(-\d+)?(,\d+(-\d+)?)*$/.test(t)) throw new Error(`expected a list such as "0" or "0-1,3", got ${JSON.stringify(text)}`);
  const out = new Set<number>();
  for (const part of t.split(',')) {
    const [a, b = a] = part.split('-').map(Number);
    if (b < a || b - a > 4096) throw new Error(`bad range ${part}`);
    for (let i = a; i <= b; i++) out.add(i);
  }
  return [...out].sort((x, y) => x - y);
}

/** The host's online NUMA nodes. */
export function numaNodes(): number[] {
  const online = read('/sys/devices/system/node/online');
  return online ? parseIdList(online) : [0];
}

/** The huge page sizes this kernel offers, in KiB (/sys/kernel/mm/hugepages/hugepages-<n>kB). */
export function hugePageSizesKiB(): number[] {
  const out: number[] = [];
  try {
    for (const e of readdirSync('/sys/kernel/mm/hugepages')) {
      const m = /^hugepages-(\d+)kB$/.exec(e);
      if (m) out.push(Number(m[1]));
    }
  } catch {
    /* no hugetlb */
  }
  return out;
}

/**
 * Why the hugetlb controller cannot take a container's `limits.hugepages.<suffix>` here, or
 * undefined when it can (a v1 hierarchy, or a unified host whose v2 tree has it).
 */
export function hugetlbMissing(suffix: string, kib: number): string | undefined {
  const sizes = hugePageSizesKiB();
  if (!sizes.includes(kib)) return `this kernel has no ${suffix} huge pages (sizes here: ${sizes.map((k) => `${k} KiB`).join(', ') || 'none'})`;
  if (v1Mount('hugetlb')) return undefined;
  const v2 = (read('/sys/fs/cgroup/cgroup.controllers') ?? read('/sys/fs/cgroup/unified/cgroup.controllers') ?? '').split(/\s+/);
  if (v2.includes('hugetlb') && v1Mount('memory') === undefined) return undefined;
  return (
    'the hugetlb cgroup controller is ' +
    (v2.includes('hugetlb') ? "on the cgroup v2 tree of this hybrid host, where liblxc ignores lxc.cgroup2.* keys" : 'not in this kernel')
  );
}

/** Why proportional block I/O weights are missing here (none of blkio.weight, blkio.bfq.weight, a v2 io controller), or undefined. */
export function blkioWeightMissing(): string | undefined {
  const blkio = v1Mount('blkio');
  if (blkio && (existsSync(`${blkio}/blkio.weight`) || existsSync(`${blkio}/blkio.bfq.weight`))) return undefined;
  if (!v1Mount('memory') && (read('/sys/fs/cgroup/cgroup.controllers') ?? '').split(/\s+/).includes('io')) return undefined;
  return "the blkio cgroup has no blkio.weight or blkio.bfq.weight (this kernel has no BFQ I/O scheduler) and there is no io controller on cgroup v2";
}

/** A kernel module that is there (built in, or loaded) or can be loaded; NotSupported otherwise. */
export function requireKernelModule(key: string, name: string): 'present' | 'loadable' {
  // Built-in modules and loaded ones both have /sys/module/<name>; '-' and '_' are the same name.
  if (existsSync(`/sys/module/${name.replace(/-/g, '_')}`)) return 'present';
  if (!existsSync('/proc/modules')) {
    throw new NotSupported(`${key}: module "${name}" is not built into this kernel, and the kernel cannot load modules (no /proc/modules: built without module support)`);
  }
  const release = (read('/proc/sys/kernel/osrelease') ?? '').trim();
  if (!existsSync(`/lib/modules/${release}`)) throw new NotSupported(`${key}: module "${name}" is not loaded and this host has no /lib/modules/${release} to load it from`);
  return 'loadable';
}
