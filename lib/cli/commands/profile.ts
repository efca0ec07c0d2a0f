/** `profile list|show|get|create|edit|set|unset|device add|remove|rename|delete|add|remove|assign`: the host's profiles (LXD's `lxc profile`), on either host. */
import { type Command, Option } from 'commander';

import { AlreadyExists, NotFound, OperationFailed } from '../../core/errors';
import { keyValues, parseKeyValue, unsetKeys } from '../args';
import type { CliContext } from '../context';
import { checkFormat, FORMATS, formatRows } from '../format';

/* eslint-disable @typescript-eslint/no-require-imports -- loaded in the actions that need them (see commands/index.ts) */
const yaml = (): typeof import('yaml') => require('yaml');
/* eslint-enable @typescript-eslint/no-require-imports */

export function register(cli: Command, ctx: CliContext): void {
  const profiles = async () => (await ctx.host()).profiles;
  const profile = cli.command('profile').description('Profiles: options and devices instances take before their own');
  profile
    .command('list')
    .description('Every profile and how many instances use it')
    .addOption(new Option('--format <format>', 'output format').choices(FORMATS).default('table'))
    .action(async (o: { format: string }) => {
      const rows = (await (await profiles()).list()).map((p) => ({ name: p.name, description: p.description, 'used by': p.usedBy.length }));
      process.stdout.write(formatRows(rows, ['name', 'description', 'used by'], checkFormat(o.format)));
    });
  profile
    .command('show <name>')
    .description('A profile as YAML (as `lxc profile show`)')
    .action(async (name: string) => {
      const p = await (await profiles()).get(name);
      process.stdout.write(yaml().stringify({ name: p.name, description: p.description, config: p.config, devices: p.devices, used_by: p.usedBy }));
    });
  profile
    .command('get <name> <key>')
    .description('One option of a profile (empty when unset)')
    .action(async (name: string, key: string) => void process.stdout.write(`${(await (await profiles()).get(name)).config[key] ?? ''}\n`));
  profile
    .command('create <name>')
    .description('Create a profile, empty or from YAML on stdin (config, devices, description)')
    .action(async (name: string) => {
      const input = process.stdin.isTTY ? {} : editable(await readStdin());
      await (await profiles()).create(name, input);
      process.stdout.write(`Profile ${name} created\n`);
    });
  profile
    .command('edit <name>')
    .description('Replace a profile by YAML from stdin, or edit it with $EDITOR on a terminal')
    .action(async (name: string) => {
      const all = await profiles();
      const p = await all.get(name);
      const text = process.stdin.isTTY ? await editInEditor(yaml().stringify({ description: p.description, config: p.config, devices: p.devices })) : await readStdin();
      await all.put(name, editable(text));
    });
  profile
    .command('set <name> <pairs...>')
    .description('Set options of a profile: lxq profile set web limits.memory=512MiB')
    .action(async (name: string, pairs: string[]) => void (await (await profiles()).update(name, { config: keyValues(pairs) })));
  profile
    .command('unset <name> <keys...>')
    .description('Remove options of a profile')
    .action(async (name: string, keys: string[]) => void (await (await profiles()).update(name, { config: unsetKeys(keys) })));
  const device = profile.command('device').description('Devices of a profile');
  device
    .command('add <name> <device> <type> [pairs...]')
    .description('Add a device: lxq profile device add web data disk source=/srv path=/srv')
    .action(async (name: string, dev: string, type: string, pairs: string[]) => {
      const all = await profiles();
      if (dev in (await all.get(name)).devices) throw new AlreadyExists(`profile "${name}" already has a device named "${dev}"`);
      await all.update(name, { devices: { [dev]: { type, ...Object.fromEntries(pairs.map(parseKeyValue)) } as never } });
    });
  device
    .command('remove <name> <device>')
    .description('Remove a device from a profile')
    .action(async (name: string, dev: string) => void (await (await profiles()).update(name, { devices: { [dev]: null } })));
  profile
    .command('rename <name> <new-name>')
    .description('Rename a profile (its instances follow)')
    .action(async (name: string, newName: string) => void (await (await profiles()).rename(name, newName)));
  profile
    .command('delete <name>')
    .description('Delete a profile no instance uses')
    .action(async (name: string) => (await profiles()).delete(name));
  registerAssign(profile, ctx);
}

/** `profile add|remove|assign INSTANCE …`: an instance's list of profiles (LXD's), changed as instance.setProfiles does. */
function registerAssign(profile: Command, ctx: CliContext): void {
  const change = async (instance: string, next: (current: readonly string[]) => string[]) => {
    const i = await (await ctx.host()).get(instance);
    await i.setProfiles(next(i.profiles));
  };
  profile
    .command('add <instance> <profile>')
    .description("Add a profile to an instance's list (last: it wins over the others)")
    .action((instance: string, name: string) =>
      change(instance, (current) => {
        if (current.includes(name)) throw new AlreadyExists(`profile "${name}" is already applied to ${instance}`);
        return [...current, name];
      }),
    );
  profile
    .command('remove <instance> <profile>')
    .description("Remove a profile from an instance's list")
    .action((instance: string, name: string) =>
      change(instance, (current) => {
        if (!current.includes(name)) throw new NotFound(`profile "${name}" is not applied to ${instance}`);
        return current.filter((n) => n !== name);
      }),
    );
  profile
    .command('assign <instance> <profiles>')
    .description('Set the whole list of an instance\'s profiles, comma-separated ("" for none)')
    .action((instance: string, list: string) => change(instance, () => (list === '' ? [] : list.split(','))));
}

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

/** The YAML of `show` (name and used_by are ignored, as LXD's edit does) as a profile's input. */
function editable(text: string): { config?: never; devices?: never; description?: string } {
  const doc = (yaml().parse(text) ?? {}) as Record<string, unknown>;
  const { name: _n, used_by: _u, ...rest } = doc;
  return rest as { description?: string };
}

/** `text` in a temporary file given to $VISUAL/$EDITOR; what it holds once the editor exits 0. */
async function editInEditor(text: string): Promise<string> {
  /* eslint-disable @typescript-eslint/no-require-imports -- see above */
  const { promises: fs } = require('node:fs') as typeof import('node:fs');
  const { spawnSync } = require('node:child_process') as typeof import('node:child_process');
  const { tmpdir } = require('node:os') as typeof import('node:os');
  const { join } = require('node:path') as typeof import('node:path');
  /* eslint-enable @typescript-eslint/no-require-imports */
  const dir = await fs.mkdtemp(join(tmpdir(), 'lxq-profile-'));
  const file = join(dir, 'profile.yaml');
  try {
    await fs.writeFile(file, text);
    const editor = process.env.VISUAL ?? process.env.EDITOR ?? 'vi';
    const r = spawnSync('sh', ['-c', `${editor} "$1"`, 'editor', file], { stdio: 'inherit' });
    if (r.status !== 0) throw new OperationFailed(`the editor (${editor}) exited with ${r.status ?? r.signal}; the profile is unchanged`);
    return await fs.readFile(file, 'utf8');
  } finally {
    await fs.rm(dir, { recursive: true, force: true });
  }
}
