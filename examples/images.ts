/**
 * Images: build one of lxq's images (cached by its inputs), list the store, write an image to a
 * tarball in LXD's format and import it under an alias, start a container from it, delete it.
 * Run as root: `node dist/examples/images.js`.
 */
import { promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import { Host } from '../lib';

async function main(): Promise<void> {
  const host = await Host.open({ path: process.env.LXQ_HOST, ...(process.env.LXQ_IMAGES ? { images: process.env.LXQ_IMAGES } : {}) });
  const tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'lxq-example-'));
  const alias = `mybox-${process.pid}`;
  try {
    const busybox = await host.images.ensure('busybox', { onProgress: (e) => console.log(`  ${e.percent}% ${e.phase}`) });
    console.log(`busybox ready in ${busybox.dir}`);

    const file = path.join(tmp, 'busybox.tar.gz');
    await host.images.export('busybox', file); // a unified tarball LXD's `lxc image import` takes too
    const mine = await host.images.import(file, { alias });
    console.log(`imported as ${mine.name} (${mine.type})`);
    for (const i of await host.images.list()) if (i.name === alias) console.log(`store: ${i.name} ${i.type} ${(i.size / 2 ** 20).toFixed(1)} MiB`);

    const c = await host.create(`from-${alias}`, { image: alias });
    await c.start();
    console.log(`${c.name} runs ${(await c.exec(['sh', '-c', 'busybox | head -1'])).stdout.toString().trim().split(' ').slice(0, 2).join(' ')}`);
    await c.delete({ force: true });
    await host.images.delete(alias); // refused while an instance uses it
    console.log(`${alias} deleted`);
  } finally {
    await host.images.delete(alias).catch(() => undefined);
    await fs.rm(tmp, { recursive: true, force: true });
    await host.close();
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
