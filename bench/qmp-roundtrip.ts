/**
 * QMP benchmark against one real QEMU (-machine none, no guest):
 *  1. `query-status` round trip over one socket, QmpClient vs a minimal raw client (write the JSON
 *     line, read one line), interleaved in rounds so all see the same machine noise. The raw client
 *     runs twice: without an "id" (the least possible) and with one (the bytes QmpClient sends):
 *     QEMU 7.2's monitor reads its socket one byte per syscall, so every byte of a request costs
 *     (~8 µs here) and the id alone is most of the difference;
 *  2. launch-to-QMP-ready: spawn QEMU, connect + greeting + qmp_capabilities.
 *
 * QEMU serves one client per QMP socket, so it gets one -qmp socket per client.
 * Run: tsc -p . --outDir /tmp/qmpbench && NODE_PATH=$PWD/node_modules node /tmp/qmpbench/bench/qmp-roundtrip.js [--quick]
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { QmpClient } from '../lib/qmp';
import { Stats, stats } from './stats';

export interface QmpBenchResult {
  roundTrip: {
    qmpClient: Stats;
    raw: Stats;
    rawWithId: Stats;
    /** QmpClient / raw (no id), p50 and min. */
    ratioP50: number;
    ratioMin: number;
    /** QmpClient / raw with an id: the library's own overhead. */
    ratioWithIdP50: number;
  };
  launchToReady: Stats;
}

const ms = (t0: bigint) => Number(process.hrtime.bigint() - t0) / 1e6;
const fmt = (x: number) => x.toFixed(3);

function spawnQemu(dir: string, sockets: string[]): ChildProcess {
  const args = ['-machine', 'none', '-nodefaults', '-no-user-config', '-display', 'none'];
  for (const s of sockets) args.push('-qmp', `unix:${s},server=on,wait=off`);
  return spawn('qemu-system-x86_64', args, { stdio: 'ignore', cwd: dir });
}

/** The least a client can do: one socket, one line out, one line back. */
class RawClient {
  private buf = '';
  private waiting?: (line: string) => void;
  private lines: string[] = [];

  private constructor(private readonly socket: net.Socket) {
    socket.setEncoding('utf8');
    socket.on('data', (d: string) => {
      this.buf += d;
      let nl: number;
      while ((nl = this.buf.indexOf('\n')) >= 0) {
        const line = this.buf.slice(0, nl);
        this.buf = this.buf.slice(nl + 1);
        const w = this.waiting;
        this.waiting = undefined;
        if (w) w(line);
        else this.lines.push(line);
      }
    });
  }

  static async connect(file: string): Promise<RawClient> {
    const socket = net.createConnection({ path: file });
    await once(socket, 'connect');
    const c = new RawClient(socket);
    await c.readLine(); // greeting
    await c.call('{"execute":"qmp_capabilities"}\n');
    return c;
  }

  readLine(): Promise<string> {
    const l = this.lines.shift();
    return l !== undefined ? Promise.resolve(l) : new Promise((r) => (this.waiting = r));
  }

  call(line: string): Promise<string> {
    this.socket.write(line);
    return this.readLine();
  }

  close(): void {
    this.socket.destroy();
  }
}

async function roundTrip(dir: string, n: number): Promise<QmpBenchResult['roundTrip']> {
  const socks = ['a', 'b', 'c'].map((x) => path.join(dir, `${x}.sock`));
  const proc = spawnQemu(dir, socks);
  try {
    const client = await QmpClient.connect(socks[0], { timeout: 10_000, retry: true });
    const raw = await RawClient.connect(socks[1]);
    const rawId = await RawClient.connect(socks[2]);
    let seq = 0;
    const contenders: [string, () => Promise<unknown>][] = [
      ['qmpClient', () => client.execute('query-status')],
      ['raw', () => raw.call('{"execute":"query-status"}\n')],
      ['rawWithId', () => rawId.call(`{"execute":"query-status","id":"${(++seq).toString(36)}"}\n`)],
    ];
    const samples = new Map<string, number[]>(contenders.map(([name]) => [name, []]));
    const round = 100;
    const warmRounds = 2;
    for (let r = 0; r < warmRounds + Math.ceil(n / round); r++) {
      for (const [name, call] of contenders) {
        for (let i = 0; i < round; i++) {
          const t0 = process.hrtime.bigint();
          const reply = await call();
          if (r >= warmRounds) samples.get(name)!.push(ms(t0));
          if (typeof reply === 'string' && !reply.includes('"running"')) throw new Error(`raw client got ${reply}`);
        }
      }
    }
    await client.close();
    raw.close();
    rawId.close();
    const [qmpClient, rawStats, rawWithId] = contenders.map(([name]) => stats(samples.get(name)!));
    return {
      qmpClient,
      raw: rawStats,
      rawWithId,
      ratioP50: qmpClient.p50 / rawStats.p50,
      ratioMin: qmpClient.min / rawStats.min,
      ratioWithIdP50: qmpClient.p50 / rawWithId.p50,
    };
  } finally {
    proc.kill('SIGKILL');
  }
}

async function launchToReady(dir: string, launches: number): Promise<Stats> {
  const times: number[] = [];
  for (let i = 0; i < launches; i++) {
    const sock = path.join(dir, `launch${i}.sock`);
    const t0 = process.hrtime.bigint();
    const proc = spawnQemu(dir, [sock]);
    try {
      const client = await QmpClient.connect(sock, { timeout: 10_000, retry: true });
      times.push(ms(t0));
      const exited = once(proc, 'exit');
      await client.execute('quit');
      await exited;
    } finally {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
    }
  }
  return stats(times);
}

export async function main(opts: { quick: boolean } = { quick: false }): Promise<QmpBenchResult> {
  const n = opts.quick ? 200 : 2000;
  const launches = opts.quick ? 3 : 10;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lxq-qmpbench-'));
  try {
    const rt = await roundTrip(dir, n);
    const launch = await launchToReady(dir, launches);
    const row = (name: string, s: Stats) =>
      `${name.padEnd(24)} n=${String(s.n).padEnd(5)} min ${fmt(s.min)}  p50 ${fmt(s.p50)}  p99 ${fmt(s.p99)}  mean ${fmt(s.mean)} ms`;
    console.log(`QMP query-status round trip (one socket, interleaved rounds of 100), ${os.cpus()[0]?.model}, node ${process.version}`);
    console.log(row('QmpClient', rt.qmpClient));
    console.log(row('raw net client', rt.raw));
    console.log(row('raw net client + id', rt.rawWithId));
    console.log(`ratio QmpClient/raw: p50 ${rt.ratioP50.toFixed(2)}x, min ${rt.ratioMin.toFixed(2)}x; ` +
      `QmpClient/raw+id: p50 ${rt.ratioWithIdP50.toFixed(2)}x`);
    console.log(row('launch -> QMP ready', launch));
    return { roundTrip: rt, launchToReady: launch };
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

if (require.main === module) {
  main({ quick: process.argv.includes('--quick') }).catch((err) => {
    console.error(err);
    process.exit(1);
  });
}
