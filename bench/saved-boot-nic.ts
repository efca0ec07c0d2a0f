/**
 * vm/default with a bridged NIC on a network of its own, cold boot and saved boot
 * (vm.saved_boot) side by side, one VM at a time, alternating: start → the lxq agent answers an
 * exec, start → the guest has the address lxq's network leased for its MAC. The saved boot of
 * this shape is made first (not timed). The load average is printed at the start and the end.
 * Usage: node dist/bench/saved-boot-nic.js [--cycles N]
 */
import { mkdtempSync, rmSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import { Host, type VirtualMachine } from '../lib';
import { printStatsTable, type Stats, stats } from './stats';

async function cycle(host: Host, name: string, network: string, saved: boolean, s: Record<string, number[]>): Promise<void> {
  const config: Record<string, string> = saved ? { 'vm.saved_boot': 'true' } : {};
  const vm = (await host.create(name, { type: 'vm', image: 'vm/default', config, devices: { eth0: { type: 'nic', network } } })) as VirtualMachine;
  try {
    const t = performance.now();
    await vm.start();
    await vm.exec(['/bin/true']);
    const exec = performance.now() - t;
    await vm.waitForAddress({ family: 'inet', timeout: 300_000 });
    const address = performance.now() - t;
    const state = await vm.state();
    if (state.boot !== (saved ? 'saved-state' : 'cold')) throw new Error(`${name} booted ${state.boot}: ${state.bootReason}`);
    const kind = saved ? 'saved boot' : 'cold';
    (s[`${kind}: start → agent answers exec`] ??= []).push(exec);
    (s[`${kind}: start → address leased`] ??= []).push(address);
  } finally {
    await vm.delete({ force: true });
  }
}

export async function main(cycles: number): Promise<Record<string, Stats | string>> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'lxq-bench-sbn-'));
  const host = await Host.open({ path: dir, images: process.env.LXQ_TEST_IMAGES ?? '/var/tmp/lxq-test-images', reap: true });
  const network = (await host.networks.create(`lxqbn${process.pid.toString(16).slice(-6)}`, { 'ipv4.nat': 'false', 'ipv6.address': 'none' })).name;
  const s: Record<string, number[]> = {};
  const load = [os.loadavg().map((l) => l.toFixed(1)).join(' ')];
  try {
    await host.images.ensure('vm/default');
    await cycle(host, `bsn-${process.pid}-first`, network, true, {}); // makes the saved boot of this shape
    for (let i = 0; i < cycles; i++) {
      await cycle(host, `bsn-${process.pid}-c${i}`, network, false, s);
      await cycle(host, `bsn-${process.pid}-s${i}`, network, true, s);
    }
  } finally {
    await host.networks.delete(network).catch(() => undefined);
    rmSync(dir, { recursive: true, force: true });
  }
  load.push(os.loadavg().map((l) => l.toFixed(1)).join(' '));
  const out: Record<string, Stats | string> = { 'load average (1, 5, 15 min) at start / end': load.join(' / ') };
  for (const k of Object.keys(s).sort()) out[k] = stats(s[k]);
  return out;
}

if (require.main === module) {
  const at = process.argv.indexOf('--cycles');
  main(at > 0 ? Number(process.argv[at + 1]) : 3).then(
    (res) => printStatsTable(`vm/default with a bridged NIC, cold and saved boot (${os.cpus().length} CPUs, Node ${process.version}), ms`, 'step', res),
    (e) => {
      console.error(e);
      process.exit(1);
    },
  );
}
