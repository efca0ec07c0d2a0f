/**
 * Devices: one host directory shared with a busybox container (a bind mount) and a vm/default
 * VM (virtiofs), a disk added to the running VM, and a shifted, read-only mount added to the
 * running container. Run as root: `node dist/examples/devices.js`.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync, chmodSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import { Host } from '../lib';

async function main(): Promise<void> {
  // LXQ_HOST / LXQ_IMAGES: another state directory and image store (the test suite's).
  const host = await Host.open({ path: process.env.LXQ_HOST, images: process.env.LXQ_IMAGES });
  const shared = mkdtempSync(path.join(os.tmpdir(), 'lxq-example-'));
  chmodSync(shared, 0o755); // the container's root (a high uid on the host) must reach it
  writeFileSync(path.join(shared, 'greeting'), 'hello from the host\n');
  const c = await host.create(`devices-ct-${process.pid}`, {
    image: 'busybox',
    // shift: an idmapped mount, so that the container's root is the host's root in /shared.
    devices: { shared: { type: 'disk', source: shared, path: '/shared', shift: 'true' } },
  });
  const vm = await host.create(`devices-vm-${process.pid}`, {
    type: 'vm',
    image: 'vm/default',
    devices: { shared: { type: 'disk', source: shared, path: '/shared' } },
  });
  try {
    await Promise.all([c.start(), vm.start()]);
    for (const i of [c, vm]) {
      const r = await i.exec(['sh', '-c', `cat /shared/greeting; echo "and hello from a ${i.type}" > /shared/from-${i.type}`], { timeout: 60_000 });
      console.log(`${i.type} read: ${r.stdout.toString().trim()}`);
      console.log(`host read: ${readFileSync(path.join(shared, `from-${i.type}`), 'utf8').trim()}`);
    }
    // Live: a new 64 MiB disk for the VM, and a shifted read-only view of /etc for the container.
    await vm.addDevice('scratch', { type: 'disk', size: '64MiB' });
    const disks = await vm.exec(['sh', '-c', 'sleep 1; for d in /sys/block/vd*; do echo "$(basename $d): $(cat $d/serial)"; done']);
    console.log(`vm disks:\n${disks.stdout.toString().trim()}`);
    await c.addDevice('hostetc', { type: 'disk', source: '/etc', path: '/mnt/host-etc', readonly: 'true', shift: 'true' });
    const owner = await c.exec(['stat', '-c', '%U', '/mnt/host-etc/hostname']);
    console.log(`container sees the host's /etc/hostname owned by ${owner.stdout.toString().trim()} (shifted)`);
    console.log('state devices:', JSON.stringify((await vm.state()).devices));
  } finally {
    await c.delete({ force: true });
    await vm.delete({ force: true });
    rmSync(shared, { recursive: true, force: true });
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
