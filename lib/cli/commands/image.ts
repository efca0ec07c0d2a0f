/** `image list|build|delete|import|export`: this machine's image store. */
import { type Command, Option } from 'commander';

import type { CliContext } from '../context';
import { progressBar } from '../progress';
import { checkFormat, FORMATS, formatRows } from '../format';

export function register(cli: Command, ctx: CliContext): void {
  const images = async () => (await ctx.localHost()).images;
  const image = cli.command('image').description('The image store');
  image
    .command('list')
    .description('Built images')
    .addOption(new Option('--format <format>', 'output format').choices(FORMATS).default('table'))
    .action(async (o: { format: string }) => {
      const rows = (await (await images()).list()).map((i) => ({ name: i.name, type: i.type, size: `${(i.size / 2 ** 20).toFixed(1)}MiB`, created: i.createdAt, current: i.current }));
      process.stdout.write(formatRows(rows, ['name', 'type', 'size', 'created', 'current'], checkFormat(o.format)));
    });
  image
    .command('build <name>')
    .description("Build one of lxq's images (busybox, debian/12, vm/default…), with a progress bar")
    .option('--vm', 'the VM variant')
    .action(async (name: string, o: { vm?: boolean }) => {
      const progress = progressBar(name, true);
      try {
        const img = await (await images()).ensure(name, { ...(o.vm ? { type: 'vm' as const } : {}), onProgress: progress.update });
        progress.done();
        process.stdout.write(`${img.name} (${img.type}): ${img.dir}\n`);
      } catch (e) {
        progress.stop();
        throw e;
      }
    });
  image
    .command('delete <name>')
    .description('Delete an image no instance uses')
    .action(async (name: string) => (await images()).delete(name));
  image
    .command('import <file>')
    .description("Import an image in LXD's unified tarball format: lxq image import ./alpine.tar.gz --alias alpine")
    .requiredOption('--alias <name>', 'the name to keep it under')
    .action(async (file: string, o: { alias: string }) => {
      const img = await (await images()).import(file, { alias: o.alias });
      process.stdout.write(`${img.name} (${img.type}): ${img.dir}\n`);
    });
  image
    .command('export <name> <file>')
    .description("Write an image to a file in LXD's unified tarball format")
    .option('--vm', 'the VM variant')
    .action(async (name: string, file: string, o: { vm?: boolean }) => {
      await (await images()).export(name, file, o.vm ? { type: 'vm' } : {});
    });
}
