/**
 * Commands in a VM side by side: the lxq agent (vm.exec on vm/default), qemu-ga (guest-exec and
 * its status polls, on the same VM) and a busybox container's exec, on this host's accelerator
 * (TCG here):
 *   exec `/bin/true`; streaming out `head -c N /dev/zero` (N = 100 MiB, and 10 MiB through
 *   qemu-ga, which caps a stream at 16 MiB); a keystroke's round trip on a terminal (`cat` on a
 *   pty echoing one byte; qemu-ga has no terminal); a file of N bytes pushed in and pulled out
 *   (files.push/pull: the lxq agent's streamed WRITE/READ, qemu-ga's guest-file-* calls — 10 MiB
 *   there, its base64 chunks being slow — and a container's openat2 on the host).
 * Usage: node dist/bench/vm-agent.js [--quick]
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import { Host, type Instance } from '../lib';
import { GuestAgent } from '../lib/drivers/vm/agent';
import { agentSpawn } from '../lib/drivers/vm/agent-exec';
import { AgentFiles } from '../lib/drivers/vm/agent-files';
import { checkSpawn, collect, type InstanceProcess } from '../lib/instance/process';
import { printStatsTable, Stats, stats } from './stats';

const MiB = 1024 * 1024;

async function timed(into: number[], op: () => Promise<unknown>): Promise<void> {
  const t = performance.now();
  await op();
  into.push(performance.now() - t);
}

/** Output bytes of a command, checked whole. */
async function drain(proc: InstanceProcess, bytes: number): Promise<void> {
  let n = 0;
  proc.stdout.on('data', (d: Buffer) => (n += d.length));
  proc.stdin.end();
  await proc.exit;
  await new Promise((r) => (proc.stdout.readableEnded ? r(undefined) : proc.stdout.once('end', r)));
  if (n !== bytes) throw new Error(`got ${n} bytes of ${bytes}`);
}

/** One byte typed into `cat` on a terminal until its echo comes back (the terminal echoes too). */
async function keystrokes(p: InstanceProcess, rounds: number, into: number[]): Promise<void> {
  let seen = '';
  let waiter: (() => void) | undefined;
  p.stdout.on('data', (d: Buffer) => {
    seen += d.toString('latin1');
    waiter?.();
  });
  for (let i = 0; i < rounds; i++) {
    const key = String.fromCharCode(97 + (i % 26));
    seen = '';
    const echoed = new Promise<void>((resolve) => (waiter = () => seen.includes(key) && resolve()));
    const t = performance.now();
    p.stdin.write(key);
    await echoed;
    into.push(performance.now() - t);
  }
  p.kill('SIGKILL');
  await p.exit;
}

export async function main(opts: { quick: boolean }): Promise<Record<string, Stats | string>> {
  const n = opts.quick ? 5 : 30;
  const big = opts.quick ? 10 * MiB : 100 * MiB;
  const dir = mkdtempSync(path.join(os.tmpdir(), 'lxq-bench-vm-agent-'));
  const host = await Host.open({ path: dir, images: process.env.LXQ_TEST_IMAGES ?? '/var/tmp/lxq-test-images', reap: true });
  const s: Record<string, number[]> = {};
  const series = (k: string) => (s[k] ??= []);
  const instances: Instance[] = [];
  try {
    await host.images.ensure('vm/default');
    await host.images.ensure('busybox');
    const vm = await host.create(`bva-${process.pid}`, { type: 'vm', image: 'vm/default', config: { 'limits.cpu': '2', 'limits.memory': '512MiB' } });
    instances.push(vm);
    const ct = await host.create(`bca-${process.pid}`, { image: 'busybox' });
    instances.push(ct);
    await vm.start();
    await ct.start();
    await vm.wait({ for: 'agent', timeout: 120_000 });
    const qga = new GuestAgent(path.join(host.instancesDir, vm.name, 'qga.sock'), vm.name);
    await qga.wait(120_000);
    const env = checkSpawn(['x'], {}, {});

    for (let i = 0; i < n; i++) {
      await timed(series('exec /bin/true: lxq agent'), () => vm.exec(['/bin/true']));
      await timed(series('exec /bin/true: qemu-ga'), async () => collect(await agentSpawn(qga, ['/bin/true'], env, undefined, undefined), {}, 'true'));
      await timed(series('exec /bin/true: container'), () => ct.exec(['/bin/true']));
    }
    const rounds = opts.quick ? 1 : 3;
    const head = (bytes: number) => ['head', '-c', String(bytes), '/dev/zero'];
    for (let i = 0; i < rounds; i++) {
      await timed(series(`${big / MiB} MiB out: lxq agent`), async () => drain(await vm.spawn(head(big)), big));
      await timed(series(`10 MiB out: qemu-ga`), async () => drain(await agentSpawn(qga, head(10 * MiB), env, undefined, undefined), 10 * MiB));
      await timed(series(`${big / MiB} MiB out: container`), async () => drain(await ct.spawn(head(big)), big));
    }
    const qgaFiles = new AgentFiles(qga, async () => undefined);
    const file = (bytes: number) => {
      const f = path.join(dir, `in-${bytes}`);
      writeFileSync(f, Buffer.alloc(bytes, 7));
      return f;
    };
    const [bigFile, smallFile] = [file(big), file(10 * MiB)];
    const out = path.join(dir, 'out');
    for (let i = 0; i < rounds; i++) {
      await timed(series(`${big / MiB} MiB push: lxq agent`), () => vm.files.push(bigFile, '/tmp/f'));
      await timed(series(`${big / MiB} MiB pull: lxq agent`), () => vm.files.pull('/tmp/f', out));
      await vm.files.remove('/tmp/f');
      await timed(series('10 MiB push: qemu-ga'), () => qgaFiles.push(smallFile, '/tmp/g'));
      await timed(series('10 MiB pull: qemu-ga'), () => qgaFiles.pull('/tmp/g', out));
      await vm.files.remove('/tmp/g');
      await timed(series(`${big / MiB} MiB push: container`), () => ct.files.push(bigFile, '/tmp/f'));
      await timed(series(`${big / MiB} MiB pull: container`), () => ct.files.pull('/tmp/f', out));
      await ct.files.remove('/tmp/f');
    }
    await keystrokes(await vm.spawn(['cat'], { pty: true }), n, series('keystroke round trip (pty): lxq agent'));
    await keystrokes(await ct.spawn(['cat'], { pty: true }), n, series('keystroke round trip (pty): container'));
    qga.close();
  } finally {
    for (const i of instances) await i.delete({ force: true }).catch(() => undefined);
    rmSync(dir, { recursive: true, force: true });
  }
  return Object.fromEntries(Object.entries(s).map(([k, v]) => [k, stats(v)]));
}

if (require.main === module) {
  main({ quick: process.argv.includes('--quick') }).then(
    (res) => {
      printStatsTable(`Commands in a VM (vm/default) and a container (${os.cpus().length} CPUs, ${os.cpus()[0].model}, Node ${process.version}), ms`, 'what', res);
    },
    (e) => {
      console.error(e);
      process.exit(1);
    },
  );
}
