#!/usr/bin/env node
/**
 * `lxq`, the command line: LXD's `lxc` verbs over a host directory (`--host`, default
 * /var/lib/lxq). Errors print one line on stderr and exit non-zero.
 */
import { Command, CommanderError, Option } from 'commander';
import { SingleBar } from 'cli-progress';
import { spawnSync } from 'node:child_process';
import { promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import type { Host } from '../host/host';
import { InvalidArgument, LxqError } from '../core/errors';

/** As in lib/host/host.ts, which is loaded only when a command needs the host (`--version` and `--help` do not). */
const DEFAULT_HOST_PATH = '/var/lib/lxq';
import type { Instance, InstanceState } from '../instance/instance';
import type { InstanceConfigPatch } from '../config/options';
import type { DevicesInput } from '../devices/declarations';
import { checkFormat, formatRows } from './format';
import type { RemoteHost } from '../drivers/remote/host';
import { connectRemote, refuseUnlessRemote, remoteInfo, remoteList, type RemoteGlobals } from './remote';
import type { WaitFor, WaitOptions } from '../instance/wait';

/** The package's version, from its package.json (found from lib/cli or dist/lib/cli). */
function version(): string {
  for (let dir = __dirname; dir !== path.dirname(dir); dir = path.dirname(dir)) {
    try {
      const pkg = require(path.join(dir, 'package.json')); // eslint-disable-line @typescript-eslint/no-require-imports -- a JSON file found at run time
      if (pkg.name === 'lxq') return pkg.version;
    } catch {
      /* not here */
    }
  }
  return 'unknown';
}

/** Exit status when lxq itself failed (a command run by `exec` passes its own through). */
const FAILED = 1;

interface Globals extends RemoteGlobals {
  host?: string;
  images?: string;
}

function parseKeyValue(kv: string): [string, string] {
  const i = kv.indexOf('=');
  if (i <= 0) throw new InvalidArgument(`bad key=value "${kv}": expected e.g. limits.memory=256MiB`);
  return [kv.slice(0, i), kv.slice(i + 1)];
}

const collect = (v: string, prev: string[]) => [...prev, v];

/** `--wait FOR[=ARG]`: `systemd`, `port=5432`, `log=ready`, `exec=pg_isready -q` (split on spaces). */
function parseWait(text: string, timeout: number | undefined): WaitOptions {
  const i = text.indexOf('=');
  const condition = (i < 0 ? text : text.slice(0, i)) as WaitFor;
  const arg = i < 0 ? undefined : text.slice(i + 1);
  const argument = arg === undefined ? {} : condition === 'port' ? { port: Number(arg) } : condition === 'log' ? { pattern: arg } : condition === 'exec' ? { command: arg.split(' ').filter(Boolean) } : { [condition]: arg };
  return { for: condition, ...argument, ...(timeout !== undefined ? { timeout } : {}) } as WaitOptions;
}

/** `-d NAME,type=disk,source=/x,path=/mnt`: a device's name, then its keys (LXD's `lxc config device add` in one word). */
function parseDevice(spec: string): [string, Record<string, string>] {
  const [name, ...pairs] = spec.split(',');
  if (!name || name.includes('=') || pairs.length === 0) {
    throw new InvalidArgument(`bad device "${spec}": expected NAME,type=TYPE,key=value..., e.g. data,type=disk,source=/srv,path=/mnt`);
  }
  const keys = Object.fromEntries(pairs.map(parseKeyValue));
  if (!keys.type) throw new InvalidArgument(`bad device "${spec}": it needs a type=..., e.g. type=disk`);
  return [name, keys];
}

const FORMATS = ['table', 'json', 'yaml', 'csv'];

/** What `start`, `stop`… call, on a local instance or an LXD server's. */
type RemoteInstanceLike = Pick<Instance, 'start' | 'stop' | 'restart' | 'freeze' | 'unfreeze' | 'delete'>;

export function program(): Command {
  const cli = new Command('lxq')
    .description('System containers and VMs on this host (lxq)')
    .version(version())
    .option('--host <path>', 'state directory', process.env.LXQ_HOST ?? DEFAULT_HOST_PATH)
    .option('--images <path>', 'image store directory (default <host>/images)', process.env.LXQ_IMAGES)
    .option('--remote <socket|url>', "an LXD server instead of this host: its unix socket (/var/lib/lxd/unix.socket) or https://host:8443", process.env.LXQ_REMOTE)
    .option('--remote-cert <file>', 'with an https remote: our client certificate (PEM)')
    .option('--remote-key <file>', 'with an https remote: our private key (PEM)')
    .option('--remote-server-cert <file>', "with an https remote: the server's certificate (PEM), the only one accepted")
    .option('--project <name>', 'with --remote: the LXD project')
    .showSuggestionAfterError(true)
    .showHelpAfterError(false)
    .exitOverride()
    .configureOutput({ outputError: (s, write) => write(s.trim().split('\n').join(' ').replace(/^error: /, 'lxq: ') + '\n') });

  cli.hook('preAction', (_root, action) => {
    const g = cli.opts<Globals>();
    if (!g.remote && (g.project || g.remoteCert || g.remoteKey || g.remoteServerCert)) throw new InvalidArgument('--project, --remote-cert, --remote-key and --remote-server-cert go with --remote');
    if (g.remote) refuseUnlessRemote(action.parent === cli ? action.name() : `${action.parent?.name()} ${action.name()}`);
  });
  let remoteOpened: RemoteHost | undefined;
  /** The LXD server of `--remote`, or undefined for this host. */
  const remote = async (): Promise<RemoteHost | undefined> => {
    const g = cli.opts<Globals>();
    if (!g.remote) return undefined;
    remoteOpened ??= await connectRemote(g);
    return remoteOpened;
  };
  let opened: Host | undefined;
  const host = async (): Promise<Host> => {
    const g = cli.opts<Globals>();
    // eslint-disable-next-line @typescript-eslint/no-require-imports -- loaded on first use: a remote or read-only command never loads the liblxc addon
    const { Host } = require('../host/host') as typeof import('../host/host');
    opened ??= await Host.open({ path: g.host, ...(g.images ? { images: g.images } : {}) });
    return opened;
  };
  const each = (verb: string, run: (i: Instance | RemoteInstanceLike, o: Record<string, unknown>) => Promise<void>) =>
    cli
      .command(`${verb} <names...>`)
      .description(`${verb[0].toUpperCase()}${verb.slice(1)} instances`)
      .option('-f, --force', 'force it (stop: kill at once; delete: a running instance too)')
      .option('--timeout <ms>', 'how long a graceful stop may take (ms)', (v) => {
        if (!/^\d+$/.test(v)) throw new InvalidArgument(`--timeout must be a number of milliseconds, got "${v}"`);
        return Number(v);
      })
      .action(async (names: string[], o: Record<string, unknown>) => {
        const r = await remote();
        const h: { get(name: string): Promise<Instance | RemoteInstanceLike> } = r ?? (await host());
        const instances = await Promise.all(names.map((n) => h.get(n))); // all exist, or nothing is done
        for (const i of instances) await run(i, o);
      });

  cli
    .command('list')
    .alias('ls')
    .description('List instances')
    .addOption(new Option('--format <format>', 'output format').choices(['table', 'json', 'yaml', 'csv']).default('table'))
    .action(async (o: { format: string }) => {
      const r = await remote();
      if (r) return void process.stdout.write(await remoteList(r, o.format));
      const rows = await Promise.all(
        (await (await host()).list()).map(async (i) => ({ name: i.name, type: i.type, status: await i.status(), image: i.image, created: i.createdAt.toISOString() })),
      );
      process.stdout.write(formatRows(rows, ['name', 'type', 'status', 'image', 'created'], checkFormat(o.format)));
    });

  cli
    .command('info <name>')
    .description('Show an instance: record and state')
    .action(async (name: string) => {
      const r = await remote();
      if (r) return void process.stdout.write(await remoteInfo(await r.get(name)));
      const i = await (await host()).get(name);
      const s: InstanceState = await i.state();
      const lines = [
        `name: ${i.name}`,
        `type: ${i.type}`,
        `image: ${i.image}`,
        `created: ${i.createdAt.toISOString()}`,
        `status: ${s.status}`,
        `pid: ${s.pid ?? '-'}`,
        `processes: ${s.processes}`,
        `cpu: ${(s.cpu.usageNs / 1e9).toFixed(2)} s`,
        `memory: ${s.memory.usageBytes === null ? 'unknown' : `${(s.memory.usageBytes / 2 ** 20).toFixed(1)} MiB`}${s.memory.limitBytes ? ` of ${(s.memory.limitBytes / 2 ** 20).toFixed(0)} MiB` : ''}`,
        `addresses: ${s.network.addresses.join(' ') || '-'}`,
        ...Object.entries(i.config).map(([k, v]) => `config ${k}: ${v}`),
        ...s.devices.map((d) => `device ${d.name}: ${d.type}${d.source ? ` ${d.source}` : ''}${d.path ? ` -> ${d.path}` : ''}`),
      ];
      process.stdout.write(lines.join('\n') + '\n');
    });

  cli
    .command('launch <image> <name>')
    .description('Create and start an instance')
    .option('--vm', 'a virtual machine (default: a container)')
    .option('-c, --config <key=value>', 'an option (repeatable)', collect, [])
    .option('-d, --device <name,type=...,key=value>', 'a device, e.g. data,type=disk,source=/srv,path=/mnt (repeatable)', collect, [])
    .option('--wait <for>', 'resolve once ready: running, agent, systemd, address, ipv4, ipv6, port=N, log=REGEX, exec=CMD')
    .option('--wait-timeout <ms>', 'how long --wait may take (default 60000)', Number)
    .action(async (image: string, name: string, o: { vm?: boolean; config: string[]; device: string[]; wait?: string; waitTimeout?: number }) => {
      const config = Object.fromEntries(o.config.map(parseKeyValue));
      const devices = Object.fromEntries(o.device.map(parseDevice)) as unknown as DevicesInput;
      const wait = o.wait === undefined ? undefined : parseWait(o.wait, o.waitTimeout);
      const r = await remote();
      await (r ?? (await host())).launch(image, name, { type: o.vm ? 'vm' : 'container', config, devices, ...(wait ? { wait } : {}) });
      process.stdout.write(`${name} started\n`);
    });

  cli
    .command('wait <name> [command...]')
    .description('Wait until an instance is ready: lxq wait NAME --for port --port 5432; --for exec -- CMD [ARGS...]')
    .requiredOption('--for <condition>', 'running, agent, systemd, address, ipv4, ipv6, port, log, exec')
    .option('--port <n>', 'for port: the TCP port listening inside', Number)
    .option('--pattern <regex>', 'for log: what the console log must match')
    .option('--timeout <ms>', 'default 60000', Number)
    .action(async (name: string, command: string[], o: { for: string; port?: number; pattern?: string; timeout?: number }) => {
      const spec = { for: o.for as WaitFor, ...(o.port !== undefined ? { port: o.port } : {}), ...(o.pattern !== undefined ? { pattern: o.pattern } : {}), ...(command.length ? { command } : {}), ...(o.timeout !== undefined ? { timeout: o.timeout } : {}) };
      const r = await remote();
      await (await (r ?? (await host())).get(name)).wait(spec);
    });

  each('start', (i) => i.start());
  each('stop', (i, o) => i.stop({ force: o.force === true, ...(o.timeout !== undefined ? { timeout: o.timeout as number } : {}) }));
  each('restart', (i, o) => i.restart({ force: o.force === true, ...(o.timeout !== undefined ? { timeout: o.timeout as number } : {}) }));
  each('freeze', (i) => i.freeze());
  each('unfreeze', (i) => i.unfreeze());
  each('delete', (i, o) => i.delete({ force: o.force === true }));

  cli
    .command('copy <source> <target>')
    .description('Copy an instance, with its snapshots unless --instance-only, or one snapshot of it (--snapshot)')
    .option('--snapshot <name>', 'copy this snapshot of the source instead of its current state')
    .option('--instance-only', "leave the source's snapshots behind")
    .option('-c, --config <key=value>', 'an option set on the copy (repeatable)', collect, [])
    .action(async (source: string, target: string, o: { snapshot?: string; instanceOnly?: boolean; config: string[] }) => {
      const config = Object.fromEntries(o.config.map(parseKeyValue));
      await (await host()).copy(source, target, { ...(o.snapshot !== undefined ? { snapshot: o.snapshot } : {}), ...(o.instanceOnly ? { instanceOnly: true } : {}), config });
    });

  cli
    .command('rename <name> <new-name>')
    .alias('move')
    .description('Rename a stopped instance')
    .action(async (name: string, newName: string) => (await (await host()).get(name)).rename(newName));

  cli
    .command('export <name> <file>')
    .description('Write an instance to a tarball (with its snapshots unless --instance-only), for lxq import')
    .option('--instance-only', 'without its snapshots')
    .action(async (name: string, file: string, o: { instanceOnly?: boolean }) => {
      await (await (await host()).get(name)).export(file, { instanceOnly: o.instanceOnly === true });
    });

  cli
    .command('import <file> [name]')
    .description('An instance from a tarball of lxq export (named as exported unless NAME is given); prints its name')
    .option('--allow-host-access', "accept an archive whose instance reaches into this host (raw.lxc/raw.qemu, privileged, host paths, device nodes, proxies, host bridges): only for archives you trust")
    .action(async (file: string, name: string | undefined, o: { allowHostAccess?: boolean }) => {
      const i = await (await host()).import(file, { ...(name !== undefined ? { name } : {}), ...(o.allowHostAccess ? { trust: 'host-access' as const } : {}) });
      process.stdout.write(`${i.name}\n`);
    });

  cli
    .command('exec <name> [command...]')
    .description('Run a command in an instance: lxq exec NAME -- CMD [ARGS...]')
    .option('-t, --tty', 'a pseudo-terminal (default when stdin is a terminal)')
    .option('-T, --no-tty', 'no pseudo-terminal')
    .option('--env <key=value>', 'an environment variable (repeatable)', collect, [])
    .option('--cwd <dir>', 'working directory inside')
    .action(async (name: string, command: string[], o: { tty?: boolean; env: string[]; cwd?: string }, cmd: Command) => {
      const raw = process.argv.slice(2);
      if (!raw.includes('--') || command.length === 0) throw new InvalidArgument('exec needs the command after "--": lxq exec NAME -- CMD [ARGS...]');
      void cmd;
      const env = Object.fromEntries(o.env.map(parseKeyValue));
      const r = await remote();
      const tty = o.tty ?? Boolean(process.stdin.isTTY);
      process.exitCode = await interactive(await (r ?? (await host())).get(name), command, tty, { env, ...(o.cwd ? { cwd: o.cwd } : {}) });
    });

  cli
    .command('shell <name>')
    .description('A login shell in an instance (exec NAME -- sh -l, on a terminal)')
    .action(async (name: string) => {
      process.exitCode = await interactive(await (await host()).get(name), ['sh', '-l'], Boolean(process.stdin.isTTY), {});
    });

  const file = cli.command('file').description('Files inside an instance (NAME/PATH)');
  const target = (spec: string): [string, string] => {
    const i = spec.indexOf('/');
    if (i <= 0) throw new InvalidArgument(`bad instance path "${spec}": expected NAME/PATH, e.g. web1/etc/motd`);
    return [spec.slice(0, i), spec.slice(i)];
  };
  file
    .command('push <source> <target>')
    .description('Copy a host file into an instance: lxq file push ./motd web1/etc/motd')
    .option('--mode <octal>', 'permission bits')
    .action(async (source: string, spec: string, o: { mode?: string }) => {
      const [name, p] = target(spec);
      if (o.mode !== undefined && !/^[0-7]{3,4}$/.test(o.mode)) throw new InvalidArgument(`--mode must be octal, e.g. 0644, got "${o.mode}"`);
      await (await (await host()).get(name)).files.push(source, p, o.mode ? { mode: parseInt(o.mode, 8) } : {});
    });
  file
    .command('pull <source> <target>')
    .description('Copy a file out of an instance: lxq file pull web1/etc/motd ./motd ("-" for stdout)')
    .action(async (spec: string, dest: string) => {
      const [name, p] = target(spec);
      const i = await (await host()).get(name);
      if (dest === '-') process.stdout.write(await i.files.read(p));
      else await i.files.pull(p, dest);
    });
  file
    .command('edit <target>')
    .description('Edit a file of an instance with $EDITOR')
    .action(async (spec: string) => {
      const [name, p] = target(spec);
      const i = await (await host()).get(name);
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
    });

  const config = cli.command('config').description('Options of an instance');
  config
    .command('show <name>')
    .description('All options, key=value')
    .action(async (name: string) => {
      const i = await (await host()).get(name);
      process.stdout.write(Object.entries(i.config).sort(([a], [b]) => (a < b ? -1 : 1)).map(([k, v]) => `${k}=${v}\n`).join(''));
    });
  config
    .command('get <name> <key>')
    .description('One option (empty when unset)')
    .action(async (name: string, key: string) => {
      const i = await (await host()).get(name);
      const v = (i.config as Record<string, string>)[key];
      process.stdout.write(`${v ?? ''}\n`);
    });
  config
    .command('set <name> <pairs...>')
    .description('Set options: lxq config set web1 limits.memory=512MiB user.note=x')
    .action(async (name: string, pairs: string[]) => {
      const patch = Object.fromEntries(pairs.map(parseKeyValue)) as InstanceConfigPatch;
      await (await (await host()).get(name)).update(patch);
    });
  config
    .command('unset <name> <keys...>')
    .description('Remove options')
    .action(async (name: string, keys: string[]) => {
      await (await (await host()).get(name)).update(Object.fromEntries(keys.map((k) => [k, null])) as InstanceConfigPatch);
    });

  const image = cli.command('image').description('The image store');
  image
    .command('list')
    .description('Built images')
    .addOption(new Option('--format <format>', 'output format').choices(['table', 'json', 'yaml', 'csv']).default('table'))
    .action(async (o: { format: string }) => {
      const rows = (await (await host()).images.list()).map((i) => ({ name: i.name, type: i.type, size: `${(i.size / 2 ** 20).toFixed(1)}MiB`, created: i.createdAt, current: i.current }));
      process.stdout.write(formatRows(rows, ['name', 'type', 'size', 'created', 'current'], checkFormat(o.format)));
    });
  image
    .command('build <name>')
    .description("Build one of lxq's images (busybox, debian/12, vm/default…), with a progress bar")
    .option('--vm', 'the VM variant')
    .action(async (name: string, o: { vm?: boolean }) => {
      const bar = process.stderr.isTTY ? new SingleBar({ format: `${name} [{bar}] {percentage}% {phase}`, stream: process.stderr }) : undefined;
      bar?.start(100, 0, { phase: '' });
      try {
        const img = await (await host()).images.ensure(name, {
          ...(o.vm ? { type: 'vm' as const } : {}),
          onProgress: (e) => (bar ? bar.update(e.percent, { phase: e.phase }) : process.stderr.write(`${e.percent}% ${e.phase}\n`)),
        });
        bar?.update(100, { phase: 'done' });
        bar?.stop();
        process.stdout.write(`${img.name} (${img.type}): ${img.dir}\n`);
      } catch (e) {
        bar?.stop();
        throw e;
      }
    });
  image
    .command('delete <name>')
    .description('Delete an image no instance uses')
    .action(async (name: string) => (await host()).images.delete(name));
  image
    .command('import <file>')
    .description("Import an image in LXD's unified tarball format: lxq image import ./alpine.tar.gz --alias alpine")
    .requiredOption('--alias <name>', 'the name to keep it under')
    .action(async (file: string, o: { alias: string }) => {
      const img = await (await host()).images.import(file, { alias: o.alias });
      process.stdout.write(`${img.name} (${img.type}): ${img.dir}\n`);
    });
  image
    .command('export <name> <file>')
    .description("Write an image to a file in LXD's unified tarball format")
    .option('--vm', 'the VM variant')
    .action(async (name: string, file: string, o: { vm?: boolean }) => {
      await (await host()).images.export(name, file, o.vm ? { type: 'vm' } : {});
    });

  const snapshot = cli.command('snapshot').description('Snapshots of an instance');
  snapshot
    .command('create <name> [snapshot]')
    .description('Snapshot an instance (default names snap0, snap1…)')
    .option('--stateful', 'keep the running state too')
    .option('--description <text>', 'a note kept with it')
    .action(async (name: string, snap: string | undefined, o: { stateful?: boolean; description?: string }) => {
      const s = await (await (await host()).get(name)).snapshots.create(snap, { ...(o.stateful ? { stateful: true } : {}), ...(o.description ? { description: o.description } : {}) });
      process.stdout.write(`${s.name}\n`);
    });
  snapshot
    .command('list <name>')
    .description("An instance's snapshots")
    .addOption(new Option('--format <format>', 'output format').choices(FORMATS).default('table'))
    .action(async (name: string, o: { format: string }) => {
      const rows = (await (await (await host()).get(name)).snapshots.list()).map((s) => ({
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
      await (await (await host()).get(name)).snapshots.restore(snap, o.stateful ? { stateful: true } : {});
    });
  snapshot
    .command('rename <name> <snapshot> <new-name>')
    .description('Rename a snapshot')
    .action(async (name: string, snap: string, newName: string) => (await (await host()).get(name)).snapshots.rename(snap, newName));
  snapshot
    .command('delete <name> <snapshot>')
    .description('Delete a snapshot')
    .action(async (name: string, snap: string) => (await (await host()).get(name)).snapshots.delete(snap));

  const network = cli.command('network').description('Managed bridge networks');
  network
    .command('create <name> [pairs...]')
    .description('Create a bridge network: lxq network create lxqbr1 ipv4.address=10.9.0.1/24')
    .action(async (name: string, pairs: string[]) => {
      const n = await (await host()).networks.create(name, Object.fromEntries(pairs.map(parseKeyValue)));
      process.stdout.write(`${n.name}: ${n.cidr}\n`);
    });
  network
    .command('list')
    .description('Managed networks')
    .addOption(new Option('--format <format>', 'output format').choices(FORMATS).default('table'))
    .action(async (o: { format: string }) => {
      const rows = (await (await host()).networks.list()).map((n) => ({ name: n.name, address: n.cidr, domain: n.domain, mtu: n.mtu, created: n.createdAt.toISOString() }));
      process.stdout.write(formatRows(rows, ['name', 'address', 'domain', 'mtu', 'created'], checkFormat(o.format)));
    });
  network
    .command('show <name>')
    .description('A network: its keys and leases')
    .action(async (name: string) => {
      const n = await (await host()).networks.get(name);
      const lines = [`name: ${n.name}`, `address: ${n.cidr}`, `created: ${n.createdAt.toISOString()}`, ...Object.entries(n.config).map(([k, v]) => `config ${k}: ${v}`)];
      for (const l of await n.leases()) lines.push(`lease: ${l.address} ${l.hwaddr} ${l.hostname ?? '-'} until ${l.expiresAt.toISOString()}`);
      process.stdout.write(lines.join('\n') + '\n');
    });
  network
    .command('set <name> <pairs...>')
    .description('Change keys of a network: lxq network set lxqbr1 dns.domain=lab bridge.mtu=1400')
    .action(async (name: string, pairs: string[]) => void (await (await host()).networks.update(name, Object.fromEntries(pairs.map(parseKeyValue)))));
  network
    .command('unset <name> <keys...>')
    .description('Return keys of a network to their defaults')
    .action(async (name: string, keys: string[]) => void (await (await host()).networks.update(name, Object.fromEntries(keys.map((k) => [k, null])))));
  network
    .command('delete <name>')
    .description('Delete a network no instance uses')
    .action(async (name: string) => (await host()).networks.delete(name));

  cli
    .command('console <name>')
    .description("Attach to an instance's console (detach with Ctrl-a q)")
    .option('--show-log', 'print the console log and exit')
    .action(async (name: string, o: { showLog?: boolean }) => {
      const i = await (await host()).get(name);
      if (o.showLog) return void process.stdout.write(await i.console.log());
      await attachConsole(i);
    });

  cli
    .command('monitor')
    .description('Follow lifecycle events on this host (Ctrl-C to stop)')
    .addOption(new Option('--format <format>', 'output format').choices(['text', 'json']).default('text'))
    .action(async (o: { format: string }) => {
      const ac = new AbortController();
      process.once('SIGINT', () => ac.abort());
      process.once('SIGTERM', () => ac.abort());
      const stream = (await host()).events({ signal: ac.signal });
      await stream.ready;
      if (process.env.LXQ_MONITOR_READY) process.stderr.write('ready\n');
      for await (const e of stream) {
        process.stdout.write(o.format === 'json' ? JSON.stringify(e) + '\n' : `${e.at} ${e.action} ${e.name} (${e.type}, ${e.requestor})${e.dropped ? ` [${e.dropped} missed]` : ''}\n`);
      }
    });

  return cli;
}

/** Runs a command with the terminal's stdin/stdout, forwarding signals and window size; resolves the exit code. */
async function interactive(i: Instance, argv: string[], tty: boolean, options: { env?: Record<string, string>; cwd?: string }): Promise<number> {
  const size = { cols: process.stdout.columns ?? 80, rows: process.stdout.rows ?? 24 };
  const p = await i.spawn(argv, { ...options, ...(tty ? { pty: size } : {}) });
  const forward = (sig: NodeJS.Signals) => () => p.kill(sig);
  const handlers = (['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGQUIT'] as const).map((s) => [s, forward(s)] as const);
  if (!tty) for (const [s, h] of handlers) process.on(s, h);
  else process.on('SIGTERM', handlers[1][1]).on('SIGHUP', handlers[2][1]);
  const onResize = () => p.resize(process.stdout.columns, process.stdout.rows);
  if (tty && process.stdin.isTTY) {
    process.stdin.setRawMode(true);
    process.stdout.on('resize', onResize);
  }
  process.stdin.pipe(p.stdin);
  p.stdout.pipe(process.stdout, { end: false });
  p.stderr.pipe(process.stderr, { end: false });
  try {
    const status = await p.exit;
    await new Promise((r) => setImmediate(r));
    return status.exitCode ?? 128 + (os.constants.signals[status.signal as NodeJS.Signals] ?? 0);
  } finally {
    process.stdin.unpipe(p.stdin);
    process.stdin.pause();
    if (tty && process.stdin.isTTY) process.stdin.setRawMode(false);
    process.stdout.off('resize', onResize);
    for (const [s, h] of handlers) process.off(s, h);
  }
}

/** Ctrl-a, the console's escape key (as `lxc console`): Ctrl-a q detaches, Ctrl-a Ctrl-a sends one Ctrl-a. */
const ESCAPE = 0x01;

/** The terminal as the console: raw keys in (Ctrl-a q leaves), console output out, window size followed. */
async function attachConsole(i: Instance): Promise<void> {
  const c = await i.console.attach();
  const tty = Boolean(process.stdin.isTTY);
  process.stderr.write(`To detach from the console, press: <ctrl>+a q\r\n`);
  const resize = () => {
    if (process.stdout.columns) c.resize(process.stdout.columns, process.stdout.rows).catch(() => undefined); // a serial port has no size
  };
  resize();
  let escaped = false;
  const done = new Promise<void>((resolve) => {
    const onKeys = (keys: Buffer) => {
      const out: number[] = [];
      for (const k of keys) {
        if (escaped) {
          escaped = false;
          if (k === 0x71 /* q */) return resolve();
          out.push(ESCAPE);
          if (k !== ESCAPE) out.push(k);
        } else if (k === ESCAPE) escaped = true;
        else out.push(k);
      }
      if (out.length) c.write(Buffer.from(out));
    };
    process.stdin.on('data', onKeys);
    process.stdin.once('end', resolve);
    c.once('end', resolve);
    c.once('close', resolve);
  });
  if (tty) process.stdin.setRawMode(true);
  process.stdout.on('resize', resize);
  c.pipe(process.stdout, { end: false });
  process.stdin.resume();
  try {
    await done;
  } finally {
    process.stdout.off('resize', resize);
    if (tty) process.stdin.setRawMode(false);
    process.stdin.pause();
    c.unpipe(process.stdout);
    c.destroy();
    process.stderr.write('\r\n');
  }
}

export async function main(argv = process.argv): Promise<void> {
  const cli = program();
  try {
    await cli.parseAsync(argv);
  } catch (e) {
    if (e instanceof CommanderError) {
      process.exitCode = e.exitCode;
    } else {
      process.stderr.write(`lxq: ${e instanceof Error ? e.message.split('\n')[0] : String(e)}\n`);
      process.exitCode = FAILED;
    }
  }
  // Open handles (a VM's monitor connection) must not keep a finished command alive; what was
  // written to a pipe is flushed first.
  const code = Number(process.exitCode ?? 0);
  process.stdout.write('', () => process.stderr.write('', () => process.exit(code)));
}

if (require.main === module) void main();
