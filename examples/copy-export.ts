/**
 * Copies and archives: a container copied, exported to a file, imported under another name, and
 * renamed; each one is an instance of its own. Run as root: `node dist/examples/copy-export.js`.
 */
import { promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import { Host } from '../lib';

async function main(): Promise<void> {
  const host = await Host.open({ path: process.env.LXQ_HOST, ...(process.env.LXQ_IMAGES ? { images: process.env.LXQ_IMAGES } : {}) });
  const tag = process.pid;
  const tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'lxq-example-'));
  const made: string[] = [];
  try {
    const web = await host.create(`web-${tag}`, { image: 'busybox', config: { 'user.role': 'web' } });
    made.push(web.name);
    await web.files.write('/root/notes.txt', 'hello\n');
    await web.snapshots.create('first');

    // A copy: its own rootfs, new MAC addresses; options can change on the way.
    const staging = await host.copy(web.name, `staging-${tag}`, { config: { 'user.role': 'staging' } });
    made.push(staging.name);
    console.log(`copy ${staging.name}: role ${staging.config['user.role']}, snapshots ${(await staging.snapshots.list()).map((s) => s.name).join(',')}`);

    // An archive, and an instance made from it on this (or any other) host.
    const file = path.join(tmp, 'web.tar.zst');
    await web.export(file); // its snapshots too, as LXD's export
    console.log(`exported ${web.name}: ${((await fs.stat(file)).size / 2 ** 20).toFixed(1)} MiB`);
    const restored = await host.import(file, { name: `restored-${tag}` });
    made.push(restored.name);
    console.log(`imported ${restored.name}: ${(await restored.files.read('/root/notes.txt')).toString().trim()}`);

    await restored.rename(`archive-${tag}`);
    made.push(restored.name);
    console.log(`renamed to ${restored.name}`);
    console.log(`instances: ${(await host.list()).map((i) => i.name).sort().join(' ')}`);
  } finally {
    for (const n of made) await (await host.get(n).catch(() => undefined))?.delete({ force: true });
    await fs.rm(tmp, { recursive: true, force: true });
    await host.close();
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
