/**
 * VM lifecycle on vm/default under this host's accelerator (TCG here), N cycles:
 *   create, start → QMP ready, start → the lxq agent answers (and the boot's phases on the way:
 *   bench/boot-phases.ts), start → qemu-ga answers, QMP round trip (query-status over the
 *   instance's own client), agent round trip (guest-ping), exec `/bin/true` through the agent
 *   (when the VM driver supports it), graceful stop (ACPI), delete; and in each cycle the same VM
 *   started from the image's saved boot (vm.saved_boot: bench/saved-boot.ts).
 * Usage: node dist/bench/vm.js [--quick]
 */
import { mkdtempSync, rmSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import { Host, type VirtualMachine } from '../lib';
import { QgaClient } from '../lib/qmp';
import { addPhases, bootPhases, consoleLogOf, qemuCpuMs } from './boot-phases';
import { savedBootCycle } from './saved-boot';
import { printStatsTable, Stats, stats } from './stats';

async function waitForAgent(socket: string, timeoutMs: number): Promise<QgaClient> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      return await QgaClient.connect(socket, { timeout: 500, retry: true });
    } catch (e) {
      if (Date.now() > deadline) throw e;
    }
  }
}

export async function main(opts: { quick: boolean }): Promise<Record<string, Stats | string>> {
  const cycles = opts.quick ? 1 : 5;
  const dir = mkdtempSync(path.join(os.tmpdir(), 'lxq-bench-vm-'));
  const host = await Host.open({ path: dir, images: process.env.LXQ_TEST_IMAGES ?? '/var/tmp/lxq-test-images', reap: true });
  await host.images.ensure('vm/default');
  const s: Record<string, number[]> = {
    create: [], 'start → QMP ready': [], 'start → lxq agent answers': [], 'start → qemu-ga answers': [], 'QMP query-status': [], 'agent guest-ping': [], 'exec /bin/true (agent)': [], 'stop (ACPI)': [], delete: [],
  };
  let execSkipped = '';
  const phases: Record<string, number>[] = [];
  const time = async <T>(into: number[], op: () => Promise<T>): Promise<T> => {
    const t = performance.now();
    const r = await op();
    into.push(performance.now() - t);
    return r;
  };
  try {
    // The saved boot of vm/default's default shape, made here if there is none (vm.saved_boot).
    await savedBootCycle(host, 'vm/default', `bsv-${process.pid}-first`, false, s, '');
    for (let i = 0; i < cycles; i++) {
      await savedBootCycle(host, 'vm/default', `bsv-${process.pid}-${i}`, false, s, '');
      const vm = (await time(s.create, () => host.create(`bvm-${process.pid}-${i}`, { type: 'vm', image: 'vm/default' }))) as VirtualMachine;
      try {
        const t0 = performance.now();
        await vm.start();
        const qmp = performance.now() - t0;
        s['start → QMP ready'].push(qmp);
        await vm.wait({ for: 'agent', timeout: 120_000 });
        const agent = performance.now() - t0;
        s['start → lxq agent answers'].push(agent);
        (s['QEMU CPU time, start → lxq agent answers'] ??= []).push(await qemuCpuMs(vm));
        const qga = await waitForAgent(path.join(host.instancesDir, vm.name, 'qga.sock'), 60_000);
        s['start → qemu-ga answers'].push(performance.now() - t0);
        phases.push(await bootPhases(vm, consoleLogOf(host.instancesDir, vm.name), t0, { qmp, agent }));
        for (let k = 0; k < (opts.quick ? 20 : 200); k++) {
          await time(s['QMP query-status'], () => vm.qmp.execute('query-status'));
          await time(s['agent guest-ping'], () => qga.ping());
        }
        await qga.close();
        for (let k = 0; k < (opts.quick ? 5 : 30) && !execSkipped; k++) {
          await time(s['exec /bin/true (agent)'], () => vm.exec(['/bin/true'])).catch((e) => {
            execSkipped = `skipped: ${(e as Error).message}`;
          });
        }
        await time(s['stop (ACPI)'], () => vm.stop({ timeout: 30_000 }));
      } finally {
        await time(s.delete, () => vm.delete({ force: true }));
      }
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  const out: Record<string, Stats | string> = {};
  for (const [k, v] of Object.entries(s)) out[k] = k.startsWith('exec') && execSkipped ? execSkipped : stats(v);
  const boot: Record<string, number[]> = {};
  for (const p of phases) addPhases(boot, 'boot ', p);
  for (const [k, v] of Object.entries(boot)) out[k] = stats(v);
  return out;
}

if (require.main === module) {
  main({ quick: process.argv.includes('--quick') }).then(
    (res) => {
      printStatsTable(`VM on vm/default (${os.cpus().length} CPUs, ${os.cpus()[0].model}, Node ${process.version}), ms`, 'step', res);
    },
    (e) => {
      console.error(e);
      process.exit(1);
    },
  );
}
