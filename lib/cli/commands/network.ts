/** `network create|list|show|set|unset|delete`: this machine's managed bridges. */
import { type Command, Option } from 'commander';

import { keyValues, unsetKeys } from '../args';
import type { CliContext } from '../context';
import { checkFormat, FORMATS, formatRows } from '../format';

export function register(cli: Command, ctx: CliContext): void {
  const networks = async () => (await ctx.localHost()).networks;
  const network = cli.command('network').description('Managed bridge networks');
  network
    .command('create <name> [pairs...]')
    .description('Create a bridge network: lxq network create lxqbr1 ipv4.address=10.9.0.1/24')
    .action(async (name: string, pairs: string[]) => {
      const n = await (await networks()).create(name, keyValues(pairs));
      process.stdout.write(`${n.name}: ${n.cidr}\n`);
    });
  network
    .command('list')
    .description('Managed networks')
    .addOption(new Option('--format <format>', 'output format').choices(FORMATS).default('table'))
    .action(async (o: { format: string }) => {
      const rows = (await (await networks()).list()).map((n) => ({ name: n.name, address: n.cidr, domain: n.domain, mtu: n.mtu, created: n.createdAt.toISOString() }));
      process.stdout.write(formatRows(rows, ['name', 'address', 'domain', 'mtu', 'created'], checkFormat(o.format)));
    });
  network
    .command('show <name>')
    .description('A network: its keys and leases')
    .action(async (name: string) => {
      const n = await (await networks()).get(name);
      const lines = [`name: ${n.name}`, `address: ${n.cidr}`, `created: ${n.createdAt.toISOString()}`, ...Object.entries(n.config).map(([k, v]) => `config ${k}: ${v}`)];
      for (const l of await n.leases()) lines.push(`lease: ${l.address} ${l.hwaddr} ${l.hostname ?? '-'} until ${l.expiresAt.toISOString()}`);
      process.stdout.write(lines.join('\n') + '\n');
    });
  network
    .command('set <name> <pairs...>')
    .description('Change keys of a network: lxq network set lxqbr1 dns.domain=lab bridge.mtu=1400')
    .action(async (name: string, pairs: string[]) => void (await (await networks()).update(name, keyValues(pairs))));
  network
    .command('unset <name> <keys...>')
    .description('Return keys of a network to their defaults')
    .action(async (name: string, keys: string[]) => void (await (await networks()).update(name, unsetKeys(keys))));
  network
    .command('delete <name>')
    .description('Delete a network no instance uses')
    .action(async (name: string) => (await networks()).delete(name));
}
