/** `config show|get|set|unset`: the options of an instance of this machine's host. */
import type { Command } from 'commander';

import type { InstanceConfigPatch } from '../../config/options';
import { keyValues, unsetKeys } from '../args';
import type { CliContext } from '../context';

export function register(cli: Command, ctx: CliContext): void {
  const instance = async (name: string) => (await ctx.localHost()).get(name);
  const config = cli.command('config').description('Options of an instance');
  config
    .command('show <name>')
    .description('All options, key=value')
    .action(async (name: string) => {
      const i = await instance(name);
      process.stdout.write(Object.entries(i.config).sort(([a], [b]) => (a < b ? -1 : 1)).map(([k, v]) => `${k}=${v}\n`).join(''));
    });
  config
    .command('get <name> <key>')
    .description('One option (empty when unset)')
    .action(async (name: string, key: string) => {
      const v = ((await instance(name)).config as Record<string, string>)[key];
      process.stdout.write(`${v ?? ''}\n`);
    });
  config
    .command('set <name> <pairs...>')
    .description('Set options: lxq config set web1 limits.memory=512MiB user.note=x')
    .action(async (name: string, pairs: string[]) => {
      const patch = keyValues(pairs) as InstanceConfigPatch;
      await (await instance(name)).update(patch);
    });
  config
    .command('unset <name> <keys...>')
    .description('Remove options')
    .action(async (name: string, keys: string[]) => {
      await (await instance(name)).update(unsetKeys(keys) as InstanceConfigPatch);
    });
}
