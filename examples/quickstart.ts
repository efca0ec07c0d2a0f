/**
 * The quick start: a busybox container with limits and an environment, started, inspected,
 * frozen, thawed, stopped and deleted. Run as root: `npm run demo`.
 */
import { Host } from '../lib';

async function main(): Promise<void> {
  const host = await Host.open({ path: process.env.LXQ_PATH });
  const image = await host.images.ensure('busybox');
  console.log(`image ${image.name} ready in ${image.dir}`);

  const name = `demo-${process.pid}`;
  const c = await host.create(name, {
    image: 'busybox',
    config: { 'limits.memory': '256MiB', 'limits.cpu': '1', 'limits.processes': 100, 'environment.GREETING': 'hi' },
  });
  c.on('status', (e) => console.log(`  ${e.name}: ${e.previous} -> ${e.status}`));
  try {
    let t = performance.now();
    await c.start();
    console.log(`started in ${(performance.now() - t).toFixed(1)} ms`);
    const s = await c.state();
    console.log(`state: pid ${s.pid}, ${s.processes} processes, ${((s.memory.usageBytes ?? 0) / 2 ** 20).toFixed(1)} MiB used of ${s.memory.limitBytes! / 2 ** 20} MiB, cpu ${(s.cpu.usageNs / 1e6).toFixed(1)} ms`);
    await c.freeze();
    await c.unfreeze();
    t = performance.now();
    await c.stop({ timeout: 5_000 });
    console.log(`stopped gracefully in ${(performance.now() - t).toFixed(1)} ms`);
    console.log('instances on this host:', (await host.list()).map((i) => `${i.name} (${i.type})`).join(', '));
  } finally {
    await c.delete({ force: true });
  }
  console.log('deleted; demo done');
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
