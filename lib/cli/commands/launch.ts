/** `launch IMAGE NAME`, `create IMAGE NAME` (LXD's `init`) and `wait NAME --for …`, on either host. */
import type { Command } from 'commander';

import { NotSupported } from '../../core/errors';
import type { WaitFor } from '../../instance/wait';
import { collect, keyValues, parseDevices, parseWait } from '../args';
import type { CliContext } from '../context';

interface LaunchFlags {
  vm?: boolean;
  ephemeral?: boolean;
  config: string[];
  device: string[];
  storage?: string;
  profile?: string[];
  wait?: string;
  waitTimeout?: number;
}

interface WaitFlags {
  for: string;
  port?: number;
  pattern?: string;
  timeout?: number;
}

/** The flags `create` and `launch` share (LXD's `init` and `launch`). */
function createFlags(command: Command): Command {
  return command
    .option('--vm', 'a virtual machine (default: a container)')
    .option('-e, --ephemeral', 'deleted when it stops')
    .option('-c, --config <key=value>', 'an option (repeatable)', collect, [])
    .option('-d, --device <name,type=...,key=value>', 'a device, e.g. data,type=disk,source=/srv,path=/mnt (repeatable)', collect, [])
    .option('-s, --storage <pool>', 'the storage pool of its root disk (default: the default pool)')
    .option('-p, --profile <name>', 'a profile, in order (repeatable; default: default)', collect);
}

function createOptions(o: LaunchFlags, ctx: CliContext) {
  if (o.storage !== undefined && ctx.remote) throw new NotSupported('--storage with --remote: lxq does not drive an LXD server\'s storage pools yet (give the pool in a root disk with `lxc`)');
  const type = o.vm ? ('vm' as const) : ('container' as const);
  return { type, config: keyValues(o.config), devices: parseDevices(o.device), ...(o.storage !== undefined ? { pool: o.storage } : {}), ...(o.ephemeral ? { ephemeral: true } : {}), ...(o.profile ? { profiles: o.profile } : {}) };
}

export function register(cli: Command, ctx: CliContext): void {
  createFlags(cli.command('create <image> <name>').alias('init').description('Create an instance (stopped)')).action(async (image: string, name: string, o: LaunchFlags) => {
    await (await ctx.host()).create(name, { ...createOptions(o, ctx), image });
    process.stdout.write(`${name} created\n`);
  });

  createFlags(cli.command('launch <image> <name>').description('Create and start an instance'))
    .option('--wait <for>', 'resolve once ready: running, agent, systemd, address, ipv4, ipv6, port=N, log=REGEX, exec=CMD')
    .option('--wait-timeout <ms>', 'how long --wait may take (default 60000)', Number)
    .action(async (image: string, name: string, o: LaunchFlags) => {
      const options = createOptions(o, ctx);
      const wait = o.wait === undefined ? undefined : parseWait(o.wait, o.waitTimeout);
      await (await ctx.host()).launch(image, name, { ...options, ...(wait ? { wait } : {}) });
      process.stdout.write(`${name} started\n`);
    });

  cli
    .command('wait <name> [command...]')
    .description('Wait until an instance is ready: lxq wait NAME --for port --port 5432; --for exec -- CMD [ARGS...]')
    .requiredOption('--for <condition>', 'running, agent, systemd, address, ipv4, ipv6, port, log, exec')
    .option('--port <n>', 'for port: the TCP port listening inside', Number)
    .option('--pattern <regex>', 'for log: what the console log must match')
    .option('--timeout <ms>', 'default 60000', Number)
    .action(async (name: string, command: string[], o: WaitFlags) => {
      const spec = {
        for: o.for as WaitFor,
        ...(o.port !== undefined ? { port: o.port } : {}),
        ...(o.pattern !== undefined ? { pattern: o.pattern } : {}),
        ...(command.length ? { command } : {}),
        ...(o.timeout !== undefined ? { timeout: o.timeout } : {}),
      };
      await (await (await ctx.host()).get(name)).wait(spec);
    });
}
