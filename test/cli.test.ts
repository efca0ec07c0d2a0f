/**
 * The `lxq` command line as a person uses it: plain pipes for most commands (output and exit
 * codes), and a real terminal under tmux (send-keys, capture-pane) for `shell` and `exec` on a pty.
 */
import { spawn } from 'node:child_process';
import { promises as fs, writeFileSync, chmodSync, readFileSync } from 'node:fs';
import * as path from 'node:path';

import { DEFAULT_HOST_PATH } from '../lib';
import { program } from '../lib/cli/program';
import { type CliRun, runNode, SHARED_IMAGES, tempHost, type TestHost } from './helpers/host';
import { type LxdFixture, startLxdFixture } from './helpers/lxd';
import { screenShows, tmux } from './helpers/tmux';

const MAIN = path.join(__dirname, '..', 'lib', 'cli', 'main.ts');
const REGISTER = path.join(__dirname, 'helpers', 'ts-register.js');

let t: TestHost;
let wrapper: string;
beforeAll(async () => {
  t = await tempHost();
  // What a user types as `lxq`, for tmux.
  wrapper = path.join(t.dir, 'lxq');
  writeFileSync(wrapper, `#!/bin/sh\nexec ${process.execPath} -r ${REGISTER} ${MAIN} --host ${t.dir} --images ${SHARED_IMAGES} "$@"\n`);
  chmodSync(wrapper, 0o755);
});
afterAll(async () => {
  await t.dispose();
});

type Run = CliRun;
const lxq = (args: string[], input?: string): Promise<Run> => runNode(['-r', REGISTER, MAIN, '--host', t.dir, '--images', SHARED_IMAGES, ...args], input);

/** A failed command: one line on stderr, exit 1, nothing on stdout. */
function refused(r: Run, re: RegExp): void {
  expect(r).toMatchObject({ code: 1, stdout: '' });
  expect(r.stderr).toMatch(new RegExp(`^lxq: [^\\n]*(?:${re.source})[^\\n]*\\n$`));
}
const names = async () => (JSON.parse((await lxq(['list', '--format', 'json'])).stdout) as { name: string }[]).map((i) => i.name).sort();

test('--version, --help, and bad input: one line on stderr, a non-zero exit, the nearest command suggested', async () => {
  const v = await lxq(['--version']);
  expect(v).toMatchObject({ code: 0, stdout: `${JSON.parse(readFileSync(path.join(__dirname, '../package.json'), 'utf8')).version}\n` });
  const help = await lxq(['--help']);
  expect(help.code).toBe(0);
  for (const c of ['list', 'launch', 'exec', 'shell', 'file', 'config', 'image', 'monitor']) expect(help.stdout).toContain(c);
  expect((await lxq(['exec', '--help'])).stdout).toMatch(/lxq exec NAME -- CMD/);
  expect(program().opts().host).toBe(process.env.LXQ_HOST ?? DEFAULT_HOST_PATH); // the CLI's default is the library's
  const unknown = await lxq(['lsit']);
  expect(unknown.code).not.toBe(0);
  expect(unknown.stderr).toBe("lxq: unknown command 'lsit' (Did you mean list?)\n");
  const flag = await lxq(['list', '--colour']);
  expect(flag.code).not.toBe(0);
  expect(flag.stderr.trim().split('\n')).toHaveLength(1);
  const missing = await lxq(['info', 'nope']);
  expect(missing).toMatchObject({ code: 1, stdout: '' });
  expect(missing.stderr).toMatch(/^lxq: no instance named "nope".*\n$/);
  expect((await lxq(['launch', 'busybox', 'Bad_Name'])).stderr).toMatch(/^lxq: .*name/);
  expect((await lxq(['list', '--format', 'json'])).stdout).toBe('[]\n'); // nothing was made
}, 240_000);

test('launch, list in every format, info, exec (exit code passed through), config, file push/pull, stop, delete', async () => {
  const name = t.name('cli');
  expect(await lxq(['launch', 'busybox', name, '-c', 'user.note=hello', '-c', 'limits.memory=128MiB'])).toMatchObject({ code: 0, stdout: `${name} started\n` });
  const table = await lxq(['list']);
  expect(table.stdout).toMatch(new RegExp(`^NAME +TYPE +STATUS +IMAGE +CREATED\n${name} +container +running +busybox +\\S+\n$`));
  expect(JSON.parse((await lxq(['list', '--format', 'json'])).stdout)).toMatchObject([{ name, type: 'container', status: 'running', image: 'busybox' }]);
  expect((await lxq(['list', '--format', 'csv'])).stdout).toMatch(new RegExp(`^name,type,status,image,created\n${name},container,running,busybox,`));
  expect((await lxq(['list', '--format', 'yaml'])).stdout).toMatch(new RegExp(`^- name: ${name}\n  type: container\n  status: running`));
  expect((await lxq(['info', name])).stdout).toMatch(/status: running\npid: \d+/);

  const ex = await lxq(['exec', name, '--', 'sh', '-c', 'cat; echo err >&2; exit 7'], 'from stdin\n');
  expect(ex).toEqual({ code: 7, stdout: 'from stdin\n', stderr: 'err\n' });
  expect(await lxq(['exec', name, 'true'])).toMatchObject({ code: 1, stderr: expect.stringMatching(/needs the command after "--"/) });

  expect((await lxq(['config', 'get', name, 'user.note'])).stdout).toBe('hello\n');
  expect((await lxq(['config', 'set', name, 'user.note=bye', 'user.x=1'])).code).toBe(0);
  expect((await lxq(['config', 'unset', name, 'user.x'])).code).toBe(0);
  expect((await lxq(['config', 'show', name])).stdout).toBe('limits.memory=128MiB\nuser.note=bye\n');
  const bad = await lxq(['config', 'set', name, 'limits.memory=lots']);
  expect(bad.code).toBe(1);
  expect((await lxq(['config', 'show', name])).stdout).toBe('limits.memory=128MiB\nuser.note=bye\n'); // unchanged

  const local = path.join(t.dir, 'motd');
  await fs.writeFile(local, 'pushed\n');
  expect((await lxq(['file', 'push', '--mode', '0600', local, `${name}/etc/motd`])).code).toBe(0);
  expect((await lxq(['exec', name, '--', 'stat', '-c', '%a', '/etc/motd'])).stdout).toBe('600\n');
  expect((await lxq(['file', 'pull', `${name}/etc/motd`, '-'])).stdout).toBe('pushed\n');
  expect((await lxq(['file', 'pull', `${name}/etc/motd`, path.join(t.dir, 'back')])).code).toBe(0);
  expect(await fs.readFile(path.join(t.dir, 'back'), 'utf8')).toBe('pushed\n');
  // ".." stays inside the instance's root: this is the container's /etc/motd, not the host's.
  expect((await lxq(['file', 'pull', `${name}/../../etc/motd`, '-'])).stdout).toBe('pushed\n');
  expect((await lxq(['file', 'pull', `${name}/etc/none`, '-'])).code).toBe(1);

  expect((await lxq(['freeze', name])).code).toBe(0);
  expect((await lxq(['list', '--format', 'csv'])).stdout).toContain(',frozen,');
  expect((await lxq(['unfreeze', name])).code).toBe(0);
  expect((await lxq(['delete', name])).stderr).toMatch(/^lxq: cannot delete .* it is running/); // needs --force
  expect((await lxq(['stop', name, '--timeout', '1000'])).code).toBe(0);
  expect((await lxq(['delete', name])).code).toBe(0);
  expect((await lxq(['list', '--format', 'json'])).stdout).toBe('[]\n');
}, 180_000);

test('launch --wait and wait: ready conditions from the command line, a timeout and bad input refused', async () => {
  const name = t.name('cw');
  try {
    expect(await lxq(['launch', 'busybox', name, '--wait', 'exec=test -e /etc/hosts', '--wait-timeout', '20000'])).toMatchObject({ code: 0, stdout: `${name} started\n` });
    expect(await lxq(['wait', name, '--for', 'agent'])).toEqual({ code: 0, stdout: '', stderr: '' });
    expect(await lxq(['wait', name, '--for', 'exec', '--', 'test', '-d', '/tmp'])).toEqual({ code: 0, stdout: '', stderr: '' });
    refused(await lxq(['wait', name, '--for', 'port', '--port', '9', '--timeout', '500']), /did not become ready \(port\) within 500 ms: nothing listens on TCP port 9/);
    refused(await lxq(['wait', name, '--for', 'soon']), /unknown wait condition "soon"/);
    refused(await lxq(['wait', name, '--for', 'port']), /needs "port"/);
    const other = t.name('cw');
    refused(await lxq(['launch', 'busybox', other, '--wait', 'soon']), /unknown wait condition "soon"/);
    expect(await names()).not.toContain(other); // refused before anything was made
  } finally {
    await lxq(['delete', '--force', name]);
  }
}, 120_000);

test('monitor --format json prints the lifecycle stream of changes made by other lxq commands (instances and storage pools)', async () => {
  const name = t.name('mon');
  const pool = t.name('monpool');
  const mon = spawn(process.execPath, ['-r', REGISTER, MAIN, '--host', t.dir, '--images', SHARED_IMAGES, 'monitor', '--format', 'json'], { env: { ...process.env, LXQ_MONITOR_READY: '1' } });
  let out = '';
  mon.stdout.on('data', (d) => (out += d));
  try {
    await new Promise<void>((resolve) => mon.stderr.on('data', (d) => String(d).includes('ready') && resolve()));
    await lxq(['launch', 'busybox', name]);
    await lxq(['delete', '--force', name]);
    await lxq(['storage', 'create', pool, 'dir']);
    await lxq(['storage', 'delete', pool]);
    const deadline = Date.now() + 60_000;
    while (out.trim().split('\n').length < 6 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  } finally {
    mon.kill('SIGINT');
  }
  const code = await new Promise((r) => mon.on('close', r));
  expect(code).toBe(0);
  const events = out.trim().split('\n').map((l) => JSON.parse(l));
  expect(events.map((e) => `${e.action} ${e.name} ${e.requestor}`)).toEqual([`instance-created ${name} external`, `instance-started ${name} external`, `instance-stopped ${name} external`, `instance-deleted ${name} external`, `storage-pool-created ${pool} external`, `storage-pool-deleted ${pool} external`]);
}, 240_000);

test('in a real terminal (tmux): shell and exec get a pty of the terminal\'s size, keys reach them, the exit code comes back', async () => {
  const name = t.name('tty');
  await lxq(['launch', 'busybox', name]);
  const session = `lxq-${path.basename(t.dir)}`;
  const rc = path.join(t.dir, 'rc');
  try {
    await tmux('new-session', '-d', '-s', session, '-x', '100', '-y', '30', `sh -c '${wrapper} shell ${name}; echo $? > ${rc}; sleep 30'`);
    await screenShows(session, /\/ #\s*$/m);
    await tmux('send-keys', '-t', session, '[ -t 0 ] && echo "tty $(stty size)"; echo $((6*7))', 'Enter');
    const screen = await screenShows(session, /^42\s*$/m);
    expect(screen).toMatch(/^tty 30 100\s*$/m);
    await tmux('send-keys', '-t', session, 'exit 5', 'Enter');
    const deadline = Date.now() + 60_000;
    while (!(await fs.readFile(rc, 'utf8').catch(() => '')) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    expect(await fs.readFile(rc, 'utf8')).toBe('5\n');
    await tmux('kill-session', '-t', session);

    // exec on a pty: Ctrl-C reaches the command (the terminal's own interrupt, in raw mode), and 130 comes back.
    await fs.rm(rc, { force: true });
    await tmux('new-session', '-d', '-s', session, '-x', '80', '-y', '24', `sh -c '${wrapper} exec ${name} -- sh -c "stty size; exec sleep 60"; echo $? > ${rc}; sleep 30'`);
    await screenShows(session, /^24 80\s*$/m);
    await tmux('send-keys', '-t', session, 'C-c');
    const deadline2 = Date.now() + 60_000;
    while (!(await fs.readFile(rc, 'utf8').catch(() => '')) && Date.now() < deadline2) await new Promise((r) => setTimeout(r, 100));
    expect(await fs.readFile(rc, 'utf8')).toBe('130\n');
  } finally {
    await tmux('kill-session', '-t', session).catch(() => undefined);
    await lxq(['delete', '--force', name]);
  }
}, 240_000);

test('in a real terminal (tmux), on a VM (vm/default, through the lxq agent): shell gives a prompt, its size follows the terminal, Ctrl-C interrupts a command and not the shell, exit 3 comes back; exec -t too', async () => {
  const name = t.name('vmtty');
  expect(await lxq(['launch', '--vm', 'vm/default', name, '--wait', 'agent', '--wait-timeout', '180000'])).toMatchObject({ code: 0 });
  const session = `lxqv-${path.basename(t.dir)}`;
  const rc = path.join(t.dir, 'vm-rc');
  const exitCode = async () => {
    const deadline = Date.now() + 60_000;
    while (!(await fs.readFile(rc, 'utf8').catch(() => '')) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    return fs.readFile(rc, 'utf8');
  };
  try {
    await tmux('new-session', '-d', '-s', session, '-x', '100', '-y', '30', `sh -c '${wrapper} shell ${name}; echo $? > ${rc}; sleep 60'`);
    await screenShows(session, /#\s*$/m, 60_000);
    await tmux('send-keys', '-t', session, 'echo "tty:$(tty) size:$(stty size)"', 'Enter');
    await screenShows(session, /^tty:\/dev\/pts\/\d+ size:30 100\s*$/m, 30_000);
    // The terminal is resized: the shell's pty follows (SIGWINCH inside).
    await tmux('resize-window', '-t', session, '-x', '120', '-y', '40');
    await tmux('send-keys', '-t', session, 'clear; echo "resized:$(stty size)"', 'Enter');
    await screenShows(session, /^resized:40 120\s*$/m, 30_000);
    // Ctrl-C once the command runs in the foreground (earlier, it would interrupt the shell's line
    // editing): "started" is printed by the process that then becomes the sleep.
    await tmux('send-keys', '-t', session, 'clear; sh -c "echo started; exec sleep 600"', 'Enter');
    await screenShows(session, /^started\s*$/m, 30_000);
    await tmux('send-keys', '-t', session, 'C-c');
    await tmux('send-keys', '-t', session, 'echo "after:$?:$((6*7))"', 'Enter');
    await screenShows(session, /^after:130:42\s*$/m, 30_000);
    await tmux('send-keys', '-t', session, 'exit 3', 'Enter');
    expect(await exitCode()).toBe('3\n');
    await tmux('kill-session', '-t', session);

    // exec -t: a shell on a terminal of the window's size, its exit status passed back.
    await fs.rm(rc, { force: true });
    await tmux('new-session', '-d', '-s', session, '-x', '80', '-y', '24', `sh -c '${wrapper} exec -t ${name} -- sh; echo $? > ${rc}; sleep 60'`);
    await screenShows(session, /#\s*$/m, 60_000);
    await tmux('send-keys', '-t', session, '[ -t 0 ] && echo "exec:$(stty size)"', 'Enter');
    await screenShows(session, /^exec:24 80\s*$/m, 30_000);
    await tmux('send-keys', '-t', session, 'sh -c "echo sleeping; exec sleep 600"', 'Enter');
    await screenShows(session, /^sleeping\s*$/m, 30_000);
    await tmux('send-keys', '-t', session, 'C-c');
    await tmux('send-keys', '-t', session, 'echo "still:$?"', 'Enter');
    await screenShows(session, /^still:130\s*$/m, 30_000);
    await tmux('send-keys', '-t', session, 'exit 7', 'Enter');
    expect(await exitCode()).toBe('7\n');
  } finally {
    await tmux('kill-session', '-t', session).catch(() => undefined);
    await lxq(['delete', '--force', name]);
  }
}, 420_000);

test('in a real terminal (tmux): console gives the container\'s console shell (Enter activates it), keys reach it, its size follows the terminal, Ctrl-C, Ctrl-a q detaches', async () => {
  const name = t.name('con');
  await lxq(['launch', 'busybox', name]);
  const session = `lxqc-${path.basename(t.dir)}`;
  const rc = path.join(t.dir, 'console-rc');
  const c = await t.host.get(name);
  try {
    expect(await lxq(['console', name])).toMatchObject({ code: 0 }); // stdin at its end: detached at once
    await tmux('new-session', '-d', '-s', session, '-x', '90', '-y', '20', `sh -c '${wrapper} console ${name}; echo rc=$? > ${rc}; sleep 30'`);
    await screenShows(session, /To detach from the console, press: <ctrl>\+a q/);
    await tmux('send-keys', '-t', session, 'Enter');
    await screenShows(session, /^\/ #\s*$/m);
    await tmux('send-keys', '-t', session, 'echo "got:$((6*7)) $(tty) $(stty size)"', 'Enter');
    await screenShows(session, /^got:42 \/dev\/console 20 90\s*$/m);
    // The console is the shell's controlling terminal: Ctrl-C interrupts its command.
    // Ctrl-C once the command runs in the foreground (the child prints the marker after it took
    // the terminal): sent earlier, it would sit in the shell's input.
    await tmux('send-keys', '-t', session, `sh -c "echo wait''ing-for-ctrl-c; exec sleep 300"; echo not-interrupted`, 'Enter');
    await screenShows(session, /waiting-for-ctrl-c\s*$/m, 60_000);
    await tmux('send-keys', '-t', session, 'C-c');
    await tmux('send-keys', '-t', session, 'echo after-$((1+2))', 'Enter');
    expect(await screenShows(session, /^after-3\s*$/m)).not.toMatch(/^not-interrupted/m);
    await tmux('send-keys', '-t', session, 'C-a', 'q');
    const deadline = Date.now() + 60_000;
    while (!(await fs.readFile(rc, 'utf8').catch(() => '')) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    expect(await fs.readFile(rc, 'utf8')).toBe('rc=0\n');
    expect((await lxq(['console', name, '--show-log'])).stdout).toContain('got:42');
    expect(await c.status()).toBe('running'); // detaching leaves the instance alone
    expect((await lxq(['stop', '--force', name])).code).toBe(0);
    const stopped = await lxq(['console', name]);
    expect(stopped).toMatchObject({ code: 1, stdout: '' });
    expect(stopped.stderr).toMatch(/^lxq: cannot attach to the console of .* it is stopped.*\n$/);
  } finally {
    await tmux('kill-session', '-t', session).catch(() => undefined);
    await lxq(['delete', '--force', name]);
  }
}, 240_000);

test('launch -d, snapshot create|list|restore|delete, network create|list|show|set|unset|delete, image export|import, bad input refused before any change', async () => {
  const name = t.name('dev');
  const src = path.join(t.dir, 'share');
  await fs.mkdir(src);
  await fs.writeFile(path.join(src, 'f'), 'shared\n');
  for (const bad of ['data', 'data,source=/x', 'data,type=disk,nokey', ',type=disk']) {
    const r = await lxq(['launch', 'busybox', name, '-d', bad]);
    expect(r.code).toBe(1);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
  }
  expect((await lxq(['launch', 'busybox', name, '-d', 'data,type=disk,source=/nonexistent-lxq,path=/mnt'])).code).toBe(1);
  expect((await lxq(['list', '--format', 'json'])).stdout).toBe('[]\n'); // nothing was made
  expect((await lxq(['launch', 'busybox', name, '-d', `data,type=disk,source=${src},path=/mnt,readonly=true`])).code).toBe(0);
  expect((await lxq(['exec', name, '--', 'cat', '/mnt/f'])).stdout).toBe('shared\n');
  expect((await lxq(['info', name])).stdout).toMatch(new RegExp(`device data: disk ${src} -> /mnt`));

  expect(await lxq(['snapshot', 'create', name, 'first'])).toMatchObject({ code: 0, stdout: 'first\n' });
  expect((await lxq(['exec', name, '--', 'sh', '-c', 'echo changed > /etc/motd'])).code).toBe(0);
  expect(JSON.parse((await lxq(['snapshot', 'list', name, '--format', 'json'])).stdout)).toMatchObject([{ name: 'first', stateful: false }]);
  expect((await lxq(['snapshot', 'restore', name, 'nope'])).code).toBe(1);
  expect((await lxq(['snapshot', 'restore', name, 'first'])).code).toBe(0);
  expect((await lxq(['exec', name, '--', 'cat', '/etc/motd'])).stdout).not.toContain('changed');
  expect((await lxq(['snapshot', 'delete', name, 'first'])).code).toBe(0);
  expect((await lxq(['snapshot', 'list', name, '--format', 'csv'])).stdout).toBe('name,created,stateful,size,description\n');
  expect((await lxq(['snapshot', 'craete', name])).stderr).toMatch(/Did you mean create\?/);

  const net = `lxqc${Math.floor(Math.random() * 1e6)}`;
  expect((await lxq(['network', 'create', net, 'ipv4.address=bogus'])).code).toBe(1);
  const created = await lxq(['network', 'create', net, 'dns.domain=cli.test']); // a free subnet is picked
  try {
    expect(created).toMatchObject({ code: 0, stdout: expect.stringMatching(new RegExp(`^${net}: \\d+\\.\\d+\\.\\d+\\.1/24\n$`)) });
    const cidr = created.stdout.trim().split(' ')[1];
    expect(JSON.parse((await lxq(['network', 'list', '--format', 'json'])).stdout)).toMatchObject([{ name: net, address: cidr, domain: 'cli.test' }]);
    expect((await lxq(['network', 'show', net])).stdout).toMatch(new RegExp(`^name: ${net}\naddress: ${cidr}\n`));
    expect((await lxq(['network', 'set', net, 'dns.domain=other.test', 'bridge.mtu=1400'])).code).toBe(0);
    const shown = (await lxq(['network', 'show', net])).stdout;
    expect(shown).toMatch(/^config dns\.domain: other\.test$/m);
    expect(shown).toMatch(/^config bridge\.mtu: 1400$/m);
    refused(await lxq(['network', 'set', net, 'bridge.mtu=12']), /bad value for network key "bridge.mtu"/);
    refused(await lxq(['network', 'set', net, 'bogus=1']), /unknown network key "bogus"/);
    refused(await lxq(['network', 'unset', net, 'bogus']), /unknown network key "bogus"/);
    refused(await lxq(['network', 'set', 'nonet0', 'dns.domain=x']), /no network named "nonet0"/);
    expect((await lxq(['network', 'show', net])).stdout).toBe(shown); // unchanged
    expect((await lxq(['network', 'unset', net, 'bridge.mtu'])).code).toBe(0);
    expect((await lxq(['network', 'show', net])).stdout).not.toMatch(/bridge\.mtu/);
  } finally {
    expect((await lxq(['network', 'delete', net])).code).toBe(0);
  }
  expect((await lxq(['network', 'show', net])).code).toBe(1);

  const tarball = path.join(t.dir, 'busybox.tar.gz');
  expect((await lxq(['image', 'export', 'busybox', tarball])).code).toBe(0);
  expect((await fs.stat(tarball)).size).toBeGreaterThan(0);
  const alias = `bb-${path.basename(t.dir).slice(-6).toLowerCase()}`;
  expect((await lxq(['image', 'import', path.join(t.dir, 'none.tar.gz'), '--alias', alias])).code).toBe(1);
  expect((await lxq(['image', 'import', tarball])).stderr).toMatch(/--alias/);
  const imported = await lxq(['image', 'import', tarball, '--alias', alias]);
  try {
    expect(imported).toMatchObject({ code: 0, stdout: expect.stringContaining(`${alias} (container)`) });
    expect((await lxq(['image', 'list', '--format', 'csv'])).stdout).toContain(`${alias},container,`);
  } finally {
    await lxq(['image', 'delete', alias]);
  }
  await lxq(['delete', '--force', name]);
}, 240_000);

test('storage create|list|info|set|unset|delete and launch -s: the pool an instance is on; bad input refused with nothing changed', async () => {
  const pool = `p${path.basename(t.dir).slice(-6).toLowerCase()}`;
  const name = t.name('st');
  const pools = async () => (await lxq(['storage', 'list', '--format', 'json'])).stdout;
  const before = await pools();
  refused(await lxq(['storage', 'create', pool, 'zfs']), /unknown storage driver "zfs"/);
  refused(await lxq(['storage', 'create', pool, 'dir', 'bogus=1']), /unknown key "bogus" for a dir pool/);
  refused(await lxq(['storage', 'create', 'a/b', 'dir']), /contains "\/"/);
  expect(await pools()).toBe(before);
  expect(await lxq(['storage', 'create', pool, 'dir', '--description', 'roots of the CLI test'])).toMatchObject({ code: 0, stdout: `Storage pool ${pool} created\n` });
  try {
    refused(await lxq(['storage', 'create', pool, 'overlay']), /already exists/);
    refused(await lxq(['storage', 'set', pool, 'size', '1GiB']), /unknown key "size" for a dir pool/);
    refused(await lxq(['launch', 'busybox', name, '-s', 'nopool']), /nopool/);
    expect(await names()).not.toContain(name);
    expect((await lxq(['launch', 'busybox', name, '-s', pool])).code).toBe(0);
    expect(JSON.parse(await pools())).toEqual(expect.arrayContaining([expect.objectContaining({ name: pool, driver: 'dir', description: 'roots of the CLI test', 'used by': 1 })]));
    expect((await lxq(['storage', 'info', pool])).stdout).toMatch(new RegExp(`^name: ${pool}\ndriver: dir\ndescription: roots of the CLI test\ncreated: .*\nused by: ${name}\n$`));
    refused(await lxq(['storage', 'delete', pool]), new RegExp(`used by "${name}"`));
    expect((await lxq(['storage', 'set', pool, '--description', 'other'])).code).toBe(0);
    expect((await lxq(['storage', 'show', pool])).stdout).toMatch(/\ndescription: other\n/);
    refused(await lxq(['storage', 'unset', pool, 'bogus']), /bogus/);
    expect((await lxq(['delete', '--force', name])).code).toBe(0);
    expect(await lxq(['storage', 'delete', pool])).toMatchObject({ code: 0, stdout: `Storage pool ${pool} deleted\n` });
    expect(await pools()).toBe(before);
  } finally {
    await lxq(['delete', '--force', name]);
    await lxq(['storage', 'delete', pool]);
  }
}, 120_000);

test('copy (with snapshots, --instance-only, --snapshot, -c), rename, snapshot rename, export/import: bad input refused with nothing changed', async () => {
  const [a, b, c, d, e, f] = ['cpa', 'cpb', 'cpc', 'cpd', 'cpe', 'cpf'].map((p) => t.name(p));
  const motd = async (n: string) => (await lxq(['file', 'pull', `${n}/etc/motd`, '-'])).stdout;
  expect((await lxq(['launch', 'busybox', a, '-c', 'user.note=src'])).code).toBe(0);
  try {
    await lxq(['exec', a, '--', 'sh', '-c', 'echo one > /etc/motd']);
    await lxq(['snapshot', 'create', a, 'first']);
    await lxq(['exec', a, '--', 'sh', '-c', 'echo two > /etc/motd']);

    refused(await lxq(['copy', 'nope', b]), /no instance named "nope"/);
    refused(await lxq(['copy', a, 'Bad_Name']), /invalid instance name/);
    refused(await lxq(['copy', a, b, '--snapshot', 'nope']), /has no snapshot named "nope"/);
    refused(await lxq(['copy', a, b, '-c', 'limits.memory=lots']), /bad value for "limits.memory"/);
    refused(await lxq(['copy', a, b, '-c', 'novalue']), /bad key=value/);
    refused(await lxq(['copy', a, a]), /already exists/);
    expect(await names()).toEqual([a]);

    expect(await lxq(['copy', a, b, '-c', 'user.note=copy'])).toEqual({ code: 0, stdout: '', stderr: '' });
    expect(await motd(b)).toBe('two\n');
    expect((await lxq(['config', 'get', b, 'user.note'])).stdout).toBe('copy\n');
    expect(JSON.parse((await lxq(['snapshot', 'list', b, '--format', 'json'])).stdout)).toMatchObject([{ name: 'first' }]);
    expect((await lxq(['copy', a, c, '--instance-only'])).code).toBe(0);
    expect((await lxq(['snapshot', 'list', c, '--format', 'json'])).stdout).toBe('[]\n');
    expect((await lxq(['copy', a, d, '--snapshot', 'first'])).code).toBe(0);
    expect(await motd(d)).toBe('one\n');
    expect((await lxq(['start', d])).code).toBe(0); // a copy is an instance of its own
    expect((await lxq(['exec', d, '--', 'cat', '/etc/motd'])).stdout).toBe('one\n');

    refused(await lxq(['rename', a, e]), /cannot rename .*: it is running/);
    await lxq(['stop', '--force', a]);
    refused(await lxq(['rename', a, b]), /already exists/);
    refused(await lxq(['rename', a, 'Bad_Name']), /invalid instance name/);
    expect(await lxq(['rename', a, e])).toEqual({ code: 0, stdout: '', stderr: '' });
    expect(await names()).toEqual([b, c, d, e].sort());
    expect(await motd(e)).toBe('two\n');

    refused(await lxq(['snapshot', 'rename', e, 'nope', 'x']), /no snapshot named "nope"/);
    refused(await lxq(['snapshot', 'rename', e, 'first', 'a/b']), /snapshot name/i);
    expect((await lxq(['snapshot', 'rename', e, 'first', 'primero'])).code).toBe(0);
    expect(JSON.parse((await lxq(['snapshot', 'list', e, '--format', 'json'])).stdout)).toMatchObject([{ name: 'primero' }]);

    const tarball = path.join(t.dir, 'e.tar.zst');
    refused(await lxq(['export', e, path.join(t.dir, 'none', 'e.tar.zst')]), /does not exist/);
    refused(await lxq(['export', 'nope', tarball]), /no instance named "nope"/);
    expect(await lxq(['export', e, tarball])).toEqual({ code: 0, stdout: '', stderr: '' });
    refused(await lxq(['import', tarball]), /already exists/); // its name, as exported, is taken
    refused(await lxq(['import', path.join(t.dir, 'none.tar.zst'), f]), /does not exist/);
    await fs.writeFile(path.join(t.dir, 'junk.tar.zst'), 'not a tarball\n');
    refused(await lxq(['import', path.join(t.dir, 'junk.tar.zst'), f]), /not a complete lxq export|not an lxq export/);
    expect(await names()).toEqual([b, c, d, e].sort());
    expect(await lxq(['import', tarball, f])).toEqual({ code: 0, stdout: `${f}\n`, stderr: '' });
    expect(await motd(f)).toBe('two\n');
    expect(JSON.parse((await lxq(['snapshot', 'list', f, '--format', 'json'])).stdout)).toMatchObject([{ name: 'primero' }]);
    await lxq(['delete', f]);
    expect((await lxq(['export', e, tarball, '--instance-only'])).code).toBe(0);
    expect(await lxq(['import', tarball, f])).toMatchObject({ code: 0, stdout: `${f}\n` });
    expect((await lxq(['snapshot', 'list', f, '--format', 'json'])).stdout).toBe('[]\n');

    // An archive whose instance reaches into the host imports only with the caller's consent.
    await lxq(['delete', f]);
    expect((await lxq(['config', 'set', e, 'raw.lxc=lxc.environment = FROM_RAW=1'])).code).toBe(0);
    expect((await lxq(['export', e, tarball, '--instance-only'])).code).toBe(0);
    refused(await lxq(['import', tarball, f]), /access to this host \(the instance: option raw\.lxc\).*--allow-host-access/);
    expect(await names()).toEqual([b, c, d, e].sort());
    expect(await lxq(['import', tarball, f, '--allow-host-access'])).toMatchObject({ code: 0, stdout: `${f}\n` });
    expect((await lxq(['config', 'get', f, 'raw.lxc'])).stdout).toBe('lxc.environment = FROM_RAW=1\n');
  } finally {
    for (const n of [a, b, c, d, e, f]) await lxq(['delete', '--force', n]);
  }
}, 480_000);

describe('--remote on a real private LXD 5.0 (test/helpers/lxd.ts: its own LXD_DIR, a dir pool, no NIC)', () => {
  let lxd: LxdFixture | undefined;
  const made: string[] = [];
  let remote: (args: string[], input?: string) => Promise<Run>;
  beforeAll(async () => {
    // The `default` profile gets the root disk, as `lxd init` leaves it (no NIC): launch names no profile.
    lxd = await startLxdFixture('lxq-cli-lxd-', { pool: 'lxq-cli', profile: 'default', alias: 'busybox' });
    const socket = lxd.daemon.socket;
    remote = (args, input) => lxq(['--remote', socket, ...args], input);
  }, 300_000);
  afterAll(async () => {
    for (const n of made) {
      await lxd?.client.call('PUT', `/1.0/instances/${n}/state`, { action: 'stop', force: true }).catch(() => undefined);
      await lxd?.client.call('DELETE', `/1.0/instances/${n}`).catch(() => undefined);
    }
    await lxd?.stop();
  }, 180_000);

  test('list, launch, info, wait, exec (stdin, stdout/stderr apart, exit code), freeze, restart, stop, delete; bad input refused with nothing made', async () => {
    const name = `r-${path.basename(t.dir).slice(-6).toLowerCase().replace(/[^a-z0-9]/g, 'x')}`;
    made.push(name);
    const listed = async () => JSON.parse((await remote(['list', '--format', 'json'])).stdout) as { name: string; status: string }[];
    expect(await listed()).toEqual([]);
    refused(await remote(['launch', 'busybox', 'Bad_Name']), /instance name/);
    refused(await remote(['launch', 'no-such-image', name]), /not found/i);
    refused(await remote(['launch', 'busybox', name, '-d', 'data,type=floppy']), /floppy/);
    refused(await remote(['launch', 'busybox', name, '-c', 'limits.memory=lots']), /limits\.memory/);
    refused(await remote(['launch', 'busybox', name, '-c', 'novalue']), /bad key=value/);
    refused(await remote(['file', 'pull', `${name}/etc/motd`, '-']), /file pull is not available with --remote/);
    refused(await remote(['snapshot', 'list', name]), /snapshot list is not available with --remote/);
    refused(await lxq(['--remote', path.join(t.dir, 'none.socket'), 'list']), /no LXD server answers/);
    refused(await lxq(['--remote', 'lxd.example', 'list']), /bad --remote/);
    refused(await lxq(['--remote', 'https://127.0.0.1:1', 'list']), /needs --remote-cert/);
    refused(await lxq(['--project', 'p', 'list']), /go with --remote/);
    refused(await remote(['info', 'nope']), /not found/i);
    expect(await listed()).toEqual([]); // nothing was made

    expect(await remote(['launch', 'busybox', name, '-c', 'user.note=cli', '-d', 'etc,type=disk,source=/etc,path=/mnt/host-etc,readonly=true'])).toEqual({ code: 0, stdout: `${name} started\n`, stderr: '' });
    expect(await remote(['exec', name, '--', 'cat', '/mnt/host-etc/hostname'])).toEqual({ code: 0, stdout: await fs.readFile('/etc/hostname', 'utf8'), stderr: '' });
    expect(await remote(['wait', name, '--for', 'exec', '--', 'test', '-d', '/mnt/host-etc'])).toEqual({ code: 0, stdout: '', stderr: '' });
    refused(await remote(['wait', name, '--for', 'soon']), /unknown wait condition "soon"/);
    expect(await listed()).toMatchObject([{ name, type: 'container', status: 'running' }]);
    expect((await remote(['list'])).stdout).toMatch(new RegExp(`^NAME +TYPE +STATUS +LOCATION +CREATED\n${name} +container +running +`));
    expect((await remote(['info', name])).stdout).toMatch(new RegExp(`^name: ${name}\ntype: container\n[^]*status: running\npid: \\d+\n`));
    expect(await remote(['exec', name, '--', 'sh', '-c', 'cat; echo err >&2; exit 3'], 'through LXD\n')).toEqual({ code: 3, stdout: 'through LXD\n', stderr: 'err\n' });
    expect(await remote(['exec', name, '--env', 'A=b', '--cwd', '/etc', '--', 'sh', '-c', 'echo $A $(pwd)'])).toMatchObject({ code: 0, stdout: 'b /etc\n' });
    refused(await remote(['exec', name, 'true']), /needs the command after "--"/);
    refused(await remote(['delete', name]), /running/);
    refused(await remote(['start', name]), /is running|already running/);

    expect((await remote(['freeze', name])).code).toBe(0);
    expect(await listed()).toMatchObject([{ name, status: 'frozen' }]);
    expect((await remote(['unfreeze', name])).code).toBe(0);
    expect((await remote(['restart', '--force', name])).code).toBe(0);
    expect(await listed()).toMatchObject([{ name, status: 'running' }]);
    expect(await remote(['stop', '--timeout', '2000', name])).toMatchObject({ code: 0, stderr: '' }); // busybox ignores SIGPWR: forced after 2 s
    expect(await listed()).toMatchObject([{ name, status: 'stopped' }]);
    expect(await remote(['start', name])).toMatchObject({ code: 0, stderr: '' }); // LXD still holds the stop's lock a moment: sent again
    expect((await remote(['delete', '--force', name])).code).toBe(0);
    expect(await listed()).toEqual([]);
    expect((await lxq(['list', '--format', 'json'])).stdout).toBe('[]\n'); // this host was never touched
  }, 300_000);
});
