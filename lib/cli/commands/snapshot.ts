/** `snapshot create|list|restore|rename|delete`: snapshots of an instance of this machine's host. */
import { type Command, Option } from 'commander';

import type { CliContext } from '../context';
import { longCommand } from '../progress';
import { checkFormat, FORMATS, formatRows } from '../format';

export function register(cli: Command, ctx: CliContext): void {
  const snapshots = async (name: string) => (await (await ctx.localHost()).get(name)).snapshots;
  const snapshot = cli.command('snapshot').description('Snapshots of an instance');
  snapshot
    .command('create <name> [snapshot]')
    .description('Snapshot an instance (default names snap0, snap1…)')
    .option('--stateful', 'keep the running state too')
    .option('--description <text>', 'a note kept with it')
    .action(async (name: string, snap: string | undefined, o: { stateful?: boolean; description?: string }) => {
      const all = await snapshots(name);
      const s = await longCommand(`snapshot ${name}`, (long) => all.create(snap, { ...(o.stateful ? { stateful: true } : {}), ...(o.description ? { description: o.description } : {}), ...long }));
      process.stdout.write(`${s.name}\n`);
    });
  snapshot
    .command('list <name>')
    .description("An instance's snapshots")
    .addOption(new Option('--format <format>', 'output format').choices(FORMATS).default('table'))
    .action(async (name: string, o: { format: string }) => {
      const rows = (await (await snapshots(name)).list()).map((s) => ({
        name: s.name,
        created: s.createdAt.toISOString(),
        stateful: s.stateful,
        size: `${(s.size / 2 ** 20).toFixed(1)}MiB`,
        description: s.description,
      }));
      process.stdout.write(formatRows(rows, ['name', 'created', 'stateful', 'size', 'description'], checkFormat(o.format)));
    });
  snapshot
    .command('restore <name> <snapshot>')
    .description('Bring an instance back to a snapshot')
    .option('--stateful', 'restore the running state too')
    .action(async (name: string, snap: string, o: { stateful?: boolean }) => {
      const all = await snapshots(name);
      await longCommand(`restore ${name}`, (long) => all.restore(snap, { ...(o.stateful ? { stateful: true } : {}), ...long }));
    });
  snapshot
    .command('rename <name> <snapshot> <new-name>')
    .description('Rename a snapshot')
    .action(async (name: string, snap: string, newName: string) => (await snapshots(name)).rename(snap, newName));
  snapshot
    .command('delete <name> <snapshot>')
    .description('Delete a snapshot')
    .action(async (name: string, snap: string) => (await snapshots(name)).delete(snap));
}
