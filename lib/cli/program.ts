/**
 * The whole command line (main.ts runs it unless the quick path serves the command): LXD's `lxc`
 * verbs over a host directory (`--host`, default /var/lib/lxq) or an LXD server (`--remote`).
 * The commands are in commands/, written against one InstanceHost (context.ts). Errors print one
 * line on stderr and exit non-zero.
 */
import { Command, CommanderError } from 'commander';
import * as path from 'node:path';

import { registerCommands } from './commands';
import { CliContext, DEFAULT_HOST_PATH } from './context';
import { exitFlushed, FAILED, failureLine } from './exit';

/** The package's version, from its package.json (found from lib/cli or dist/lib/cli). */
function version(): string {
  for (let dir = __dirname; dir !== path.dirname(dir); dir = path.dirname(dir)) {
    try {
      const pkg = require(path.join(dir, 'package.json')); // eslint-disable-line @typescript-eslint/no-require-imports -- a JSON file found at run time
      if (pkg.name === 'lxq') return pkg.version;
    } catch {
      /* not here */
    }
  }
  return 'unknown';
}

/** The command word in `argv` (past the global options and their values), if any. */
function commandWord(cli: Command, argv: string[]): string | undefined {
  const taking = new Set(cli.options.filter((o) => o.required || o.optional).flatMap((o) => [o.long, o.short]));
  for (let i = 2; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--') return undefined;
    if (!a.startsWith('-')) return a;
    if (taking.has(a)) i++;
  }
  return undefined;
}

/** The `lxq` program; given the command line, with only the commands it names (start-up is most of a command's time). */
export function program(argv?: string[]): Command {
  const cli = new Command('lxq')
    .description('System containers and VMs on this host (lxq)')
    .version(version())
    .option('--host <path>', 'state directory', process.env.LXQ_HOST ?? DEFAULT_HOST_PATH)
    .option('--images <path>', 'image store directory (default <host>/images)', process.env.LXQ_IMAGES)
    .option('--remote <socket|url>', 'an LXD server instead of this host: its unix socket (/var/lib/lxd/unix.socket) or https://host:8443', process.env.LXQ_REMOTE)
    .option('--remote-cert <file>', 'with an https remote: our client certificate (PEM)')
    .option('--remote-key <file>', 'with an https remote: our private key (PEM)')
    .option('--remote-server-cert <file>', "with an https remote: the server's certificate (PEM), the only one accepted")
    .option('--project <name>', 'with --remote: the LXD project')
    .showSuggestionAfterError(true)
    .showHelpAfterError(false)
    .exitOverride()
    .configureOutput({ outputError: (s, write) => write(s.trim().split('\n').join(' ').replace(/^error: /, 'lxq: ') + '\n') });
  const ctx = new CliContext(cli);
  cli.hook('preAction', (_root, action) => ctx.refuseMisuse(action));
  registerCommands(cli, ctx, argv && commandWord(cli, argv));
  return cli;
}

/** Runs the command line `argv` with the whole CLI, then exits. */
export async function main(argv: string[]): Promise<void> {
  try {
    await program(argv).parseAsync(argv);
  } catch (e) {
    if (e instanceof CommanderError) {
      process.exitCode = e.exitCode;
    } else {
      process.stderr.write(failureLine(e));
      process.exitCode = FAILED;
    }
  }
  exitFlushed();
}
