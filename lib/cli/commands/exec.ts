/** `exec NAME -- CMD…` (either host) and `shell NAME` (this machine's): the terminal joined to a command inside. */
import type { Command } from 'commander';

import { collect } from '../args';
import type { CliContext } from '../context';
import { type ExecFlags, execRequest, execution, interactive } from '../interactive';

export function register(cli: Command, ctx: CliContext): void {
  cli
    .command('exec <name> [command...]')
    .description('Run a command in an instance: lxq exec NAME -- CMD [ARGS...]')
    .option('-t, --tty', 'a pseudo-terminal (default when stdin is a terminal)')
    .option('-T, --no-tty', 'no pseudo-terminal')
    .option('--env <key=value>', 'an environment variable (repeatable)', collect, [])
    .option('--cwd <dir>', 'working directory inside')
    .action(async (name: string, command: string[], o: ExecFlags) => {
      const run = execution(command, execRequest(command, o));
      process.exitCode = await run(await (await ctx.host()).get(name));
    });

  cli
    .command('shell <name>')
    .description('A login shell in an instance (exec NAME -- sh -l, on a terminal)')
    .action(async (name: string) => {
      process.exitCode = await interactive(await (await ctx.localHost()).get(name), ['sh', '-l'], Boolean(process.stdin.isTTY), {});
    });
}
