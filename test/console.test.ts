/**
 * Interactive consoles on a real busybox container and a real vm/default VM (booted once): what
 * the guest writes on its console reaches every attached stream and the log; what a stream writes
 * reaches a program reading the console inside.
 */
import { InvalidState, NotSupported } from '../lib/errors';
import type { Instance } from '../lib';
import type { VmInstance } from '../lib/vm/vm';
import type { ConsoleStream } from '../lib/console/console';
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';

import { SHARED_IMAGES, tempHost, type TestHost } from './helpers/host';

let t: TestHost;
beforeAll(async () => {
  t = await tempHost();
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

/** An echo loop on the instance's console device, so typed input comes back changed. */
async function echoLoop(i: Instance, device: string) {
  return i.spawn(['/bin/sh', '-c', `while read -r l; do echo "got:$l"; done <${device} >${device}`]);
}

async function exerciseConsole(i: Instance, device: string) {
  const a = await i.console.attach();
  const b = await i.console.attach();
  const ra = collect(a);
  const rb = collect(b);
  // Output the guest writes reaches both readers, and the log.
  await i.exec(['/bin/sh', '-c', `echo console-out-1 >${device}`]);
  await ra.until(/console-out-1/);
  await rb.until(/console-out-1/);
  const loop = await echoLoop(i, device);
  try {
    await new Promise((r) => setTimeout(r, 500)); // the loop opens the device
    a.write('typed-by-a\n');
    await rb.until(/got:typed-by-a/);
    b.write('typed-by-b\n');
    await ra.until(/got:typed-by-b/);
    const deadline = Date.now() + 10_000;
    while (!(await i.console.log()).includes('got:typed-by-b') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    expect(await i.console.log()).toContain('got:typed-by-b');
  } finally {
    loop.kill('SIGKILL');
    await loop.exit;
  }
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
  const other = spawnSync(process.execPath, ['-r', path.join(__dirname, 'helpers', 'ts-register.js'), path.join(__dirname, '..', 'lib', 'cli', 'main.ts'), '--host', t.dir, '--images', SHARED_IMAGES, 'console', c.name], { input: '', encoding: 'utf8' });
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

test('vm: the serial port through a QEMU chardev socket, with the console log kept as before', async () => {
  const vm = await t.host.create(t.name('vmcon'), { type: 'vm', image: 'vm/default' });
  await expect(vm.console.attach()).rejects.toBeInstanceOf(InvalidState);
  await vm.start();
  await (vm as VmInstance).waitForAgent(120_000);
  expect(await vm.console.log()).toMatch(/lxq-init/); // the log is written with nobody attached
  const { b } = await exerciseConsole(vm, '/dev/ttyS0');
  await expect(b.resize(80, 24)).rejects.toBeInstanceOf(NotSupported);
  const ended = new Promise<void>((r) => b.once('end', () => r()));
  b.resume();
  await vm.stop({ force: true });
  await ended;
  await expect(vm.console.attach()).rejects.toBeInstanceOf(InvalidState);
  await vm.delete({ force: true });
}, 400_000);
