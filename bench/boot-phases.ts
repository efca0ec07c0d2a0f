/**
 * Where a VM's boot goes, phase by phase, as times since `start()` was called (host clock, ms).
 * The guest's own clock (CLOCK_MONOTONIC ≈ /proc/uptime: both count from the kernel's start and
 * follow the host's clock under TCG, there is no -icount) places its events on the host's time
 * line: one `cat /proc/uptime` through the agent, taken at the midpoint of its round trip, gives
 * the host time at which the guest kernel started. The events:
 *   - QMP ready: `start()` resolved (QEMU spawned, its monitor answered, the CPUs running);
 *   - kernel start: QEMU's set-up and the firmware (PVH: none) before the kernel's first instruction;
 *   - initramfs /init: the kernel's own boot (the `lxq-init: initramfs started (Ns)` console line);
 *   - switch_root: the initramfs' work (modules, the root disk) (`switching to the root disk`);
 *   - systemd's steps (debian/12): its set-up, the generators, loading the units, the lxq agent's
 *     unit started (from `systemctl show`);
 *   - agent: the host's first answer from the lxq agent;
 *   - systemd running: `systemctl is-system-running --wait` returned (measured by the caller).
 */
import { promises as fs } from 'node:fs';
import * as path from 'node:path';

import type { Instance } from '../lib';

/** The console lines of the initramfs (lib/images/vm-guest.ts), with the guest's uptime in seconds. */
const MARKS: [string, RegExp][] = [
  ['initramfs /init', /lxq-init: initramfs started[^(]*\(([\d.]+)s\)/],
  ['switch_root to the disk', /lxq-init: switching to the root disk[^(]*\(([\d.]+)s\)/],
];

/** systemd's manager timestamps (µs of CLOCK_MONOTONIC) and what they mark. */
const SYSTEMD: [string, string][] = [
  ['UserspaceTimestampMonotonic', 'systemd started'],
  ['GeneratorsStartTimestampMonotonic', 'systemd: generators start'],
  ['GeneratorsFinishTimestampMonotonic', 'systemd: generators done'],
  ['UnitsLoadFinishTimestampMonotonic', 'systemd: units loaded'],
];

/** The host time (ms since `t0`) at which the guest's kernel started, from one uptime read. */
async function kernelStart(vm: Instance, t0: number): Promise<number> {
  const before = performance.now();
  const up = Number((await vm.exec(['cat', '/proc/uptime'])).stdout.toString().split(' ')[0]);
  const after = performance.now();
  return (before + after) / 2 - up * 1000 - t0;
}

/**
 * The phases of the boot of `vm` (running, its agent answering), started at host time `t0`, its
 * agent first answered at `agentAt` (ms since t0). `consoleLog` is the VM's serial log.
 */
export async function bootPhases(vm: Instance, consoleLog: string, t0: number, phases: { qmp: number; agent: number }): Promise<Record<string, number>> {
  const k = await kernelStart(vm, t0);
  const out: Record<string, number> = { 'QMP ready': phases.qmp, 'kernel start': k };
  const log = await fs.readFile(consoleLog, 'utf8').catch(() => '');
  for (const [name, re] of MARKS) {
    const m = re.exec(log);
    if (m) out[name] = k + Number(m[1]) * 1000;
  }
  const systemd = await vm.exec(['systemctl', 'show', ...SYSTEMD.flatMap(([p]) => ['-p', p])]).catch(() => undefined);
  if (systemd?.exitCode === 0) {
    const props = Object.fromEntries(systemd.stdout.toString().trim().split('\n').map((l) => l.split('=') as [string, string]));
    for (const [p, name] of SYSTEMD) if (Number(props[p]) > 0) out[name] = k + Number(props[p]) / 1000;
    const agent = await vm.exec(['systemctl', 'show', 'lxq-agent.service', '-p', 'ExecMainStartTimestampMonotonic']).catch(() => undefined);
    const us = Number(/=(\d+)/.exec(agent?.stdout.toString() ?? '')?.[1]);
    if (us > 0) out['systemd: lxq agent unit started'] = k + us / 1000;
  }
  out['agent answers'] = phases.agent;
  return out;
}

/**
 * CPU time QEMU has used so far, ms (all its threads: the vCPUs' TCG and its I/O). Under TCG a
 * boot is bound by the CPU, so this is what a change in the guest saves, whatever the host's load
 * does to the wall-clock times.
 */
export async function qemuCpuMs(vm: Instance): Promise<number> {
  const pid = (await vm.state()).pid;
  if (!pid) return NaN;
  const stat = await fs.readFile(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // utime and stime (fields 14 and 15) in clock ticks, 100 per second on Linux.
  return (Number(f[11]) + Number(f[12])) * 10;
}

/** Adds one boot's phases to the series `s` (keys prefixed `@ `, in boot order). */
export function addPhases(s: Record<string, number[]>, prefix: string, phases: Record<string, number>): void {
  for (const [k, v] of Object.entries(phases)) (s[`${prefix}@ ${k}`] ??= []).push(v);
}

/** The serial log of a VM of `host` (lib/drivers/vm/paths.ts names it). */
export function consoleLogOf(instancesDir: string, name: string): string {
  return path.join(instancesDir, name, 'console.log');
}
