/**
 * The `vm/default` image: build (cold, then cached), then boot it under QEMU TCG with a per-test
 * qcow2 overlay and drive it through the guest agent and QMP with minimal inline clients (the
 * real clients live in lib/qmp/): sync, ping, exec `uname -r`, write a file, ACPI power-down,
 * boot again from the same overlay and read the file back.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { promises as fs } from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';

import { buildVmImage, readVmImageMeta, vmKernelCmdline, type VmImage } from '../lib/images/vm-image';
import { createVmOverlay, qemuArgsForImage } from '../lib/drivers/vm/qemu-args';

const QEMU = 'qemu-system-x86_64';
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** `p`, or 'timeout' after `ms` (the timer does not outlive the race). */
async function within<T>(p: Promise<T>, ms: number): Promise<T | 'timeout'> {
  let t: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([p, new Promise<'timeout'>((r) => (t = setTimeout(() => r('timeout'), ms)))]);
  } finally {
    clearTimeout(t);
  }
}

/** One JSON document per line over a Unix socket; QGA replies to a sync are prefixed by 0xFF. */
class JsonLineClient {
  private buf = '';
  private lines: unknown[] = [];
  private wake: (() => void) | undefined;
  private closed = false;

  private constructor(readonly sock: net.Socket) {
    sock.on('data', (d: Buffer) => {
      // 0xFF is not valid UTF-8: drop it before decoding (it only marks a sync reply).
      this.buf += Buffer.from(d.filter((b) => b !== 0xff)).toString('utf8');
      let i: number;
      while ((i = this.buf.indexOf('\n')) >= 0) {
        const line = this.buf.slice(0, i).trim();
        this.buf = this.buf.slice(i + 1);
        if (line) this.lines.push(JSON.parse(line));
      }
      this.wake?.();
    });
    const end = () => {
      this.closed = true;
      this.wake?.();
    };
    sock.on('close', end);
    sock.on('error', end);
  }

  /** Connects, retrying while QEMU has not created the socket yet. */
  static async connect(p: string, timeoutMs = 10_000): Promise<JsonLineClient> {
    const until = Date.now() + timeoutMs;
    for (;;) {
      try {
        const sock = await new Promise<net.Socket>((resolve, reject) => {
          const s = net.connect(p, () => resolve(s));
          s.once('error', reject);
        });
        return new JsonLineClient(sock);
      } catch (e) {
        if (Date.now() > until) throw e;
        await sleep(10);
      }
    }
  }

  send(obj: unknown, prefixFF = false): void {
    const json = Buffer.from(JSON.stringify(obj) + '\n');
    this.sock.write(prefixFF ? Buffer.concat([Buffer.from([0xff]), json]) : json);
  }

  /** The next line that `match` accepts (others are dropped), within `timeoutMs`. */
  async next(match: (m: Record<string, unknown>) => boolean, timeoutMs: number, what: string): Promise<Record<string, unknown>> {
    const until = Date.now() + timeoutMs;
    for (;;) {
      while (this.lines.length) {
        const m = this.lines.shift() as Record<string, unknown>;
        if (match(m)) return m;
      }
      if (this.closed) throw new Error(`${what}: connection closed`);
      const left = until - Date.now();
      if (left <= 0) throw new Error(`${what}: no reply within ${timeoutMs} ms`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.wake = () => {
          clearTimeout(t);
          resolve();
        };
      });
      this.wake = undefined;
    }
  }

  close(): void {
    this.sock.destroy();
  }
}

/** Minimal guest-agent client: resync, then one command at a time. */
class Qga {
  private nextId = 123;
  constructor(private readonly c: JsonLineClient) {}

  /**
   * Waits for the agent: guest-sync-delimited (0xFF first, which resets its parser) every
   * `retryMs` until one is answered, then once more so every stale reply is drained.
   */
  async sync(timeoutMs: number, retryMs = 500): Promise<void> {
    const until = Date.now() + timeoutMs;
    const sent = new Set<number>();
    for (;;) {
      const id = this.nextId++;
      sent.add(id);
      this.c.send({ execute: 'guest-sync-delimited', arguments: { id } }, true);
      try {
        await this.c.next((m) => sent.has(m.return as number), Math.min(retryMs, Math.max(1, until - Date.now())), 'guest-sync-delimited');
        break;
      } catch (e) {
        if (Date.now() >= until || /closed/.test(String(e))) throw e;
      }
    }
    const id = this.nextId++;
    this.c.send({ execute: 'guest-sync-delimited', arguments: { id } }, true);
    await this.c.next((m) => m.return === id, 5_000, 'guest-sync-delimited (drain)');
  }

  async cmd(execute: string, args?: Record<string, unknown>, timeoutMs = 10_000): Promise<any> {
    this.c.send(args ? { execute, arguments: args } : { execute });
    const m = await this.c.next((x) => 'return' in x || 'error' in x, timeoutMs, execute);
    if (m.error) throw new Error(`${execute}: ${JSON.stringify(m.error)}`);
    return m.return;
  }

  async exec(argv: string[]): Promise<{ exitcode: number; stdout: string; stderr: string }> {
    const { pid } = await this.cmd('guest-exec', { path: argv[0], arg: argv.slice(1), 'capture-output': true });
    const until = Date.now() + 15_000;
    for (;;) {
      const st = await this.cmd('guest-exec-status', { pid });
      if (st.exited) {
        const dec = (b?: string) => (b ? Buffer.from(b, 'base64').toString('utf8') : '');
        return { exitcode: st.exitcode, stdout: dec(st['out-data']), stderr: dec(st['err-data']) };
      }
      if (Date.now() > until) throw new Error(`guest-exec ${argv.join(' ')}: still running`);
      await sleep(20);
    }
  }

  async writeFile(p: string, data: string): Promise<void> {
    const h = await this.cmd('guest-file-open', { path: p, mode: 'w' });
    await this.cmd('guest-file-write', { handle: h, 'buf-b64': Buffer.from(data).toString('base64') });
    await this.cmd('guest-file-flush', { handle: h });
    await this.cmd('guest-file-close', { handle: h });
  }

  async readFile(p: string): Promise<string> {
    const h = await this.cmd('guest-file-open', { path: p, mode: 'r' });
    const r = await this.cmd('guest-file-read', { handle: h, count: 65536 });
    await this.cmd('guest-file-close', { handle: h });
    return Buffer.from(r['buf-b64'], 'base64').toString('utf8');
  }
}

/** Minimal QMP client: greeting, capabilities, commands (events are skipped). */
class Qmp {
  private constructor(private readonly c: JsonLineClient) {}

  static async connect(p: string): Promise<Qmp> {
    const c = await JsonLineClient.connect(p);
    await c.next((m) => 'QMP' in m, 5_000, 'QMP greeting');
    const q = new Qmp(c);
    await q.cmd('qmp_capabilities');
    return q;
  }

  async cmd(execute: string, args?: Record<string, unknown>): Promise<any> {
    this.c.send(args ? { execute, arguments: args } : { execute });
    const m = await this.c.next((x) => 'return' in x || 'error' in x, 5_000, execute);
    if (m.error) throw new Error(`${execute}: ${JSON.stringify(m.error)}`);
    return m.return;
  }

  close(): void {
    this.c.close();
  }
}

interface Vm {
  proc: ChildProcess;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  qmpSocket: string;
  qgaSocket: string;
  serialLog: string;
  startedAt: number;
  stderr: () => string;
}

describe('vm/default image', () => {
  let root: string;
  let imageDir: string;
  let img: VmImage;
  let overlay: string;
  const vms: Vm[] = [];
  const clients: { close(): void }[] = [];

  function boot(name: string): Vm {
    const dir = path.join(root, name);
    const qmpSocket = path.join(dir, 'qmp.sock');
    const qgaSocket = path.join(dir, 'qga.sock');
    const serialLog = path.join(dir, 'serial.log');
    const args = qemuArgsForImage(img, { disk: overlay, qmpSocket, qgaSocket, serialLog, memoryMiB: 256, cpus: 1, accel: 'tcg' });
    let err = '';
    const startedAt = Date.now();
    const proc = spawn(QEMU, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    proc.stderr!.on('data', (d) => (err += d));
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
      proc.once('exit', (code, signal) => resolve({ code, signal }));
      proc.once('error', (e) => {
        err += String(e);
        resolve({ code: -1, signal: null });
      });
    });
    const vm = { proc, exited, qmpSocket, qgaSocket, serialLog, startedAt, stderr: () => err };
    vms.push(vm);
    return vm;
  }

  async function serial(vm: Vm): Promise<string> {
    return fs.readFile(vm.serialLog, 'utf8').catch(() => '(no serial log)');
  }

  /** Boots and waits for the first guest-ping; returns the agent and the boot time. */
  async function bootToAgent(name: string): Promise<{ vm: Vm; qga: Qga; ms: number }> {
    await fs.mkdir(path.join(root, name));
    const vm = boot(name);
    try {
      const conn = await JsonLineClient.connect(vm.qgaSocket);
      clients.push(conn);
      const qga = new Qga(conn);
      await qga.sync(60_000);
      await qga.cmd('guest-ping');
      return { vm, qga, ms: Date.now() - vm.startedAt };
    } catch (e) {
      throw new Error(`${(e as Error).message}\nQEMU stderr: ${vm.stderr()}\nserial log:\n${await serial(vm)}`, { cause: e });
    }
  }

  beforeAll(async () => {
    root = await fs.mkdtemp(path.join(os.tmpdir(), 'lxq-vm-image-'));
    imageDir = path.join(root, 'images', 'vm', 'default');
  });

  afterAll(async () => {
    for (const c of clients) c.close();
    for (const vm of vms) {
      if (vm.proc.exitCode === null && vm.proc.signalCode === null) vm.proc.kill('SIGKILL');
      await vm.exited;
    }
    if (root) await fs.rm(root, { recursive: true, force: true });
  });

  test('builds the image: kernel, initramfs, qcow2 root disk and manifest', async () => {
    const lines: string[] = [];
    const t = Date.now();
    img = await buildVmImage(imageDir, { log: (l) => lines.push(l) });
    const buildMs = Date.now() - t;
    console.log(`vm image: cold build ${buildMs} ms\n${lines.join('\n')}`);

    expect(img.dir).toBe(imageDir);
    expect(img.kernelVersion).toMatch(/^\d+\.\d+\S*-cloud-amd64$/);
    const meta = await readVmImageMeta(imageDir);
    expect(meta.kernelVersion).toBe(img.kernelVersion);
    expect(meta.cmdline).toBe(vmKernelCmdline());
    expect(meta.modules).toEqual(expect.arrayContaining(['virtio_blk.ko', 'evdev.ko', 'button.ko']));
    const manifest = JSON.parse(await fs.readFile(path.join(imageDir, 'image.json'), 'utf8'));
    expect(manifest).toMatchObject({ name: 'vm/default', type: 'vm' });
    for (const [k, f] of [['kernel', img.kernel], ['initrd', img.initrd], ['disk', img.disk]] as const) {
      const st = await fs.stat(f);
      expect(st.size).toBe(meta.sizes[k]);
      expect(st.size).toBeGreaterThan(100_000);
    }
    expect(meta.sizes.initrd).toBeLessThan(8 * 1024 * 1024);
    const head = Buffer.alloc(4);
    const fh = await fs.open(img.disk, 'r');
    await fh.read(head, 0, 4, 0);
    await fh.close();
    expect(head.toString('latin1')).toBe('QFI\xfb');
    // Nothing of the build is left behind; the downloaded kernel is cached beside the image.
    expect((await fs.readdir(path.dirname(imageDir))).sort()).toEqual(['.cache', 'default']);
    expect((await fs.readdir(path.join(path.dirname(imageDir), '.cache'))).some((f) => f.endsWith('.deb'))).toBe(true);
    console.log(`vm image: kernel ${meta.sizes.kernel} B, initrd ${meta.sizes.initrd} B, disk ${meta.sizes.disk} B (qcow2, ${meta.diskVirtualSize} B virtual)`);
  }, 600_000);

  test('a second build returns the cached image at once', async () => {
    const t = Date.now();
    const again = await buildVmImage(imageDir);
    const ms = Date.now() - t;
    console.log(`vm image: cached build ${ms} ms`);
    expect(again).toEqual(img);
    expect(ms).toBeLessThan(60_000); // not rebuilt (minutes); no bound on a loaded machine's speed
  });

  test('boots under TCG: agent, exec, file write, ACPI power-down', async () => {
    overlay = path.join(root, 'overlay.qcow2');
    await createVmOverlay(img, overlay);
    const { vm, qga, ms } = await bootToAgent('boot1');
    console.log(`vm boot: first guest-ping ${ms} ms after launching QEMU\n${await serial(vm)}`);

    const r = await qga.exec(['/bin/uname', '-r']);
    expect(r.exitcode).toBe(0);
    expect(r.stdout.trim()).toBe(img.kernelVersion);

    await qga.writeFile('/root/lxq-persist.txt', 'written before power-down\n');
    expect(await qga.readFile('/root/lxq-persist.txt')).toBe('written before power-down\n');

    const qmp = await Qmp.connect(vm.qmpSocket);
    clients.push(qmp);
    const t = Date.now();
    await qmp.cmd('system_powerdown');
    const exit = await within(vm.exited, 30_000);
    if (exit === 'timeout') throw new Error(`QEMU did not exit after system_powerdown\nserial log:\n${await serial(vm)}`);
    const log = await serial(vm);
    console.log(`vm boot: powered off ${Date.now() - t} ms after system_powerdown\n${log.slice(log.indexOf('lxq-init: ACPI'))}`);
    expect(exit).toEqual({ code: 0, signal: null });
    expect(log).toMatch(/lxq-init: ACPI power button/);
  }, 120_000);

  test('boots again from the same overlay and the file survived', async () => {
    const { vm, qga, ms } = await bootToAgent('boot2');
    console.log(`vm boot: second boot, first guest-ping ${ms} ms`);
    expect(await qga.readFile('/root/lxq-persist.txt')).toBe('written before power-down\n');
    const r = await qga.exec(['/bin/cat', '/proc/mounts']);
    expect(r.stdout).toMatch(/^\/dev\/vda \/ ext4 rw/m);

    // guest-shutdown runs /sbin/shutdown; it sends no reply on success: QEMU just exits.
    const t = Date.now();
    await qga.cmd('guest-shutdown', { mode: 'powerdown' }, 1_000).catch(() => undefined);
    const exit = await within(vm.exited, 30_000);
    if (exit === 'timeout') throw new Error(`QEMU did not exit after guest-shutdown\nserial log:\n${await serial(vm)}`);
    console.log(`vm boot: powered off ${Date.now() - t} ms after guest-shutdown`);
    expect(exit).toEqual({ code: 0, signal: null });
    expect(await serial(vm)).toMatch(/lxq-init: shutdown: poweroff|lxq-init: poweroff/);
  }, 120_000);
});
