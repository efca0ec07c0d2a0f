/**
 * Host-wide lifecycle events: what this process does, and what happens to its instances by
 * other hands (here, the container's own init halting). Run as root: `node dist/examples/events.js`.
 */
import { Host, type LifecycleEvent } from '../lib';

async function main(): Promise<void> {
  const host = await Host.open({ path: process.env.LXQ_HOST, ...(process.env.LXQ_IMAGES ? { images: process.env.LXQ_IMAGES } : {}) });
  const print = (e: LifecycleEvent) => console.log(`${e.action} ${e.name} (${e.requestor})`);
  host.on('lifecycle', print);
  await host.ready(); // from here, the init's own halt below is seen too
  const c = await host.create(`events-${process.pid}`, { image: 'busybox' });
  try {
    await c.start();
    await c.exec(['kill', '-USR1', '1']); // busybox init halts: nobody in lxq asked for it
    while ((await c.status()) !== 'stopped') await new Promise((r) => setTimeout(r, 50));
    await new Promise((r) => setTimeout(r, 200));
  } finally {
    await c.delete({ force: true });
    host.off('lifecycle', print);
    await host.close();
  }
}

void main();
