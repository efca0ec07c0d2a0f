/**
 * The lxq agent shared between processes (lxq-agent-broker.ts), on the host: the real agent
 * binary serving a unix socket (`--listen`, one client at a time, as QEMU's port), a link
 * holding it with a running `cat`, and `exec /bin/true` timed side by side through the holder's
 * own connection and through a second link that reaches it by lxq-mux.sock (the relay path a
 * second process takes). No VM: what is measured is the relay's cost.
 * Usage: node dist/bench/agent-broker.js [--runs N]
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';

import { LxqAgentLink } from '../lib/drivers/vm/lxq-agent-link';
import { buildLxqAgent } from '../lib/images/lxq-agent-binary';
import { checkSpawn, collect } from '../lib/instance/process';
import { printStatsTable, type Stats, stats } from './stats';

const ENV = checkSpawn(['x'], {}, {});

async function listening(socket: string): Promise<void> {
  for (let i = 0; i < 1000; i++) {
    const ok = await new Promise<boolean>((resolve) => {
      const probe = net.createConnection({ path: socket }, () => resolve(true)).once('error', () => resolve(false));
      probe.once('connect', () => probe.destroy());
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error('the agent did not listen');
}

export async function main(runs: number): Promise<Record<string, Stats | string>> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'lxq-bench-broker-'));
  const binary = path.join(dir, 'lxq-agent');
  const socket = path.join(dir, 'agent.sock');
  const mux = path.join(dir, 'mux.sock');
  const load = [os.loadavg().map((l) => l.toFixed(1)).join(' ')];
  await buildLxqAgent(binary);
  const agent = spawn(binary, ['--listen', socket], { stdio: 'ignore' });
  const holder = new LxqAgentLink(socket, 'holder', mux);
  const other = new LxqAgentLink(socket, 'other', mux);
  const s: Record<string, number[]> = { 'exec /bin/true, holder (its own connection)': [], 'exec /bin/true, second link (relayed by lxq-mux.sock)': [] };
  try {
    await listening(socket);
    const held = await holder.spawn(['cat'], { env: ENV }, 10_000);
    const time = async (link: LxqAgentLink, into: number[]) => {
      const t = performance.now();
      await collect(await link.spawn(['/bin/true'], { env: ENV }, 10_000), {}, 'true');
      into.push(performance.now() - t);
    };
    for (let i = 0; i < runs; i++) {
      await time(holder, s['exec /bin/true, holder (its own connection)']);
      await time(other, s['exec /bin/true, second link (relayed by lxq-mux.sock)']);
    }
    held.stdin.end();
    await held.exit;
  } finally {
    other.close();
    holder.close();
    agent.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  }
  load.push(os.loadavg().map((l) => l.toFixed(1)).join(' '));
  const out: Record<string, Stats | string> = { 'load average (1, 5, 15 min) at start / end': load.join(' / ') };
  for (const [k, v] of Object.entries(s)) out[k] = stats(v);
  return out;
}

if (require.main === module) {
  const at = process.argv.indexOf('--runs');
  main(at > 0 ? Number(process.argv[at + 1]) : 200).then(
    (res) => printStatsTable(`lxq agent on the host, direct and relayed (${os.cpus().length} CPUs, Node ${process.version}), ms`, 'step', res),
    (e) => {
      console.error(e);
      process.exit(1);
    },
  );
}
