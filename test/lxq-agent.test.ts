/**
 * The lxq guest agent and its host client, on the host itself: the real agent binary (compiled
 * from native/agent/ into this test's temp dir) serving a unix socket (`--listen`), real
 * commands. The VM path differs only in the byte pipe (a virtio-serial port).
 * A fake agent (a plain socket server) is used only for what the real one never sends: malformed
 * and oversized frames.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';

import { InvalidState, Timeout } from '../lib/core/errors';
import { VmInstance, type VmState } from '../lib/drivers/vm/vm';
import { LxqAgentClient } from '../lib/drivers/vm/lxq-agent';
import { LxqAgentLink } from '../lib/drivers/vm/lxq-agent-link';
import { agentRequest, LxqAgentFiles } from '../lib/drivers/vm/lxq-agent-files';
import { LxqAgentLost, LxqAgentProtocolError, Op, VERSION } from '../lib/drivers/vm/lxq-agent-protocol';
import { buildLxqAgent } from '../lib/images/lxq-agent-binary';
import { checkSpawn, collect, InstanceProcess } from '../lib/instance/process';
import type { Network } from '../lib';
import { runNode, SHARED_IMAGES, tempHost, TestHost } from './helpers/host';

jest.setTimeout(120_000);

const ENV = checkSpawn(['x'], {}, {});

let dir: string;
let binary: string;
const agents: ChildProcess[] = [];
const clients: LxqAgentClient[] = [];
/** Host pids of commands an agent killed mid-test would leave running. */
const strays: number[] = [];

beforeAll(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lxq-agent-test-'));
  binary = path.join(dir, 'lxq-agent');
  await buildLxqAgent(binary);
});

afterAll(() => {
  for (const c of clients) c.close();
  for (const a of agents) if (a.exitCode === null && a.signalCode === null) a.kill('SIGKILL');
  for (const pid of strays) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      /* already gone */
    }
  }
  fs.rmSync(dir, { recursive: true, force: true });
});

let serial = 0;
/** Starts a real agent on a new socket; resolves with the socket's path once it listens. */
async function startAgent(): Promise<{ socket: string; agent: ChildProcess }> {
  const socket = path.join(dir, `agent-${serial++}.sock`);
  const agent = spawn(binary, ['--listen', socket], { stdio: ['ignore', 'inherit', 'inherit'] });
  agents.push(agent);
  // The file appears at bind(), a moment before listen(): wait until a connection is taken.
  for (let i = 0; i < 500; i++) {
    const listening = await new Promise<boolean>((resolve) => {
      const probe = net.createConnection({ path: socket }, () => resolve(true)).once('error', () => resolve(false));
      probe.once('connect', () => probe.destroy());
    });
    if (listening) return { socket, agent };
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error('the agent did not listen');
}

async function connect(target: string | net.Socket): Promise<LxqAgentClient> {
  const c = await LxqAgentClient.connect(target, { timeout: 10_000 });
  clients.push(c);
  return c;
}

/** Reads `stream` until `pattern` has appeared in what it gave. */
function until(stream: NodeJS.ReadableStream, pattern: RegExp): Promise<string> {
  let seen = '';
  return new Promise((resolve, reject) => {
    const onData = (d: Buffer) => {
      seen += d.toString();
      if (pattern.test(seen)) {
        stream.off('data', onData);
        resolve(seen);
      }
    };
    stream.on('data', onData);
    stream.once('end', () => reject(new Error(`stream ended before ${pattern}: ${JSON.stringify(seen)}`)));
  });
}

function rejection(p: Promise<unknown>): Promise<any> {
  return p.then(
    (v) => {
      throw new Error(`expected a rejection, got ${JSON.stringify(v)}`);
    },
    (e) => e,
  );
}


/** Resolves once `pid` has exited (a zombie counts: its parent reaps it), or fails after `ms`. */
async function gone(pid: number, ms: number): Promise<void> {
  const deadline = Date.now() + ms;
  for (;;) {
    const stat = await fs.promises.readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '');
    if (!stat || / Z /.test(stat.slice(stat.lastIndexOf(')')))) return;
    if (Date.now() > deadline) throw new Error(`process ${pid} still runs after ${ms} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe('lxq agent on the host (real agent, --listen)', () => {
  let client: LxqAgentClient;
  beforeAll(async () => {
    client = await connect((await startAgent()).socket);
  });

  const run = (argv: string[], opts: Parameters<LxqAgentClient['spawn']>[1] = { env: ENV }, exec: Parameters<typeof collect>[1] = {}) =>
    client.spawn(argv, opts).then((p) => collect(p, exec, argv[0]));

  test('output streams while the command runs, stdin is streamed to it', async () => {
    const p = await client.spawn(['sh', '-c', 'echo first; read x; echo "second $x"; read y; echo "third $y"'], { env: ENV });
    expect(p.pid).toBeGreaterThan(0);
    const out = until(p.stdout, /first\n/);
    expect(await out).toBe('first\n');
    p.stdin.write('one\n');
    const rest = until(p.stdout, /third two\n/);
    expect(await until(p.stdout, /second one\n/)).toBe('second one\n');
    p.stdin.end('two\n');
    await rest;
    expect(await p.exit).toEqual({ exitCode: 0, signal: null });
  });

  test('stdout and stderr apart, the exit code, env, cwd, user and group', async () => {
    const env = checkSpawn(['x'], { env: { GREETING: 'hi there' }, user: 1000 }, {});
    const r = await run(['sh', '-c', 'echo "$GREETING"; pwd; id -u; id -g; id -G; echo oops >&2; exit 3'], { env, cwd: '/tmp', user: 1000, group: 1001 });
    expect(r.stdout.toString()).toBe('hi there\n/tmp\n1000\n1001\n1001\n');
    expect(r.stderr.toString()).toBe('oops\n');
    expect(r.exitCode).toBe(3);
    expect(r.signal).toBeNull();
  });

  test('no cwd: the HOME of the environment; a missing command exits 127, a bad cwd 126', async () => {
    expect((await run(['pwd'])).stdout.toString()).toBe('/root\n');
    const missing = await run(['no-such-command-here']);
    expect(missing.exitCode).toBe(127);
    expect(missing.stderr.toString()).toBe('lxq: cannot run no-such-command-here: No such file or directory\n');
    const badCwd = await run(['pwd'], { env: ENV, cwd: '/no/such/dir' });
    expect(badCwd.exitCode).toBe(126);
    expect(badCwd.stderr.toString()).toMatch(/^lxq: cannot change to directory \/no\/such\/dir: No such file/);
  });

  test('signals: death by a signal is reported as such', async () => {
    const p = await client.spawn(['sleep', '30'], { env: ENV });
    expect(p.kill('SIGTERM')).toBe(true);
    expect(await p.exit).toEqual({ exitCode: null, signal: 'SIGTERM' });
    expect(p.kill('SIGKILL')).toBe(false);
    const q = await client.spawn(['sh', '-c', 'trap "echo got USR1; exit 7" USR1; echo ready; while :; do sleep 0.05; done'], { env: ENV });
    await until(q.stdout, /ready/);
    q.kill('SIGUSR1');
    expect(await q.exit).toEqual({ exitCode: 7, signal: null });
  });

  test('a terminal: tty, its size, resize, stderr merged; resize without one is InvalidState', async () => {
    const r = await run(['sh', '-c', 'tty; stty size; echo to-stderr >&2'], { env: ENV, pty: { cols: 100, rows: 30 } });
    expect(r.stdout.toString()).toMatch(/^\/dev\/pts\/\d+\r\n30 100\r\nto-stderr\r\n$/);
    expect(r.stderr.length).toBe(0);

    const p = await client.spawn(['sh', '-c', 'read x; stty size'], { env: ENV, pty: { cols: 80, rows: 24 } });
    expect(p.tty).toBe(true);
    p.resize(132, 43);
    const size = until(p.stdout, /43 132/);
    p.stdin.write('\n');
    await size;
    expect(await p.exit).toEqual({ exitCode: 0, signal: null });

    const plain = await client.spawn(['true'], { env: ENV });
    expect(() => plain.resize(80, 24)).toThrow(InvalidState);
    await plain.exit;
  });

  test('job control on the terminal: ^C reaches the foreground job, not the shell', async () => {
    const p = await client.spawn(['sh', '-i'], { env: [...ENV, 'PS1=$ '], pty: { cols: 80, rows: 24 } });
    // ^C once the job holds the terminal (its child prints the marker after the shell gave it the
    // terminal): sent earlier, it would reach the shell instead. The shell then runs the next line
    // (typed ahead: its output follows the next prompt).
    const started = until(p.stdout, /started\r?\n/); // its own line, or after a prompt the echo came before
    p.stdin.write(`sh -c "echo st''arted; exec sleep 30"; echo not-interrupted\n`);
    await started;
    const after = until(p.stdout, /after-3\r?\n/);
    p.stdin.write('\x03');
    p.stdin.write('echo after-$((1+2))\n');
    expect(await after).not.toMatch(/^not-interrupted/m);
    p.stdin.write('exit 5\n');
    expect(await p.exit).toEqual({ exitCode: 5, signal: null });
  });

  test('output of any size arrives whole; a consumer that does not read holds the agent back', async () => {
    const bytes = 40 * 1024 * 1024;
    const r = await run(['sh', '-c', `head -c ${bytes} /dev/zero | tr '\\0' x; seq 1 100000 >&2`]);
    expect(r.stdout.length).toBe(bytes);
    expect(r.stdout.equals(Buffer.alloc(bytes, 'x'))).toBe(true);
    expect(r.stderr.toString()).toBe(Array.from({ length: 100000 }, (_, i) => `${i + 1}\n`).join(''));

    // Flow control: `yes` writes forever; nobody reads its stdout, so what the host holds stays
    // at most the agent's window plus the stream's own buffer.
    const p = await client.spawn(['yes'], { env: ENV });
    let received = 0;
    await new Promise<void>((resolve) =>
      p.stdout.once('data', (d: Buffer) => {
        received = d.length;
        p.stdout.pause();
        resolve();
      }),
    );
    await new Promise((r) => setTimeout(r, 1500)); // time for the agent to overrun its window, if it would
    const held = p.stdout.readableLength + received;
    expect(held).toBeGreaterThan(0);
    expect(held).toBeLessThanOrEqual(256 * 1024 + 64 * 1024 + 32 * 1024);
    p.kill('SIGKILL');
    p.stdout.resume();
    expect(await p.exit).toEqual({ exitCode: null, signal: 'SIGKILL' });
  });

  test('stdin of any size is streamed through (and acknowledged as it is written)', async () => {
    const input = Buffer.alloc(8 * 1024 * 1024, 'abcdefgh');
    const r = await run(['sh', '-c', 'wc -c; sleep 0'], { env: ENV }, { stdin: input });
    expect(r.stdout.toString().trim()).toBe(String(input.length));
    expect(r.exitCode).toBe(0);
  });

  test('many commands at once', async () => {
    const results = await Promise.all(Array.from({ length: 24 }, (_, i) => run(['sh', '-c', `sleep 0.$((${i} % 5)); echo "n=${i}"; echo "e=${i}" >&2; exit ${i}`])));
    results.forEach((r, i) => {
      expect(r.stdout.toString()).toBe(`n=${i}\n`);
      expect(r.stderr.toString()).toBe(`e=${i}\n`);
      expect(r.exitCode).toBe(i);
    });
  });

  test('exec with a timeout kills the command: Timeout', async () => {
    const e = await rejection(run(['sleep', '30'], { env: ENV }, { timeout: 300 }));
    expect(e).toBeInstanceOf(Timeout);
  });

  test('a ping is answered', async () => {
    await client.ping(5_000);
  });

  test('a program with nothing else pending stays alive for its command (the idle connection does not hold it)', async () => {
    const { socket } = await startAgent();
    const script = `
      const { LxqAgentClient } = require(${JSON.stringify(path.resolve(__dirname, '../lib/drivers/vm/lxq-agent'))});
      const { collect, checkSpawn } = require(${JSON.stringify(path.resolve(__dirname, '../lib/instance/process'))});
      (async () => {
        const c = await LxqAgentClient.connect(${JSON.stringify(socket)});
        await new Promise((r) => setTimeout(r, 100));
        const r = await collect(await c.spawn(['sh', '-c', 'sleep 0.5; echo alive'], { env: checkSpawn(['x'], {}, {}) }), {}, 'sh');
        process.stdout.write(r.stdout);
      })();`;
    const out = await new Promise<string>((resolve, reject) => {
      const child = spawn(process.execPath, ['-r', path.resolve(__dirname, 'helpers/ts-register.js'), '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
      let text = '';
      child.stdout.on('data', (d: Buffer) => (text += d.toString()));
      child.once('error', reject);
      child.once('close', () => resolve(text));
    });
    expect(out).toBe('alive\n');
  });
});

describe('lxq agent: faults', () => {
  test('an agent killed mid-command: the exec rejects with LxqAgentLost within 2 s; a new agent serves the next', async () => {
    const { socket, agent } = await startAgent();
    const client = await connect(socket);
    const p = await client.spawn(['sleep', '30'], { env: ENV });
    strays.push(p.pid);
    const exec = collect(p, {}, 'sleep');
    const started = Date.now();
    agent.kill('SIGKILL');
    const e = await rejection(exec);
    expect(e).toBeInstanceOf(LxqAgentLost);
    expect(Date.now() - started).toBeLessThan(2_000);
    expect(client.connected).toBe(false);
    await expect(client.spawn(['true'], { env: ENV })).rejects.toBeInstanceOf(LxqAgentLost);

    const again = await connect((await startAgent()).socket);
    const ok = await collect(await again.spawn(['echo', 'back'], { env: ENV }), {}, 'echo');
    expect(ok.stdout.toString()).toBe('back\n');
  });

  test('a short wait and a long one connecting at once (state() and an exec after a start): the deadline of the short one does not end the long one', async () => {
    const { socket } = await startAgent();
    // QEMU takes the connection at once and the guest's agent answers once it is up: here, a
    // front that holds connections silent for 1.5 s, then passes them to the real agent.
    let up = false;
    const held: net.Socket[] = [];
    const front = path.join(dir, `front-${serial++}.sock`);
    const server = net.createServer((c) => {
      c.on('error', () => undefined);
      if (!up) return void held.push(c);
      const agent = net.createConnection({ path: socket }).on('error', () => c.destroy());
      c.pipe(agent).pipe(c);
    });
    await new Promise<void>((r) => server.listen(front, r));
    const timer = setTimeout(() => (up = true), 1500);
    const link = new LxqAgentLink(front, 'late');
    try {
      const short = link.connect(1000).then(() => 'connected', (e: Error) => e);
      const long = link.connect(30_000);
      expect(await short).toBeInstanceOf(InvalidState);
      expect((await long).connected).toBe(true);
    } finally {
      clearTimeout(timer);
      link.close();
      for (const c of held) c.destroy();
      server.close();
    }
  });

  test('leftovers of an earlier session before the handshake are skipped (both ways)', async () => {
    const { socket } = await startAgent();
    const raw = net.createConnection({ path: socket });
    await new Promise((r) => raw.once('connect', r));
    // A partial frame and garbage from "another process", then our client's HELLO on the same stream.
    raw.write(Buffer.concat([Buffer.from([0, 0, 0, 40, 0, 0, 0, 7, 18, 0]), Buffer.from('garbage'.repeat(10))]));
    const client = await connect(raw);
    const r = await collect(await client.spawn(['echo', 'synced'], { env: ENV }), {}, 'echo');
    expect(r.stdout.toString()).toBe('synced\n');
  });

  test('a host frame over the maximum: the agent ends the session with ERROR and serves the next one', async () => {
    const { socket, agent } = await startAgent();
    const client = await connect(socket);
    const p = await client.spawn(['sleep', '30'], { env: ENV });
    strays.push(p.pid);
    // Reach past the client (which never sends such a frame) to its socket.
    const raw = (client as unknown as { socket: net.Socket }).socket;
    const header = Buffer.alloc(12);
    header.writeUInt32BE(1 << 30, 0);
    header.writeUInt32BE(1, 4);
    header.writeUInt8(18, 8);
    raw.write(header);
    const e = await rejection(p.exit);
    expect(e).toBeInstanceOf(LxqAgentProtocolError);
    expect(e.message).toMatch(/frame over the maximum size/);
    expect(agent.exitCode).toBeNull();
    // Its command was killed with the session (and reaped by the agent, however long that takes under load).
    await gone(p.pid, 30_000);
    const next = await connect(socket);
    expect((await collect(await next.spawn(['echo', 'ok'], { env: ENV }), {}, 'echo')).stdout.toString()).toBe('ok\n');
  });
});

describe('lxq agent client against a hostile agent (fake: frames the real agent never sends)', () => {
  let server: net.Server;
  let socketPath: string;
  let behave: (peer: net.Socket, hello: Buffer) => void;

  beforeAll(async () => {
    socketPath = path.join(dir, 'fake.sock');
    server = net.createServer((peer) => {
      let got = Buffer.alloc(0);
      peer.on('error', () => undefined);
      peer.on('data', function first(d: Buffer) {
        got = Buffer.concat([got, d]);
        if (got.length < 36) return;
        peer.off('data', first);
        behave(peer, got.subarray(12, 36));
      });
    });
    await new Promise<void>((r) => server.listen(socketPath, r));
  });
  afterAll(() => server.close());

  /** The agent's HELLO answering the host's. */
  function hello(hostHello: Buffer, window = 256 * 1024): Buffer {
    const b = Buffer.alloc(40);
    b.writeUInt32BE(28, 0);
    b.writeUInt8(1, 8);
    b.write('LXQAGENT', 12);
    b.writeUInt16BE(VERSION, 20);
    b.writeUInt32BE(256 * 1024, 24);
    b.writeUInt32BE(window, 28);
    hostHello.copy(b, 32, 16, 24);
    return b;
  }
  function frameOf(type: number, channel: number, payload: Buffer, length = payload.length): Buffer {
    const h = Buffer.alloc(12);
    h.writeUInt32BE(length, 0);
    h.writeUInt32BE(channel, 4);
    h.writeUInt8(type, 8);
    return Buffer.concat([h, payload]);
  }
  const started = (channel: number) => frameOf(17, channel, Buffer.from([0, 0, 0, 42]));

  async function spawnAgainst(respond: (peer: net.Socket) => void): Promise<{ client: LxqAgentClient; proc: InstanceProcess }> {
    behave = (peer, h) => {
      peer.write(hello(h));
      peer.once('data', () => {
        peer.write(started(1));
        setTimeout(() => respond(peer), 20);
      });
    };
    const client = await connect(socketPath);
    const proc = await client.spawn(['anything'], { env: ENV });
    expect(proc.pid).toBe(42);
    return { client, proc };
  }

  test('an oversized frame: LxqAgentProtocolError, the connection closed, nothing buffered', async () => {
    const { client, proc } = await spawnAgainst((peer) => peer.write(frameOf(19, 1, Buffer.alloc(0), 0xfffffff0)));
    const e = await rejection(proc.exit);
    expect(e).toBeInstanceOf(LxqAgentProtocolError);
    expect(e.message).toMatch(/a frame of 4294967280 bytes/);
    expect(client.connected).toBe(false);
  });

  test('an unknown frame type, output past the window, a frame for no command: LxqAgentProtocolError', async () => {
    for (const [bad, words] of [
      [frameOf(99, 1, Buffer.alloc(3)), /unknown frame type 99/],
      // Nobody reads stdout, so nothing past the stream's own buffer is acknowledged.
      [Buffer.concat(Array.from({ length: 12 }, () => frameOf(19, 1, Buffer.alloc(32 * 1024)))), /stdout past its window/],
      [frameOf(20, 77, Buffer.from('x')), /no running command/],
      [frameOf(24, 1, Buffer.alloc(3)), /malformed or second EXIT/],
    ] as const) {
      const { proc } = await spawnAgainst((peer) => peer.write(bad));
      const e = await rejection(proc.exit);
      expect(e).toBeInstanceOf(LxqAgentProtocolError);
      expect(e.message).toMatch(words);
    }
  });

  test('a file read flooded past its window, or a stat of the wrong size: typed errors, nothing held', async () => {
    const against = async (reply: Buffer) => {
      behave = (peer, h) => {
        peer.write(hello(h));
        peer.once('data', () => peer.write(reply));
      };
      return connect(socketPath);
    };
    // Nobody acknowledges (the sink never returns), so 12 frames of 32 KiB pass the 256 KiB window.
    const flood = Buffer.concat(Array.from({ length: 12 }, () => frameOf(33, 1, Buffer.alloc(32 * 1024))));
    const client = await against(flood);
    const read = agentRequest(client, { op: Op.Read, rel: 'x' }, '/x', { sink: () => new Promise<void>(() => undefined) });
    const e = await rejection(read);
    expect(e).toBeInstanceOf(LxqAgentProtocolError);
    expect(e.message).toMatch(/DATA past its window/);
    expect(client.connected).toBe(false);

    const other = await against(frameOf(34, 1, Buffer.alloc(7)));
    const files = new LxqAgentFiles(async () => other);
    await expect(files.stat('/x')).rejects.toThrow(/the lxq agent's stat has 7 bytes/);
  });

  test('an agent that never answers the handshake: Timeout', async () => {
    behave = () => undefined;
    const e = await rejection(LxqAgentClient.connect(socketPath, { timeout: 300 }));
    expect(e).toBeInstanceOf(Timeout);
  });
});

describe('lxq agent shared between processes (the port takes one client: its holder serves lxq-mux.sock)', () => {
  /** Runs `body` (an async function body with `link`, `collect`, `ENV` in scope) in another Node process; resolves with its stdout. */
  function otherProcess(socket: string, mux: string, body: string): Promise<string> {
    const script = `
      const { LxqAgentLink } = require(${JSON.stringify(path.resolve(__dirname, '../lib/drivers/vm/lxq-agent-link'))});
      const { collect, checkSpawn } = require(${JSON.stringify(path.resolve(__dirname, '../lib/instance/process'))});
      const ENV = checkSpawn(['x'], {}, {});
      const link = new LxqAgentLink(${JSON.stringify(socket)}, 'other', ${JSON.stringify(mux)});
      (async () => { ${body} })().catch((e) => { console.error(e); process.exit(1); });`;
    return new Promise<string>((resolve, reject) => {
      const child = spawn(process.execPath, ['-r', path.resolve(__dirname, 'helpers/ts-register.js'), '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
      let text = '';
      child.stdout.on('data', (d: Buffer) => (text += d.toString()));
      child.once('error', reject);
      child.once('close', (code) => (code === 0 ? resolve(text) : reject(new Error(`the other process exited ${code}: ${text}`))));
    });
  }

  test("a second process runs commands (stdin and output streamed past the window) and reads a file while the first's command holds the port; a peer that dies has its command killed; the holder gone, the next connects to the port", async () => {
    const { socket } = await startAgent();
    const mux = `${socket}.mux`;
    const holder = new LxqAgentLink(socket, 'holder', mux);
    try {
      const held = await holder.spawn(['cat'], { env: ENV }, 10_000);
      expect(fs.existsSync(mux)).toBe(true);
      // Output past the agent's window (acknowledgements relayed too), and a file read (a REQUEST).
      const file = path.join(dir, 'shared.txt');
      fs.writeFileSync(file, 'x'.repeat(100_000));
      const out = await otherProcess(socket, mux, `
        const { agentRequest } = require(${JSON.stringify(path.resolve(__dirname, '../lib/drivers/vm/lxq-agent-files'))});
        const p = await link.spawn(['sh', '-c', 'read x; echo "got $x"; head -c 600000 /dev/zero'], { env: ENV }, 30_000);
        p.stdin.end('hi\\n');
        const r = await collect(p, {}, 'sh');
        let read = 0;
        await agentRequest(await link.use(30_000), { op: 3, rel: ${JSON.stringify(file.slice(1))} }, ${JSON.stringify(file)}, { sink: (c) => void (read += c.length) });
        process.stdout.write(JSON.stringify([r.stdout.subarray(0, 7).toString(), r.stdout.length, r.exitCode, read]));
        link.close();`);
      expect(JSON.parse(out)).toEqual(['got hi\n', 7 + 600_000, 0, 100_000]);
      // The holder's command ran on all along, and still answers.
      const echoed = until(held.stdout, /still here/);
      held.stdin.write('still here\n');
      await echoed;

      // A peer that dies mid-command: its command is killed, as a session's end does.
      const pid = Number((await otherProcess(socket, mux, `
        const p = await link.spawn(['sleep', '1000'], { env: ENV }, 30_000);
        process.stdout.write(String(p.pid), () => process.exit(0));`)).trim());
      expect(pid).toBeGreaterThan(1);
      strays.push(pid);
      await gone(pid, 20_000);

      held.stdin.end();
      expect(await held.exit).toEqual({ exitCode: 0, signal: null });
    } finally {
      holder.close();
    }
    // The holder gave the port up: its broker is gone and the next process holds the port itself.
    for (let i = 0; fs.existsSync(mux); i++) {
      if (i > 500) throw new Error(`${mux} still there`);
      await new Promise((r) => setTimeout(r, 10));
    }
    expect(await otherProcess(socket, mux, `
      const r = await collect(await link.spawn(['echo', 'direct'], { env: ENV }, 30_000), {}, 'echo');
      process.stdout.write(r.stdout);
      link.close();`)).toBe('direct\n');
  });
});

describe('lxq agent in a VM (vm/default under QEMU): exec, spawn and terminals go through it', () => {
  let t: TestHost;
  let vm: VmInstance;
  let net: Network;
  beforeAll(async () => {
    t = await tempHost();
    await t.host.images.ensure('vm/default');
    // A NIC on a network of this file's own, named and sized by the agent (agent.nic_config).
    net = await t.host.networks.create(`lxqa${randomBytes(4).toString('hex')}`, { 'ipv4.nat': 'false' });
    vm = (await t.host.create(t.name('agent'), {
      type: 'vm',
      image: 'vm/default',
      config: { 'limits.cpu': '2', 'limits.memory': '256MiB', 'agent.nic_config': 'true' },
      devices: { net0: { type: 'nic', network: net.name, name: 'lan0', mtu: '1400', hwaddr: '00:16:3e:12:34:56' } },
    })) as VmInstance;
    await vm.start();
    await vm.waitForAgent(120_000);
  }, 600_000);
  afterAll(async () => {
    await t?.dispose();
  }, 120_000);

  test('state says the lxq agent serves; streamed output and stdin, user, cwd, env, exit codes', async () => {
    expect((await vm.state()).agent).toBe('lxq-agent');
    const p = await vm.spawn(['sh', '-c', 'echo first; read x; echo "got $x"; echo oops >&2; exit 3']);
    expect(await until(p.stdout, /first\n/)).toBe('first\n');
    const rest = until(p.stdout, /got hello\n/);
    p.stdin.end('hello\n');
    await rest;
    expect(await p.exit).toEqual({ exitCode: 3, signal: null });

    const r = await vm.exec(['sh', '-c', 'echo "$GREETING"; pwd; id -u; id -g'], { env: { GREETING: 'hi' }, cwd: '/tmp', user: 1000, group: 1000 });
    expect(r.stdout.toString()).toBe('hi\n/tmp\n1000\n1000\n');
    expect(r.exitCode).toBe(0);
    const missing = await vm.exec(['no-such-command']);
    expect(missing.exitCode).toBe(127);
    expect(missing.stderr.toString()).toMatch(/^lxq: cannot run no-such-command: No such file/);
  });

  test("the lxq CLI execs in the VM while this process's command holds the agent's port (through its lxq-mux.sock)", async () => {
    const held = await vm.spawn(['cat']);
    try {
      const r = await runNode(['-r', path.join(__dirname, 'helpers', 'ts-register.js'), path.join(__dirname, '..', 'lib', 'cli', 'main.ts'), '--host', t.dir, '--images', SHARED_IMAGES, 'exec', vm.name, '--', 'sh', '-c', 'hostname; cat /proc/sys/kernel/random/boot_id >/dev/null && echo ok']);
      expect([r.code, r.stdout, r.stderr]).toEqual([0, `${vm.name}\nok\n`, '']);
      const echoed = until(held.stdout, /still here/);
      held.stdin.write('still here\n');
      await echoed;
    } finally {
      held.stdin.end();
    }
    expect(await held.exit).toEqual({ exitCode: 0, signal: null });
  });

  test('a terminal in the VM: tty, size, resize; signals; 4 MiB of output whole', async () => {
    const r = await vm.exec(['sh', '-c', 'tty; stty size'], { pty: { cols: 100, rows: 30 } });
    expect(r.stdout.toString()).toMatch(/^\/dev\/pts\/\d+\r\n30 100\r\n$/);
    const p = await vm.spawn(['sh', '-c', 'read x; stty size'], { pty: true });
    p.resize(120, 40);
    const size = until(p.stdout, /40 120/);
    p.stdin.write('\n');
    await size;
    expect(await p.exit).toEqual({ exitCode: 0, signal: null });

    const s = await vm.spawn(['sleep', '60']);
    s.kill('SIGTERM');
    expect(await s.exit).toEqual({ exitCode: null, signal: 'SIGTERM' });

    const big = await vm.exec(['head', '-c', String(4 * 1024 * 1024), '/dev/urandom']);
    expect(big.stdout.length).toBe(4 * 1024 * 1024);
  });

  test("a terminal command's output arrives whole, up to its last byte (10 runs of 300 KiB)", async () => {
    // Local pty execs lost their tail when a reader stopped at POLLHUP (libuv); the agent reads
    // the terminal's master until EIO, and its frames come over a socket, not a tty stream.
    const bytes = 300 * 1024;
    const lengths: number[] = [];
    for (let i = 0; i < 10; i++) {
      const r = await vm.exec(['sh', '-c', `head -c ${bytes} /dev/zero | tr '\\0' x`], { pty: true, timeout: 300_000 });
      expect(r.exitCode).toBe(0);
      expect(r.stdout.equals(Buffer.alloc(r.stdout.length, 'x'))).toBe(true);
      lengths.push(r.stdout.length);
    }
    expect(lengths).toEqual(Array(10).fill(bytes));
  });

  test('files through the agent: 8 MiB both ways, owners, symlinks inside the guest; state from inside; agent.nic_config', async () => {
    const data = Buffer.alloc(8 * 1024 * 1024);
    for (let i = 0; i < data.length; i += 4) data.writeUInt32BE(i, i);
    await vm.files.write('/tmp/big.bin', data, { mode: 0o600, uid: 1000, gid: 1000 });
    expect((await vm.exec(['sh', '-c', 'stat -c "%s %a %u %g" /tmp/big.bin'])).stdout.toString()).toBe(`${data.length} 600 1000 1000\n`);
    expect((await vm.files.read('/tmp/big.bin')).equals(data)).toBe(true);
    await vm.exec(['ln', '-s', '/etc', '/tmp/etc-link']);
    expect((await vm.files.read('/tmp/etc-link/passwd')).toString()).toBe((await vm.exec(['cat', '/etc/passwd'])).stdout.toString());
    expect((await vm.files.read('/tmp/../../../etc/passwd')).length).toBeGreaterThan(0);
    expect((await vm.files.list('/tmp')).map((e) => e.name)).toEqual(expect.arrayContaining(['big.bin', 'etc-link']));

    const s = (await vm.state()) as VmState;
    expect(s.agent).toBe('lxq-agent');
    expect(s.processes).toBeGreaterThan(3);
    expect(s.guest!.memory.totalBytes).toBeGreaterThan(100 * 1024 * 1024);
    expect(s.guest!.disk.totalBytes).toBeGreaterThan(0);
    expect(s.network.interfaces.find((i) => i.name === 'lo')).toMatchObject({ mtu: 65536 });
    // agent.nic_config: the NIC's interface has the device's name and MTU.
    expect(s.network.interfaces.find((i) => i.hwaddr === '00:16:3e:12:34:56')).toMatchObject({ name: 'lan0', mtu: 1400 });
    expect((await vm.exec(['cat', '/sys/class/net/lan0/mtu'])).stdout.toString()).toBe('1400\n');
    // A NIC plugged live is named and sized too, before addDevice resolves.
    await vm.addDevice('net1', { type: 'nic', network: net.name, name: 'lan1', mtu: '1300' });
    expect((await vm.exec(['cat', '/sys/class/net/lan1/mtu'])).stdout.toString()).toBe('1300\n');
    await vm.removeDevice('net1');
  });

  test('file trees in and out of the VM (pullTree, pushTree over the agent): modes, owners, symlinks, empty dirs, mtimes', async () => {
    const when = new Date('2024-05-06T07:08:09Z');
    await vm.files.mkdir('/srv/src/nested', { parents: true, mode: 0o750, uid: 1000, gid: 1001 });
    await vm.files.mkdir('/srv/src/empty', { mode: 0o700 });
    await vm.files.write('/srv/src/nested/f.txt', 'deep\n', { mode: 0o600, uid: 33, gid: 44 });
    await vm.files.write('/srv/src/big.bin', Buffer.alloc(3 * 1024 * 1024, 'lxq'));
    await vm.files.symlink('/etc/passwd', '/srv/src/out', { uid: 7, gid: 8 });
    await vm.files.utimes('/srv/src/nested/f.txt', when, when);
    const tar = await vm.files.pullTree('/srv/src');
    await vm.files.pushTree('/srv/dst', tar);
    const manifest = async (root: string) => {
      const out: string[] = [];
      const walk = async (rel: string): Promise<void> => {
        for (const e of await vm.files.list(`${root}${rel}`)) {
          const st = await vm.files.stat(`${root}${rel}/${e.name}`);
          out.push(`${rel}/${e.name} ${st.type} ${st.mode.toString(8)} ${st.uid}:${st.gid} ${st.size}`);
          if (st.type === 'directory') await walk(`${rel}/${e.name}`);
        }
      };
      await walk('');
      return out;
    };
    expect(await manifest('/srv/dst')).toEqual(await manifest('/srv/src'));
    expect(await vm.files.readlink('/srv/dst/out')).toBe('/etc/passwd');
    expect((await vm.files.stat('/srv/dst/nested/f.txt')).mtime).toEqual(when);
    expect((await vm.files.read('/srv/dst/big.bin')).equals(Buffer.alloc(3 * 1024 * 1024, 'lxq'))).toBe(true);
  });

  test('the agent killed mid-transfer: the read rejects with LxqAgentLost within 2 s of its death; files work again once it is back', async () => {
    await vm.exec(['sh', '-c', `head -c ${64 * 1024 * 1024} /dev/zero > /tmp/huge`]);
    let diedAt = 0;
    let chunks = 0;
    const pid = (await vm.exec(['sh', '-c', 'pidof lxq-agent'])).stdout.toString().trim();
    const reading = agentRequest(await (vm as any).guest.lxqAgent.use(10_000), { op: Op.Read, rel: 'tmp/huge' }, '/tmp/huge', {
      sink: async () => {
        if (++chunks !== 4) return;
        // Killed from a command of its own (lost with it), mid-read.
        void vm.exec(['kill', '-9', pid]).catch(() => undefined);
        diedAt = Date.now();
      },
    });
    expect(await rejection(reading)).toBeInstanceOf(LxqAgentLost);
    expect(Date.now() - diedAt).toBeLessThan(2_000);
    await vm.files.write('/tmp/after', 'ok');
    expect((await vm.files.read('/tmp/after')).toString()).toBe('ok');
  });

  test('the agent killed mid-command: LxqAgentLost, then the respawned agent serves the next exec', async () => {
    const sleeper = await vm.spawn(['sleep', '60']);
    const sleeping = collect(sleeper, {}, 'sleep');
    // The shell's parent is the agent itself.
    const killer = vm.exec(['sh', '-c', 'kill -9 $PPID; sleep 60']);
    // Seen by the monitor's VSERPORT_CHANGE (0.1-0.3 s here), well before the 10 s ping silence.
    expect(await rejection(sleeping)).toBeInstanceOf(LxqAgentLost);
    expect(await rejection(killer)).toBeInstanceOf(LxqAgentLost);
    const r = await vm.exec(['echo', 'back']);
    expect(r.stdout.toString()).toBe('back\n');
  });
});
