/**
 * Interactive consoles on a real busybox container and a real vm/default VM (booted once): what
 * the guest writes on its console reaches every attached stream and the log; what a stream writes
 * reaches a program reading the console inside.
 */
import { InvalidState, NotSupported } from '../lib/core/errors';
import type { Instance } from '../lib';
import type { VmInstance } from '../lib/drivers/vm/vm';
import type { ConsoleStream } from '../lib/instance/console';
import { spawnSync } from 'node:child_process';
import { promises as fs } from 'node:fs';
import * as path from 'node:path';

import { lxqArgv, tempHost, type TestHost } from './helpers/host';
import { screenShows, tmux } from './helpers/tmux';

/** `lxq --host <this file's host>` as a user runs it (node and its arguments). */
let CLI: string[];
let t: TestHost;
beforeAll(async () => {
  t = await tempHost();
  CLI = lxqArgv(t.dir);
  await t.host.images.ensure('busybox');
  await t.host.images.ensure('vm/default');
}, 600_000);
afterAll(async () => {
  await t?.dispose();
});

/** Collects what a stream reads; `until` waits for a pattern. */
function collect(s: ConsoleStream): { text: () => string; until: (re: RegExp, ms?: number) => Promise<string> } {
  let text = '';
  s.on('data', (d: Buffer) => (text += d.toString('utf8')));
  return {
    text: () => text,
    until: async (re, ms = 30_000) => {
      const end = Date.now() + ms;
      while (!re.test(text)) {
        if (Date.now() > end) throw new Error(`no ${re} on the console within ${ms} ms; got ${JSON.stringify(text.slice(-500))}`);
        await new Promise((r) => setTimeout(r, 50));
      }
      return text;
    },
  };
}

/**
 * Both images run a root shell on the console once Enter is pressed there (busybox init's
 * askfirst): what one stream types is run by it, and its output reaches every stream.
 */
async function exerciseConsole(i: Instance, device: string) {
  const a = await i.console.attach();
  const b = await i.console.attach();
  const ra = collect(a);
  const rb = collect(b);
  // Output the guest writes reaches both readers, and the log.
  await i.exec(['/bin/sh', '-c', `echo console-out-1 >${device}`]);
  await ra.until(/console-out-1/);
  await rb.until(/console-out-1/);
  a.write('\n'); // activates the console's shell
  await rb.until(/\/ # /, 60_000);
  a.write('echo typed-by-$((1+1))a\n');
  await rb.until(/^typed-by-2a\r*$/m);
  b.write('echo typed-by-$((2+2))b; tty\n');
  await ra.until(new RegExp(`^typed-by-4b\\r*\\n${device}\\r*$`, 'm'));
  const deadline = Date.now() + 60_000;
  while (!(await i.console.log()).includes('typed-by-4b') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
  expect(await i.console.log()).toContain('typed-by-4b');
  // One reader leaving keeps the other attached.
  a.destroy();
  await i.exec(['/bin/sh', '-c', `echo console-out-2 >${device}`]);
  await rb.until(/console-out-2/);
  return { a, b, rb };
}

test('container: two readers, typed input reaches a reader inside, the log keeps growing, resize sets the size, stop ends the streams', async () => {
  const c = await t.host.create(t.name('con'), { type: 'container', image: 'busybox' });
  await expect(c.console.attach()).rejects.toBeInstanceOf(InvalidState);
  await c.start();
  const { b, rb } = await exerciseConsole(c, '/dev/console');
  // Held by this process: another one is told so (through the CLI, as a person would meet it).
  const other = spawnSync(process.execPath, [...CLI, 'console', c.name], { input: '', encoding: 'utf8' });
  expect(other.status).toBe(1);
  expect(other.stderr).toBe(`lxq: the console of ${c.name} is in use by another process (until it detaches)\n`);
  await b.resize(132, 43);
  const size = await c.exec(['/bin/sh', '-c', 'stty size </dev/console']);
  expect(size.stdout.toString().trim()).toBe('43 132');
  await expect(b.resize(0, 10)).rejects.toThrow(/cols/);
  const ended = new Promise<void>((r) => b.once('end', () => r()));
  b.resume();
  await c.stop({ force: true });
  await ended;
  expect(rb.text()).toContain('console-out-2');
  await expect(c.console.attach()).rejects.toBeInstanceOf(InvalidState);
  // The console is free again for the next start.
  await c.start();
  const again = await c.console.attach();
  const r = collect(again);
  await c.exec(['/bin/sh', '-c', 'echo after-restart >/dev/console']);
  await r.until(/after-restart/);
  again.destroy();
  await c.delete({ force: true });
}, 240_000);

test('vm: `lxq console` in a real terminal (tmux): a shell prompt, a command and its output, Ctrl-C, Ctrl-a q; then the serial port\'s streams in-process, the log kept as before', async () => {
  const vm = await t.host.create(t.name('vmcon'), { type: 'vm', image: 'vm/default' });
  await expect(vm.console.attach()).rejects.toBeInstanceOf(InvalidState);
  // Started and attached to by the CLI alone: QEMU takes one QMP client at a time, and this
  // process connects only after the CLI has exited.
  expect(spawnSync(process.execPath, [...CLI, 'start', vm.name], { encoding: 'utf8' }).status).toBe(0);
  const session = `lxqvc-${path.basename(t.dir)}`;
  const rc = path.join(t.dir, 'console-rc');
  try {
    await tmux('new-session', '-d', '-s', session, '-x', '100', '-y', '30', `sh -c '${[process.execPath, ...CLI].join(' ')} console ${vm.name}; echo rc=$? > ${rc}; sleep 60'`);
    await screenShows(session, /To detach from the console, press: <ctrl>\+a q/);
    // Enter activates the console's shell once init has started it (the boot may still be going on).
    const deadline = Date.now() + 180_000;
    for (;;) {
      await tmux('send-keys', '-t', session, 'Enter');
      if (await screenShows(session, /^\/ #\s*$/m, 3000).then(() => true, () => false)) break;
      if (Date.now() > deadline) throw new Error(`no shell prompt on the console:\n${await tmux('capture-pane', '-p', '-t', session)}`);
    }
    await tmux('send-keys', '-t', session, 'echo "$(uname -s) says $((6*7)) on $(tty)"', 'Enter');
    await screenShows(session, /^Linux says 42 on \/dev\/ttyS0\s*$/m, 60_000);
    // The serial port is the shell's terminal: Ctrl-C interrupts the command it runs.
    // Ctrl-C once the command runs in the foreground (the child prints the marker after it took
    // the terminal): sent earlier, it would sit in the shell's input.
    await tmux('send-keys', '-t', session, `sh -c "echo wait''ing-for-ctrl-c; exec sleep 300"; echo not-interrupted`, 'Enter');
    await screenShows(session, /waiting-for-ctrl-c\s*$/m, 60_000);
    await tmux('send-keys', '-t', session, 'C-c');
    await tmux('send-keys', '-t', session, 'echo after-$((1+2))', 'Enter');
    expect(await screenShows(session, /^after-3\s*$/m, 60_000)).not.toMatch(/^not-interrupted/m);
    await tmux('send-keys', '-t', session, 'C-a', 'q');
    const end = Date.now() + 60_000;
    while (!(await fs.readFile(rc, 'utf8').catch(() => '')) && Date.now() < end) await new Promise((r) => setTimeout(r, 100));
    expect(await fs.readFile(rc, 'utf8')).toBe('rc=0\n');
  } finally {
    await tmux('kill-session', '-t', session).catch(() => undefined);
  }

  expect(await vm.status()).toBe('running'); // detaching left the VM alone
  await (vm as VmInstance).waitForAgent(120_000);
  expect(await vm.console.log()).toMatch(/lxq-init[^]*says 42 on \/dev\/ttyS0/); // the log was written all along
  const { b } = await exerciseConsole(vm, '/dev/ttyS0');
  await expect(b.resize(80, 24)).rejects.toBeInstanceOf(NotSupported);
  const ended = new Promise<void>((r) => b.once('end', () => r()));
  b.resume();
  await vm.stop({ force: true });
  await ended;
  await expect(vm.console.attach()).rejects.toBeInstanceOf(InvalidState);
  await vm.delete({ force: true });
}, 600_000);
