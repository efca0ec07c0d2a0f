/** `copy`, `rename`, `export` and `import`: this machine's host only. */
import type { Command } from 'commander';

import { collect, keyValues } from '../args';
import type { CliContext } from '../context';
import { longCommand } from '../progress';

export function register(cli: Command, ctx: CliContext): void {
  cli
    .command('copy <source> <target>')
    .description('Copy an instance, with its snapshots unless --instance-only, or one snapshot of it (--snapshot)')
    .option('--snapshot <name>', 'copy this snapshot of the source instead of its current state')
    .option('--instance-only', "leave the source's snapshots behind")
    .option('-c, --config <key=value>', 'an option set on the copy (repeatable)', collect, [])
    .option('-e, --ephemeral', 'the copy is ephemeral (as `lxc copy`, a copy is not, whatever its source)')
    .option('-s, --storage <pool>', "the storage pool of the copy's root disk (default: the source's)")
    .action(async (source: string, target: string, o: { snapshot?: string; instanceOnly?: boolean; config: string[]; ephemeral?: boolean; storage?: string }) => {
      const config = keyValues(o.config);
      const host = await ctx.localHost();
      const flags = { ...(o.snapshot !== undefined ? { snapshot: o.snapshot } : {}), ...(o.instanceOnly ? { instanceOnly: true } : {}), ...(o.ephemeral ? { ephemeral: true } : {}), ...(o.storage !== undefined ? { pool: o.storage } : {}) };
      await longCommand(`copy ${source}`, (long) => host.copy(source, target, { ...flags, config, ...long }));
    });

  cli
    .command('rename <name> <new-name>')
    .description('Rename a stopped instance')
    .action(async (name: string, newName: string) => (await (await ctx.localHost()).get(name)).rename(newName));

  cli
    .command('move <name> [new-name]')
    .description('Move a stopped instance to another storage pool (-s, with its snapshots), rename it, or both (as lxc move)')
    .option('-s, --storage <pool>', "the storage pool its root disk goes to")
    .action(async (name: string, newName: string | undefined, o: { storage?: string }) => {
      const instance = await (await ctx.localHost()).get(name);
      await longCommand(`move ${name}`, (long) => instance.move({ ...(o.storage !== undefined ? { pool: o.storage } : {}), ...(newName !== undefined ? { name: newName } : {}), ...long }));
    });

  cli
    .command('export <name> <file>')
    .description('Write an instance to a tarball (with its snapshots unless --instance-only), for lxq import')
    .option('--instance-only', 'without its snapshots')
    .action(async (name: string, file: string, o: { instanceOnly?: boolean }) => {
      const instance = await (await ctx.localHost()).get(name);
      await longCommand(`export ${name}`, (long) => instance.export(file, { instanceOnly: o.instanceOnly === true, ...long }));
    });

  cli
    .command('import <file> [name]')
    .description('An instance from a tarball of lxq export (named as exported unless NAME is given); prints its name')
    .option('--allow-host-access', 'accept an archive whose instance reaches into this host (raw.lxc/raw.qemu, privileged, host paths, device nodes, proxies, host bridges): only for archives you trust')
    .action(async (file: string, name: string | undefined, o: { allowHostAccess?: boolean }) => {
      const host = await ctx.localHost();
      const i = await longCommand(`import ${file}`, (long) => host.import(file, { ...(name !== undefined ? { name } : {}), ...(o.allowHostAccess ? { trust: 'host-access' as const } : {}), ...long }));
      process.stdout.write(`${i.name}\n`);
    });
}
