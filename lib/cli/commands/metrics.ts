/** `metrics`: every running instance's usage as OpenMetrics text (this host's, or an LXD server's own /1.0/metrics). */
import type { Command } from 'commander';

import type { CliContext } from '../context';

export function register(cli: Command, ctx: CliContext): void {
  cli
    .command('metrics')
    .description("Print running instances' usage in the OpenMetrics text format, with LXD's metric names")
    .action(async () => {
      process.stdout.write(await (await ctx.host()).metrics());
    });
}
