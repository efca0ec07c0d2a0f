/**
 * Snapshots: keep a container's files, change them, look at the snapshots, go back.
 * The same calls work on a VM (a running VM's snapshot keeps its RAM too).
 * Run as root: `node dist/examples/snapshots.js`.
 */
import { Host } from '../lib';

async function main(): Promise<void> {
  const host = await Host.open({ path: process.env.LXQ_HOST, ...(process.env.LXQ_IMAGES ? { images: process.env.LXQ_IMAGES } : {}) });
  const c = await host.create(`snaps-${process.pid}`, { image: 'busybox' });
  const motd = async () => (await c.files.read('/etc/motd')).toString().trim();
  try {
    await c.start();
    await c.files.write('/etc/motd', 'before\n');
    await c.snapshots.create('clean', { description: 'as installed' });
    await c.files.write('/etc/motd', 'after\n');
    console.log(`now: ${await motd()}`);
    for (const s of await c.snapshots.list()) console.log(`snapshot ${s.name} (${s.description}), ${(s.size / 2 ** 20).toFixed(1)} MiB`);
    await c.snapshots.restore('clean'); // the container ends running, as it was
    console.log(`restored: ${await motd()}, ${await c.status()}`);
    await c.snapshots.rename('clean', 'v1');
    await c.snapshots.delete('v1');
    console.log(`snapshots left: ${(await c.snapshots.list()).length}`);
  } finally {
    await c.delete({ force: true });
    await host.close();
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
