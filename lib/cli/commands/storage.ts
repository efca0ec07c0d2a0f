/** `storage list|create|info|show|set|unset|delete`: this machine's storage pools (LXD's `lxc storage`); `storage volume …`: their custom volumes. */
import { type Command, Option } from 'commander';

import { InvalidArgument } from '../../core/errors';
import { keyValues, unsetKeys } from '../args';
import type { PoolDriverName } from '../../storage/pools/types';
import type { CliContext } from '../context';
import { checkFormat, FORMATS, formatRows } from '../format';
import { registerVolumes } from './storage-volume';

/** `set POOL KEY VALUE` (LXD's form) or `set POOL KEY=VALUE…`. */
function setPairs(words: string[]): Record<string, string> {
  if (words.length === 2 && !words[0].includes('=')) return { [words[0]]: words[1] };
  return keyValues(words);
}

export function register(cli: Command, ctx: CliContext): void {
  const pools = async () => (await ctx.localHost()).storage.pools;
  const storage = cli.command('storage').description('Storage pools: where instances\' root disks live');
  storage
    .command('create <name> <driver> [pairs...]')
    .description('Create a pool: lxq storage create fast overlay; lxq storage create bt btrfs size=20GiB; drivers: dir, overlay, btrfs (keys source, size)')
    .option('--description <text>', 'what the pool is for')
    .action(async (name: string, driver: string, pairs: string[], o: { description?: string }) => {
      const p = await (await pools()).create(name, { driver: driver as PoolDriverName, config: keyValues(pairs), ...(o.description !== undefined ? { description: o.description } : {}) });
      process.stdout.write(`Storage pool ${p.name} created\n`);
    });
  storage
    .command('list')
    .description('The pools, their drivers and how many instances use each')
    .addOption(new Option('--format <format>', 'output format').choices(FORMATS).default('table'))
    .action(async (o: { format: string }) => {
      const rows = (await (await pools()).list()).map((p) => ({ name: p.name, driver: p.driver, description: p.description, 'used by': p.usedBy.length, created: p.createdAt.toISOString() }));
      process.stdout.write(formatRows(rows, ['name', 'driver', 'description', 'used by', 'created'], checkFormat(o.format)));
    });
  for (const verb of ['info', 'show']) {
    storage
      .command(`${verb} <name>`)
      .description(verb === 'info' ? 'A pool: its driver, keys and the instances on it' : 'The same as info')
      .action(async (name: string) => {
        const p = await (await pools()).get(name);
        const lines = [`name: ${p.name}`, `driver: ${p.driver}`, `description: ${p.description}`, `created: ${p.createdAt.toISOString()}`];
        for (const [k, v] of Object.entries(p.config)) lines.push(`config ${k}: ${v}`);
        lines.push(`used by: ${p.usedBy.length ? p.usedBy.join(', ') : '-'}`);
        process.stdout.write(lines.join('\n') + '\n');
      });
  }
  storage
    .command('set <name> [words...]')
    .description('Change keys of a pool: lxq storage set fast KEY VALUE, or KEY=VALUE...')
    .option('--description <text>', 'a new description')
    .action(async (name: string, words: string[], o: { description?: string }) => {
      if (words.length === 0 && o.description === undefined) throw new InvalidArgument('storage set: give KEY VALUE, KEY=VALUE pairs or --description');
      await (await pools()).update(name, { config: setPairs(words), ...(o.description !== undefined ? { description: o.description } : {}) });
    });
  storage
    .command('unset <name> <keys...>')
    .description('Remove keys of a pool')
    .action(async (name: string, keys: string[]) => void (await (await pools()).update(name, { config: unsetKeys(keys) })));
  storage
    .command('delete <name>')
    .description('Delete a pool no instance uses')
    .action(async (name: string) => {
      await (await pools()).delete(name);
      process.stdout.write(`Storage pool ${name} deleted\n`);
    });
  registerVolumes(storage, ctx);
}
