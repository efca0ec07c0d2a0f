/** `file push|pull|edit`: files inside an instance of this machine's host, named NAME/PATH. */
import type { Command } from 'commander';
import { spawnSync } from 'node:child_process';
import { promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import { InvalidArgument, LxqError } from '../../core/errors';
import type { Instance } from '../../instance/instance';
import { instancePath } from '../args';
import type { CliContext } from '../context';

export function register(cli: Command, ctx: CliContext): void {
  const file = cli.command('file').description('Files inside an instance (NAME/PATH)');
  file
    .command('push <source> <target>')
    .description('Copy a host file into an instance: lxq file push ./motd web1/etc/motd')
    .option('--mode <octal>', 'permission bits')
    .action(async (source: string, spec: string, o: { mode?: string }) => {
      const [name, p] = instancePath(spec);
      if (o.mode !== undefined && !/^[0-7]{3,4}$/.test(o.mode)) throw new InvalidArgument(`--mode must be octal, e.g. 0644, got "${o.mode}"`);
      await (await (await ctx.localHost()).get(name)).files.push(source, p, o.mode ? { mode: parseInt(o.mode, 8) } : {});
    });
  file
    .command('pull <source> <target>')
    .description('Copy a file out of an instance: lxq file pull web1/etc/motd ./motd ("-" for stdout)')
    .action(async (spec: string, dest: string) => {
      const [name, p] = instancePath(spec);
      const i = await (await ctx.localHost()).get(name);
      if (dest === '-') process.stdout.write(await i.files.read(p));
      else await i.files.pull(p, dest);
    });
  file
    .command('edit <target>')
    .description('Edit a file of an instance with $EDITOR')
    .action(async (spec: string) => {
      const [name, p] = instancePath(spec);
      await edit(await (await ctx.localHost()).get(name), p);
    });
}

/** A copy of the file (empty if there is none) in a temporary directory, given to the editor, written back if it exits 0. */
async function edit(i: Instance, p: string): Promise<void> {
  const tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'lxq-edit-'));
  const local = path.join(tmp, path.basename(p));
  try {
    await fs.writeFile(local, await i.files.read(p).catch((e) => (e.code === 'NOT_FOUND' ? Buffer.alloc(0) : Promise.reject(e))));
    const editor = process.env.VISUAL ?? process.env.EDITOR ?? 'vi';
    const r = spawnSync('sh', ['-c', `${editor} "$1"`, 'editor', local], { stdio: 'inherit' });
    if (r.status !== 0) throw new LxqError('OPERATION_FAILED', `the editor (${editor}) exited with ${r.status ?? r.signal}; ${p} is unchanged`);
    await i.files.write(p, await fs.readFile(local));
  } finally {
    await fs.rm(tmp, { recursive: true, force: true });
  }
}
