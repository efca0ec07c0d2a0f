/**
 * Builds images ahead of use: `node dist/scripts/images.js ensure busybox [vm/default] [--path DIR]`.
 * The default store is the default host's (/var/lib/lxq/images).
 */
import { Host } from '../lib';

async function main(argv: string[]): Promise<void> {
  const [cmd, ...rest] = argv;
  const i = rest.indexOf('--path');
  const path = i >= 0 ? rest.splice(i, 2)[1] : undefined;
  if (cmd !== 'ensure' || rest.length === 0) {
    console.error('usage: images.js ensure <image>... [--path HOSTDIR]');
    process.exit(2);
  }
  const host = await Host.open({ path });
  for (const name of rest) {
    const t = performance.now();
    const image = await host.images.ensure(name);
    console.log(`image ${image.name}: ${image.dir} (${((performance.now() - t) / 1000).toFixed(1)} s)`);
  }
}

main(process.argv.slice(2)).catch((e) => {
  console.error(e instanceof Error ? e.message : e);
  process.exit(1);
});
