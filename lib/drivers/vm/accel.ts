/**
 * Which accelerator a VM runs on: KVM only when the evidence says it really works, else TCG.
 *
 * A `/dev/kvm` that opens is not enough: on some hosts it is served by `kvm_pvm`, a KVM without
 * hardware virtualisation (no vmx/svm flag), where `query-kvm` says enabled yet a normal guest
 * hangs or QEMU aborts (README.md, "Virtual machines"; BENCHMARKS.md's host). The verdict is remembered per host, with its
 * evidence, in `<host>/accel.json`; a KVM boot that shows no console output in time is retried
 * under TCG by the VM driver, which records that verdict here too.
 */
import { promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import { NotSupported } from '../../core/errors';
import { readJson, writeJsonAtomic } from '../../core/fs';

export type Accel = 'kvm' | 'tcg';
/** The `vm.accel` option. */
export type AccelSetting = 'auto' | Accel;

/** What the host shows about KVM. */
export interface AccelFacts {
  /** `/dev/kvm` opened read-write; else why not ("ENOENT", "EACCES"...). */
  devKvm: true | string;
  /** The hardware virtualisation flags of the CPU (`vmx`, `svm`), from /proc/cpuinfo. */
  cpuFlags: string[];
  /** `/sys/module/kvm_pvm` exists: KVM without hardware virtualisation. */
  kvmPvm: boolean;
}

export interface AccelVerdict {
  accel: Accel;
  /** Why, in words. */
  reason: string;
  facts: AccelFacts;
  /** `probe`: from the facts; `boot-watchdog`: a KVM boot printed nothing and was retried under TCG. */
  source: 'probe' | 'boot-watchdog';
  /** The host kernel it holds for: a new kernel is probed again. */
  kernel: string;
  decidedAt: string;
}

/** The whole decision, from facts alone (tested with made-up facts). */
export function decideAccel(facts: AccelFacts): { accel: Accel; reason: string } {
  if (facts.devKvm !== true) return { accel: 'tcg', reason: `/dev/kvm cannot be opened (${facts.devKvm})` };
  if (facts.kvmPvm) return { accel: 'tcg', reason: '/dev/kvm is served by kvm_pvm (KVM without hardware virtualisation)' };
  if (facts.cpuFlags.length === 0) return { accel: 'tcg', reason: 'the CPU has no vmx or svm flag' };
  return { accel: 'kvm', reason: `/dev/kvm opens and the CPU has ${facts.cpuFlags.join(', ')}` };
}

export async function probeAccelFacts(): Promise<AccelFacts> {
  const devKvm = await fs.open('/dev/kvm', 'r+').then(
    async (h) => (await h.close(), true as const),
    (e: NodeJS.ErrnoException) => e.code ?? String(e),
  );
  const cpuinfo = await fs.readFile('/proc/cpuinfo', 'utf8').catch(() => '');
  const flags = new Set(/^flags\s*:(.*)$/m.exec(cpuinfo)?.[1].trim().split(/\s+/) ?? []);
  const cpuFlags = ['vmx', 'svm'].filter((f) => flags.has(f));
  const kvmPvm = await fs.access('/sys/module/kvm_pvm').then(() => true, () => false);
  return { devKvm, cpuFlags, kvmPvm };
}

export const ACCEL_FILE = 'accel.json';

/** The host's remembered verdict, probed (and remembered) first if there is none for this kernel. */
export async function hostAccel(hostDir: string): Promise<AccelVerdict> {
  const file = path.join(hostDir, ACCEL_FILE);
  const known = await readJson<AccelVerdict>(file).catch(() => undefined);
  if (known && known.kernel === os.release() && (known.accel === 'kvm' || known.accel === 'tcg')) return known;
  const facts = await probeAccelFacts();
  const verdict: AccelVerdict = { ...decideAccel(facts), facts, source: 'probe', kernel: os.release(), decidedAt: new Date().toISOString() };
  await writeJsonAtomic(file, verdict);
  return verdict;
}

/** Records that KVM failed to boot a guest here: later VMs go straight to TCG. */
export async function recordKvmFailure(hostDir: string, why: string): Promise<void> {
  const verdict: AccelVerdict = {
    accel: 'tcg',
    reason: `a KVM boot failed: ${why}`,
    facts: await probeAccelFacts(),
    source: 'boot-watchdog',
    kernel: os.release(),
    decidedAt: new Date().toISOString(),
  };
  await writeJsonAtomic(path.join(hostDir, ACCEL_FILE), verdict);
}

/**
 * The accelerator for a start, and whether its boot must be watched (KVM chosen automatically).
 * A forced "kvm" on a host whose facts rule KVM out is refused before anything is launched.
 */
export async function chooseAccel(setting: AccelSetting, hostDir: string): Promise<{ accel: Accel; watch: boolean }> {
  if (setting === 'tcg') return { accel: 'tcg', watch: false };
  if (setting === 'kvm') {
    const { accel, reason } = decideAccel(await probeAccelFacts());
    if (accel !== 'kvm') throw new NotSupported(`vm.accel is "kvm" but KVM does not work on this host: ${reason}; use "auto" or "tcg"`);
    return { accel, watch: false };
  }
  const { accel } = await hostAccel(hostDir);
  return { accel, watch: accel === 'kvm' };
}
