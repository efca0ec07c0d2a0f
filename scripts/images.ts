/**
 * Builds images ahead of use:
 * `node dist/scripts/images.js ensure busybox [vm/default …] [--type vm] [--path HOSTDIR | --images STOREDIR]`.
 * The default store is the default host's (/var/lib/lxq/images); `--images` names a store of its
 * own (the tests' shared one: `npm run test:images`); `--type vm` builds each image's VM variant.
 */
import { Host } from '../lib';

/** Takes `--flag VALUE` out of `args`; undefined when absent. */
function take(args: string[], flag: string): string | undefined {
  const i = args.indexOf(flag);
  if (i < 0) return undefined;
  const [, value] = args.splice(i, 2);
  if (value === undefined || value.startsWith('--')) usage();
  return value;
}

function usage(): never {
  console.error('usage: images.js ensure <image>... [--type container|vm] [--path HOSTDIR] [--images STOREDIR]');
  process.exit(2);
}

async function main(argv: string[]): Promise<void> {
  const [cmd, ...rest] = argv;
  const path = take(rest, '--path');
  const images = take(rest, '--images');
  const type = take(rest, '--type');
  if (cmd !== 'ensure' || rest.length === 0 || rest.some((a) => a.startsWith('--'))) usage();
  if (type !== undefined && type !== 'container' && type !== 'vm') usage();
  const host = await Host.open({ path, images });
  try {
    for (const name of rest) {
      const t = performance.now();
      const image = await host.images.ensure(name, type ? { type } : {});
      console.log(`image ${image.name}${type ? ` (${type})` : ''}: ${image.dir} (${((performance.now() - t) / 1000).toFixed(1)} s)`);
    }
  } finally {
    await host.close();
  }
}

main(process.argv.slice(2)).catch((e) => {
  console.error(e instanceof Error ? e.message : e);
  process.exit(1);
});
