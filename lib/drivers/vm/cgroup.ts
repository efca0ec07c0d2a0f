/**
 * limits.cpu.allowance and limits.cpu.priority for VMs (LXD: containers only): QEMU, all its
 * threads, in a cpu cgroup of its own with the shares and quota a container would get, set at
 * start and changed live. The cgroup is named by the VM's directory (a rename keeps it) and
 * removed with QEMU's other host parts; one left by a killed process is replaced at the next start.
 */
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { promises as fs } from 'node:fs';

import type { InstanceConfig } from '../../config/options';
import { cpuShares } from '../../config/options/limits';
import { NotSupported } from '../../core/errors';

const KEYS = ['limits.cpu.allowance', 'limits.cpu.priority'];

/** Where the cpu controller's v1 hierarchy is mounted, or undefined. */
function cpuMount(): string | undefined {
  for (const line of readFileSync('/proc/self/mounts', 'utf8').split('\n')) {
    const [, mountpoint, fstype, options] = line.split(' ');
    if (fstype === 'cgroup' && options.split(',').includes('cpu')) return mountpoint;
  }
  return undefined;
}

/** The VM's cgroup directory: `lxq.vm.<hash of its directory>` under the cpu hierarchy. */
function cgroupDir(vmDir: string, mount: string): string {
  return `${mount}/lxq.vm.${createHash('sha256').update(vmDir).digest('hex').slice(0, 16)}`;
}

export function wantsCpuCgroup(config: InstanceConfig): boolean {
  return KEYS.some((k) => config[k] !== undefined);
}

async function writeLimits(dir: string, config: InstanceConfig): Promise<void> {
  const { shares, quotaUs, periodUs } = cpuShares(config, 1024);
  await fs.writeFile(`${dir}/cpu.shares`, String(shares));
  // The quota lifted first: a new period is checked against the quota in place.
  await fs.writeFile(`${dir}/cpu.cfs_quota_us`, '-1');
  await fs.writeFile(`${dir}/cpu.cfs_period_us`, String(periodUs));
  await fs.writeFile(`${dir}/cpu.cfs_quota_us`, String(quotaUs));
}

/**
 * Puts QEMU (`pid`, with its threads) into the VM's cpu cgroup with the options' limits; nothing
 * when neither key is set. NotSupported where the cpu controller is not a v1 hierarchy.
 */
export async function applyVmCpuLimits(vmDir: string, config: InstanceConfig, pid: number): Promise<void> {
  const mount = cpuMount();
  if (!wantsCpuCgroup(config)) {
    // Both keys removed from a running VM: its cgroup lifts the limits.
    if (mount && existsSync(cgroupDir(vmDir, mount))) await writeLimits(cgroupDir(vmDir, mount), config);
    return;
  }
  if (!mount) throw new NotSupported('limits.cpu.allowance and limits.cpu.priority for a VM need the cpu cgroup controller as a v1 hierarchy, which this host does not have');
  const dir = cgroupDir(vmDir, mount);
  await fs.mkdir(dir, { recursive: true });
  await writeLimits(dir, config);
  await fs.writeFile(`${dir}/cgroup.procs`, String(pid));
}

/** Removes the VM's cpu cgroup once QEMU has left it (rmdir of an empty cgroup). */
export async function removeVmCpuCgroup(vmDir: string): Promise<void> {
  const mount = cpuMount();
  if (!mount) return;
  const dir = cgroupDir(vmDir, mount);
  // An exiting QEMU's threads leave the cgroup a little after the process is gone (EBUSY until then).
  for (let i = 0; i < 50 && existsSync(dir); i++) {
    const busy = await fs.rmdir(dir).then(
      () => false,
      (e: NodeJS.ErrnoException) => e.code === 'EBUSY',
    );
    if (!busy) return;
    await new Promise((r) => setTimeout(r, 100));
  }
}
