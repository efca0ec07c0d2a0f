/** `launch IMAGE NAME` and `wait NAME --for …`, on either host. */
import type { Command } from 'commander';

import { NotSupported } from '../../core/errors';
import type { WaitFor } from '../../instance/wait';
import { collect, keyValues, parseDevices, parseWait } from '../args';
import type { CliContext } from '../context';

interface LaunchFlags {
  vm?: boolean;
  config: string[];
  device: string[];
  storage?: string;
  wait?: string;
  waitTimeout?: number;
}

interface WaitFlags {
  for: string;
  port?: number;
  pattern?: string;
  timeout?: number;
}

export function register(cli: Command, ctx: CliContext): void {
  cli
    .command('launch <image> <name>')
    .description('Create and start an instance')
    .option('--vm', 'a virtual machine (default: a container)')
    .option('-c, --config <key=value>', 'an option (repeatable)', collect, [])
    .option('-d, --device <name,type=...,key=value>', 'a device, e.g. data,type=disk,source=/srv,path=/mnt (repeatable)', collect, [])
    .option('-s, --storage <pool>', 'the storage pool of its root disk (default: the default pool)')
    .option('--wait <for>', 'resolve once ready: running, agent, systemd, address, ipv4, ipv6, port=N, log=REGEX, exec=CMD')
    .option('--wait-timeout <ms>', 'how long --wait may take (default 60000)', Number)
    .action(async (image: string, name: string, o: LaunchFlags) => {
      const config = keyValues(o.config);
      const devices = parseDevices(o.device);
      if (o.storage !== undefined && ctx.remote) throw new NotSupported('--storage with --remote: lxq does not drive an LXD server\'s storage pools yet (give the pool in a root disk with `lxc`)');
      const wait = o.wait === undefined ? undefined : parseWait(o.wait, o.waitTimeout);
      await (await ctx.host()).launch(image, name, { type: o.vm ? 'vm' : 'container', config, devices, ...(o.storage !== undefined ? { pool: o.storage } : {}), ...(wait ? { wait } : {}) });
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
