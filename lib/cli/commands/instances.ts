/** `list` and `info`: the instances of the host driven, as its view shows them (views.ts). */
import { type Command, Option } from 'commander';

import type { CliContext } from '../context';
import { checkFormat, FORMATS } from '../format';
import { listText } from '../views';

export function register(cli: Command, ctx: CliContext): void {
  cli
    .command('list')
    .alias('ls')
    .description('List instances')
    .addOption(new Option('--format <format>', 'output format').choices(FORMATS).default('table'))
    .action(async (o: { format: string }) => {
      const format = checkFormat(o.format);
      process.stdout.write(await listText(ctx.view, await (await ctx.host()).list(), format));
    });

  cli
    .command('info <name>')
    .description('Show an instance: record and state')
    .action(async (name: string) => {
      const lines = await ctx.view.info(await (await ctx.host()).get(name));
      process.stdout.write(lines.join('\n') + '\n');
    });
}
