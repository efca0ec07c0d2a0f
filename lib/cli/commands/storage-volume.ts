/** `storage volume list|create|delete|rename|attach|detach|snapshot|restore|show|set|unset|export|import`: custom volumes (LXD's `lxc storage volume`). */
import { type Command, Option } from 'commander';

import { InvalidArgument, NotFound } from '../../core/errors';
import { keyValues, unsetKeys } from '../args';
import type { CliContext } from '../context';
import { checkFormat, FORMATS, formatRows } from '../format';
import { longCommand } from '../progress';

/** LXD's `VOLUME/SNAPSHOT` form. */
function splitSnapshot(name: string): [string, string | undefined] {
  const i = name.indexOf('/');
  return i < 0 ? [name, undefined] : [name.slice(0, i), name.slice(i + 1)];
}

export function registerVolumes(storage: Command, ctx: CliContext): void {
  const volumes = async (pool: string) => (await ctx.localHost()).storage.pool(pool).volumes;
  const volume = storage.command('volume').description('Custom volumes of a pool: filesystems or block disks kept apart from instances');
  volume
    .command('create <pool> <name> [pairs...]')
    .description('Create a volume: lxq storage volume create default data; lxq storage volume create default disk1 size=10GiB --type=block')
    .addOption(new Option('--type <type>', 'content type').choices(['filesystem', 'block']).default('filesystem'))
    .option('--description <text>', 'what the volume is for')
    .action(async (pool: string, name: string, pairs: string[], o: { type: 'filesystem' | 'block'; description?: string }) => {
      await (await volumes(pool)).create(name, { contentType: o.type, config: keyValues(pairs), ...(o.description !== undefined ? { description: o.description } : {}) });
      process.stdout.write(`Storage volume ${name} created\n`);
    });
  volume
    .command('list <pool>')
    .description('The volumes of a pool')
    .addOption(new Option('--format <format>', 'output format').choices(FORMATS).default('table'))
    .action(async (pool: string, o: { format: string }) => {
      const rows = (await (await volumes(pool)).list()).map((v) => ({ name: v.name, 'content type': v.contentType, description: v.description, 'used by': v.usedBy.length }));
      process.stdout.write(formatRows(rows, ['name', 'content type', 'description', 'used by'], checkFormat(o.format)));
    });
  volume
    .command('show <pool> <name>')
    .description('A volume: its type, keys, snapshots and the instances that name it')
    .action(async (pool: string, name: string) => {
      const v = await (await volumes(pool)).get(name);
      const lines = [`name: ${v.name}`, `pool: ${v.pool}`, `content type: ${v.contentType}`, `description: ${v.description}`, `created: ${v.createdAt.toISOString()}`];
      for (const [k, val] of Object.entries(v.config)) lines.push(`config ${k}: ${val}`);
      lines.push(`used by: ${v.usedBy.length ? v.usedBy.join(', ') : '-'}`);
      const snaps = await (await volumes(pool)).snapshots(name);
      lines.push(`snapshots: ${snaps.length ? snaps.map((s) => s.name).join(', ') : '-'}`);
      process.stdout.write(lines.join('\n') + '\n');
    });
  volume
    .command('set <pool> <name> <pairs...>')
    .description('Change keys of a volume: lxq storage volume set default data security.shared=true')
    .action(async (pool: string, name: string, pairs: string[]) => void (await (await volumes(pool)).update(name, { config: keyValues(pairs) })));
  volume
    .command('unset <pool> <name> <keys...>')
    .description('Remove keys of a volume')
    .action(async (pool: string, name: string, keys: string[]) => void (await (await volumes(pool)).update(name, { config: unsetKeys(keys) })));
  volume
    .command('delete <pool> <name>')
    .description('Delete a volume no instance names (or a snapshot: VOLUME/SNAPSHOT)')
    .action(async (pool: string, name: string) => {
      const [vol, snap] = splitSnapshot(name);
      if (snap !== undefined) await (await volumes(pool)).deleteSnapshot(vol, snap);
      else await (await volumes(pool)).delete(vol);
      process.stdout.write(`Storage volume ${name} deleted\n`);
    });
  volume
    .command('rename <pool> <name> <newName>')
    .description('Rename a volume no instance names')
    .action(async (pool: string, name: string, newName: string) => void (await (await volumes(pool)).rename(name, newName)));
  registerVolumeUse(volume, ctx);
}

/** Snapshots, restore, attach and detach. */
function registerVolumeUse(volume: Command, ctx: CliContext): void {
  const volumes = async (pool: string) => (await ctx.localHost()).storage.pool(pool).volumes;
  volume
    .command('snapshot <pool> <name> [snapshot]')
    .description('Take a snapshot of a volume (named snap0, snap1… by default)')
    .action(async (pool: string, name: string, snapshot?: string) => {
      const s = await (await volumes(pool)).snapshot(name, snapshot);
      process.stdout.write(`Snapshot ${s.name} of ${name} created\n`);
    });
  volume
    .command('restore <pool> <name> <snapshot>')
    .description('Put a snapshot\'s data in place of the volume\'s (no running instance may use it)')
    .action(async (pool: string, name: string, snapshot: string) => void (await (await volumes(pool)).restore(name, snapshot)));
  volume
    .command('export <pool> <name> <file>')
    .description("Write a volume (with its snapshots unless --volume-only) to a tarball, as lxc storage volume export")
    .option('--volume-only', 'without its snapshots')
    .action(async (pool: string, name: string, file: string, o: { volumeOnly?: boolean }) => {
      const v = await volumes(pool);
      await longCommand(`export ${name}`, (long) => v.export(name, file, { volumeOnly: o.volumeOnly === true, ...long }));
    });
  volume
    .command('import <pool> <file> [name]')
    .description('A volume from a tarball of storage volume export (lxq\'s or LXD\'s), named as exported unless NAME is given')
    .action(async (pool: string, file: string, name: string | undefined, _o: unknown) => {
      const v = await volumes(pool);
      const made = await longCommand(`import ${file}`, (long) => v.import(file, name, long));
      process.stdout.write(`Storage volume ${made.name} imported\n`);
    });
  volume
    .command('attach <pool> <name> <instance> [args...]')
    .description('Attach a volume to an instance: lxq storage volume attach default data web1 [DEVICE] PATH (LXD\'s form)')
    .action(async (pool: string, name: string, instance: string, args: string[]) => {
      if (args.length < 1 || args.length > 2) throw new InvalidArgument('storage volume attach: give the PATH inside the instance, optionally after a DEVICE name');
      const [device, at] = args.length === 2 ? args : [name, args[0]];
      await (await (await ctx.localHost()).get(instance)).addDevice(device, { type: 'disk', pool, source: name, path: at });
    });
  volume
    .command('detach <pool> <name> <instance> [device]')
    .description('Detach a volume from an instance (the device that names it, or DEVICE)')
    .action(async (pool: string, name: string, instance: string, device?: string) => {
      const i = await (await ctx.localHost()).get(instance);
      const found = device ?? Object.entries(i.devices).find(([, d]) => d.type === 'disk' && d.pool === pool && d.source === name)?.[0];
      if (found === undefined) throw new NotFound(`instance "${instance}" has no device for volume "${name}" of pool "${pool}"`);
      await i.removeDevice(found);
    });
}
