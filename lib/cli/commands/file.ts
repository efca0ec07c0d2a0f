/**
 * `file push|pull|edit`: files inside an instance of this machine's host, named NAME/PATH.
 * `-r` copies a directory tree as LXD's `lxc file push -r`/`pull -r` do (the directory itself
 * lands inside the target), through files.pushTree/pullTree; `-` is a tar stream on stdin or
 * stdout instead of a host directory.
 */
import type { Command } from 'commander';
import { spawn, spawnSync } from 'node:child_process';
import { promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { PassThrough, type Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';

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
    .option('-r, --recursive', 'copy a host directory (into PATH, as lxc file push -r), or a tar stream on stdin ("-") into PATH')
    .action(async (source: string, spec: string, o: { mode?: string; recursive?: boolean }) => {
      const [name, p] = instancePath(spec);
      if (o.mode !== undefined && !/^[0-7]{3,4}$/.test(o.mode)) throw new InvalidArgument(`--mode must be octal, e.g. 0644, got "${o.mode}"`);
      if (o.recursive && o.mode !== undefined) throw new InvalidArgument('--mode does not go with -r: a tree keeps its own modes');
      const i = await (await ctx.localHost()).get(name);
      if (o.recursive) await pushTree(i, source, p);
      else await i.files.push(source, p, o.mode ? { mode: parseInt(o.mode, 8) } : {});
    });
  file
    .command('pull <source> <target>')
    .description('Copy a file out of an instance: lxq file pull web1/etc/motd ./motd ("-" for stdout)')
    .option('-r, --recursive', 'copy a directory (into the host directory, as lxc file pull -r), or as a tar stream to stdout ("-")')
    .action(async (spec: string, dest: string, o: { recursive?: boolean }) => {
      const [name, p] = instancePath(spec);
      const i = await (await ctx.localHost()).get(name);
      if (o.recursive) await pullTree(i, p, dest);
      else if (dest === '-') process.stdout.write(await i.files.read(p));
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

/** Waits for a host `tar` to exit 0; its stderr's first line says why not. */
function tarDone(child: ReturnType<typeof spawn>, what: string): Promise<void> {
  let err = '';
  child.stderr!.on('data', (d) => (err += d));
  return new Promise((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code, signal) => (code === 0 ? resolve() : reject(new LxqError('OPERATION_FAILED', `tar ${what} failed (${code ?? signal}): ${err.trim().split('\n')[0]}`))));
  });
}

/** A host directory (its own name inside `p`, as LXD) or stdin's tar stream into the instance. */
async function pushTree(i: Instance, source: string, p: string): Promise<void> {
  if (source === '-') return i.files.pushTree(p, process.stdin);
  const dir = path.resolve(source);
  if (!(await fs.stat(dir).catch(() => undefined))?.isDirectory()) throw new InvalidArgument(`${source} is not a directory on this host`);
  // Hard links become copies (the tree keeps no hard links, as lxc file push -r).
  const tar = spawn('tar', ['-C', path.dirname(dir), '--format=pax', '--hard-dereference', '-cf', '-', path.basename(dir)], { stdio: ['ignore', 'pipe', 'pipe'] });
  const done = tarDone(tar, `reading ${source}`);
  // Read from the start: Node discards what an exited child wrote to a pipe nobody listened to yet.
  const archive = tar.stdout!.pipe(new PassThrough());
  try {
    await i.files.pushTree(p, archive);
  } catch (e) {
    tar.kill();
    await done.catch(() => undefined);
    throw e;
  }
  await done;
}

/** A directory of the instance into the host directory `dest` (made if missing), or its tar stream to stdout. */
async function pullTree(i: Instance, p: string, dest: string): Promise<void> {
  const onSkip = (at: string, type: string) => process.stderr.write(type === 'directory' ? `lxq: ${at}: a virtual filesystem, archived empty\n` : `lxq: ${at} left out: not a file, directory or symlink\n`);
  const stream = await i.files.pullTree(p, { onSkip });
  if (dest === '-') return pipeline(stream, process.stdout as Writable);
  const into = path.join(dest, path.posix.basename(path.posix.normalize(p)));
  await fs.mkdir(into, { recursive: true });
  // As LXD's pull: the files belong to whoever pulls them (tar then drops set-id bits too).
  const tar = spawn('tar', ['-C', into, '--no-same-owner', '-xf', '-'], { stdio: ['pipe', 'ignore', 'pipe'] });
  const done = tarDone(tar, `writing ${into}`);
  await Promise.all([pipeline(stream, tar.stdin!), done]);
}
