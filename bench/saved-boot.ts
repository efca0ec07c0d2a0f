/**
 * A VM started from its image's saved boot (vm.saved_boot), for bench/vm.ts and bench/debian.ts,
 * beside their cold boots: start → the lxq agent answers an exec, → systemd running (systemd
 * images), QEMU's CPU time; the first such start, which makes the saved boot when there is none.
 */
import { existsSync, readdirSync } from 'node:fs';
import * as path from 'node:path';

import type { Host, VirtualMachine } from '../lib';
import { qemuCpuMs } from './boot-phases';

/** One saved-boot start of `image` (its rows prefixed `prefix`), the VM deleted after. */
export async function savedBootCycle(host: Host, image: string, name: string, systemd: boolean, s: Record<string, number[]>, prefix: string): Promise<void> {
  const imageDir = (await host.images.ensure(image, { type: 'vm' })).dir;
  const before = existsSync(path.join(imageDir, 'boot')) ? readdirSync(path.join(imageDir, 'boot')).filter((d) => !d.startsWith('.')).length : 0;
  const vm = (await host.create(name, { type: 'vm', image, config: { 'vm.saved_boot': 'true' } })) as VirtualMachine;
  try {
    const t = performance.now();
    await vm.start();
    const started = performance.now() - t;
    await vm.exec(['/bin/true']);
    const exec = performance.now() - t;
    const state = await vm.state();
    if (state.boot !== 'saved-state') throw new Error(`${name} booted ${state.boot}: ${state.bootReason}`);
    const after = readdirSync(path.join(imageDir, 'boot')).filter((d) => !d.startsWith('.')).length;
    if (after > before) {
      (s[`${prefix}first start: saved boot made (boot, save, load)`] ??= []).push(exec);
      return;
    }
    (s[`${prefix}saved boot: start() resolved (identity renewed)`] ??= []).push(started);
    (s[`${prefix}saved boot: start → agent answers exec`] ??= []).push(exec);
    (s[`${prefix}saved boot: QEMU CPU time, start → exec`] ??= []).push(await qemuCpuMs(vm));
    if (!systemd) return;
    const r = await vm.exec(['systemctl', 'is-system-running', '--wait']);
    if (!['running', 'degraded'].includes(r.stdout.toString().trim())) throw new Error(`${name}: systemd is ${r.stdout.toString().trim()}`);
    (s[`${prefix}saved boot: start → systemd running`] ??= []).push(performance.now() - t);
  } finally {
    await vm.delete({ force: true });
  }
}
