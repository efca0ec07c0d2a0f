/**
 * Files and state through the lxq guest agent, on the host: the real agent binary (compiled from
 * native/agent/ into this test's temp dir) serving a unix socket with `--root DIR`, so that its
 * paths resolve inside DIR as a guest's resolve inside the guest's "/" — where ".." and an
 * absolute symlink to /etc can be seen to stay inside. The VM's files go through the same client
 * (the conformance suite's files cases and test/lxq-agent.test.ts run them in a VM).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';

import { AlreadyExists, InvalidArgument, NotFound } from '../lib/core/errors';
import { LxqAgentClient } from '../lib/drivers/vm/lxq-agent';
import { agentRequest, LxqAgentFiles } from '../lib/drivers/vm/lxq-agent-files';
import { LxqAgentLost, LxqAgentProtocolError, Op } from '../lib/drivers/vm/lxq-agent-protocol';
import { agentGuestState, parseGuestState } from '../lib/drivers/vm/lxq-agent-state';
import { buildLxqAgent } from '../lib/images/lxq-agent-binary';

jest.setTimeout(120_000);

let dir: string;
let binary: string;
const agents: ChildProcess[] = [];
const clients: LxqAgentClient[] = [];

beforeAll(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lxq-agent-files-'));
  binary = path.join(dir, 'lxq-agent');
  await buildLxqAgent(binary);
});

afterAll(() => {
  for (const c of clients) c.close();
  for (const a of agents) if (a.exitCode === null && a.signalCode === null) a.kill('SIGKILL');
  fs.rmSync(dir, { recursive: true, force: true });
});

let serial = 0;
/** A real agent whose root is a new directory; resolves once it listens. */
async function startAgent(): Promise<{ socket: string; root: string; agent: ChildProcess }> {
  const n = serial++;
  const socket = path.join(dir, `agent-${n}.sock`);
  const root = path.join(dir, `root-${n}`);
  fs.mkdirSync(path.join(root, 'etc'), { recursive: true });
  fs.mkdirSync(path.join(root, 'tmp'));
  const agent = spawn(binary, ['--listen', socket, '--root', root], { stdio: ['ignore', 'inherit', 'inherit'] });
  agents.push(agent);
  for (let i = 0; i < 500; i++) {
    const listening = await new Promise<boolean>((resolve) => {
      const probe = net.createConnection({ path: socket }, () => resolve(true)).once('error', () => resolve(false));
      probe.once('connect', () => probe.destroy());
    });
    if (listening) return { socket, root, agent };
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error('the agent did not listen');
}

async function connect(socket: string): Promise<LxqAgentClient> {
  const c = await LxqAgentClient.connect(socket, { timeout: 10_000 });
  clients.push(c);
  return c;
}

function rejection(p: Promise<unknown>): Promise<any> {
  return p.then(
    (v) => {
      throw new Error(`expected a rejection, got ${JSON.stringify(v)}`);
    },
    (e) => e,
  );
}

describe('files through the lxq agent (real agent, --root)', () => {
  let root: string;
  let client: LxqAgentClient;
  let files: LxqAgentFiles;
  beforeAll(async () => {
    const a = await startAgent();
    root = a.root;
    client = await connect(a.socket);
    files = new LxqAgentFiles(async () => client);
  });

  test('write, read, stat (mode, owner), an atomic replace that leaves no temporary file', async () => {
    await files.write('/tmp/hello.txt', 'hello\n', { mode: 0o640, uid: 5, gid: 6 });
    expect(fs.readFileSync(path.join(root, 'tmp/hello.txt'), 'utf8')).toBe('hello\n');
    expect((await files.read('/tmp/hello.txt')).toString()).toBe('hello\n');
    const st = await files.stat('/tmp/hello.txt');
    expect(st).toMatchObject({ type: 'file', size: 6, mode: 0o640, uid: 5, gid: 6 });
    expect(Math.abs(st.mtime.getTime() - Date.now())).toBeLessThan(120_000);
    const host = fs.statSync(path.join(root, 'tmp/hello.txt'));
    expect([host.uid, host.gid, host.mode & 0o7777]).toEqual([5, 6, 0o640]);
    await files.write('/tmp/hello.txt', Buffer.from('again'));
    expect(await files.stat('/tmp/hello.txt')).toMatchObject({ mode: 0o644, uid: 0, gid: 0, size: 5 });
    expect((await files.list('/tmp')).map((e) => e.name)).toEqual(['hello.txt']);
    expect(await files.stat('/')).toMatchObject({ type: 'directory' });
  });

  test('push and pull stream any size (12 MiB, binary) and keep the mode', async () => {
    const data = Buffer.alloc(12 * 1024 * 1024 + 123);
    for (let i = 0; i < data.length; i += 4096) data.writeUInt32BE(i, i);
    const src = path.join(dir, 'src.bin');
    fs.writeFileSync(src, data, { mode: 0o750 });
    await files.push(src, '/tmp/big.bin');
    expect(fs.readFileSync(path.join(root, 'tmp/big.bin')).equals(data)).toBe(true);
    expect(await files.stat('/tmp/big.bin')).toMatchObject({ size: data.length, mode: 0o750 });
    const dst = path.join(dir, 'dst.bin');
    await files.pull('/tmp/big.bin', dst);
    expect(fs.readFileSync(dst).equals(data)).toBe(true);
    expect(fs.statSync(dst).mode & 0o777).toBe(0o750);
    expect((await files.read('/tmp/big.bin')).equals(data)).toBe(true);
  });

  test('mkdir (mode, owner, parents), list, symlink, readlink, utimes, remove (recursive)', async () => {
    await files.mkdir('/tmp/d', { mode: 0o700, uid: 7, gid: 8 });
    expect(await files.stat('/tmp/d')).toMatchObject({ type: 'directory', mode: 0o700, uid: 7, gid: 8 });
    await expect(files.mkdir('/tmp/d')).rejects.toThrow(AlreadyExists);
    await files.mkdir('/tmp/d/a/b', { parents: true, mode: 0o750, uid: 3, gid: 4 });
    await files.mkdir('/tmp/d/a/b', { parents: true });
    expect(await files.stat('/tmp/d/a')).toMatchObject({ type: 'directory', mode: 0o750, uid: 3, gid: 4 });
    await files.write('/tmp/d/f', 'x');
    await files.symlink('/etc', '/tmp/d/link', { uid: 9, gid: 10 });
    expect(await files.readlink('/tmp/d/link')).toBe('/etc');
    expect(await files.stat('/tmp/d/link')).toMatchObject({ type: 'symlink', uid: 9, gid: 10 });
    await expect(files.symlink('x', '/tmp/d/link')).rejects.toThrow(AlreadyExists);
    await expect(files.readlink('/tmp/d/f')).rejects.toThrow(InvalidArgument);
    expect(await files.list('/tmp/d')).toEqual([
      { name: 'a', type: 'directory' },
      { name: 'f', type: 'file' },
      { name: 'link', type: 'symlink' },
    ]);
    await expect(files.list('/tmp/d/f')).rejects.toThrow(InvalidArgument);
    await expect(files.remove('/tmp/d/a')).rejects.toThrow(InvalidArgument); // not empty
    const when = new Date('2001-02-03T04:05:06.789Z');
    await files.utimes('/tmp/d/link', when, when);
    expect(fs.lstatSync(path.join(root, 'tmp/d/link')).mtimeMs).toBe(when.getTime());
    expect(fs.statSync(path.join(root, 'etc')).mtimeMs).not.toBe(when.getTime()); // the link's own times
    await files.utimes('/tmp/d/f', new Date(0), when);
    expect((await files.stat('/tmp/d/f')).mtime).toEqual(when);
    await files.remove('/tmp/d/link');
    expect(fs.existsSync(path.join(root, 'etc'))).toBe(true); // the link, not its target
    await files.remove('/tmp/d', { recursive: true });
    await expect(files.stat('/tmp/d')).rejects.toThrow(NotFound);
    await expect(files.remove('/tmp/d')).rejects.toThrow(NotFound);
  });

  test('a list of many entries streams whole', async () => {
    await files.mkdir('/tmp/many');
    const names = Array.from({ length: 3000 }, (_, i) => `entry-with-a-longish-name-${i}`);
    for (const n of names) fs.writeFileSync(path.join(root, 'tmp/many', n), '');
    const listed = await files.list('/tmp/many');
    expect(listed.length).toBe(names.length);
    expect(new Set(listed.map((e) => e.name))).toEqual(new Set(names));
    await files.remove('/tmp/many', { recursive: true });
  });

  test('paths stay inside the root: "..", absolute symlinks, magic links', async () => {
    fs.writeFileSync(path.join(root, 'etc/hostname'), 'inside\n');
    expect((await files.read('/../../../etc/hostname')).toString()).toBe('inside\n');
    fs.symlinkSync('/etc', path.join(root, 'tmp/etc-link'));
    fs.symlinkSync('../../../../../../etc/hostname', path.join(root, 'tmp/up-link'));
    expect((await files.read('/tmp/etc-link/hostname')).toString()).toBe('inside\n');
    expect((await files.read('/tmp/up-link')).toString()).toBe('inside\n');
    await files.write('/tmp/etc-link/written', 'w');
    expect(fs.readFileSync(path.join(root, 'etc/written'), 'utf8')).toBe('w');
    expect((await files.list('/tmp/etc-link')).map((e) => e.name).sort()).toEqual(['hostname', 'written']);
    // A write through a final symlink replaces the link, never writes where it points.
    fs.symlinkSync('/etc/hostname', path.join(root, 'tmp/final-link'));
    await files.write('/tmp/final-link', 'replaced');
    expect(fs.lstatSync(path.join(root, 'tmp/final-link')).isFile()).toBe(true);
    expect(fs.readFileSync(path.join(root, 'etc/hostname'), 'utf8')).toBe('inside\n');
    // A link into /proc resolves inside the root too (which has no /proc), never the agent's own.
    fs.symlinkSync('/proc/self/root/etc', path.join(root, 'tmp/magic'));
    await expect(files.read('/tmp/magic/passwd')).rejects.toThrow(NotFound);
  });

  test('errors are typed: NotFound, AlreadyExists, InvalidArgument; bad paths change nothing', async () => {
    await expect(files.read('/no/such/file')).rejects.toThrow(NotFound);
    await expect(files.stat('/no/such/file')).rejects.toThrow(NotFound);
    await expect(files.write('/no/such/dir/f', 'x')).rejects.toThrow(NotFound);
    await expect(files.read('/tmp')).rejects.toThrow(InvalidArgument);
    await expect(files.write('/etc', 'x')).rejects.toThrow(InvalidArgument);
    for (const bad of ['relative', '', 'a\0b']) await expect(files.write(bad, 'x')).rejects.toThrow(InvalidArgument);
    await expect(files.remove('/')).rejects.toThrow(InvalidArgument);
    await expect(files.write('/tmp/x', 'x', { uid: 70000 })).rejects.toThrow(InvalidArgument);
    expect(fs.readdirSync(path.join(root, 'tmp')).filter((n) => n.startsWith('.lxq-'))).toEqual([]);
  });

  test('many operations at once on one connection', async () => {
    await Promise.all(Array.from({ length: 20 }, (_, i) => files.write(`/tmp/c${i}`, Buffer.alloc(100_000 + i, i))));
    const back = await Promise.all(Array.from({ length: 20 }, (_, i) => files.read(`/tmp/c${i}`)));
    back.forEach((b, i) => expect(b.equals(Buffer.alloc(100_000 + i, i))).toBe(true));
  });

  test('the state from inside: processes, memory, disk, interfaces with counters and addresses', async () => {
    const s = await agentGuestState(client);
    expect(s.processes).toBeGreaterThan(1);
    expect(s.memory.totalBytes).toBeGreaterThan(s.memory.availableBytes);
    expect(s.disk.totalBytes).toBeGreaterThan(0);
    const lo = s.interfaces.find((i) => i.name === 'lo');
    expect(lo).toMatchObject({ mtu: 65536 });
    expect(lo!.addresses).toContainEqual({ family: 'inet', address: '127.0.0.1', prefix: 8 });
    // The text is the guest's: nonsense is skipped, not trusted.
    expect(parseGuestState('processes -3\nif x\naddr nope inet 1.2.3.4 8\nmemory a b\n')).toMatchObject({ processes: 0, interfaces: [], memory: { totalBytes: 0 } });
  });
});

describe('files through the lxq agent: faults', () => {
  test('an agent killed mid-transfer: the push rejects with LxqAgentLost within 2 s, the target is not made; a new agent serves the next', async () => {
    const { socket, root, agent } = await startAgent();
    const client = await connect(socket);
    const files = new LxqAgentFiles(async () => client);
    let sent = 0;
    let killedAt = 0;
    const endless = async function* () {
      for (;;) {
        sent += 64 * 1024;
        if (sent === 4 * 1024 * 1024) {
          killedAt = Date.now();
          agent.kill('SIGKILL');
        }
        yield Buffer.alloc(64 * 1024, 1);
        await new Promise((r) => setImmediate(r));
      }
    };
    const e = await rejection(agentRequest(client, { op: Op.Write, rel: 'tmp/endless', mode: 0o644 }, '/tmp/endless', { source: endless() }));
    expect(e).toBeInstanceOf(LxqAgentLost);
    expect(Date.now() - killedAt).toBeLessThan(2_000);
    expect(fs.existsSync(path.join(root, 'tmp/endless'))).toBe(false);
    await expect(files.read('/etc')).rejects.toBeInstanceOf(LxqAgentLost);
    const again = await connect((await startAgent()).socket);
    await new LxqAgentFiles(async () => again).write('/tmp/ok', 'ok');
  });

  test("a failure on the host's side cancels the transfer: the connection serves on, no temporary file stays", async () => {
    const { socket, root } = await startAgent();
    const client = await connect(socket);
    const files = new LxqAgentFiles(async () => client);
    await files.write('/tmp/big', Buffer.alloc(4 * 1024 * 1024, 2));
    let chunks = 0;
    const sinkFails = agentRequest(client, { op: Op.Read, rel: 'tmp/big' }, '/tmp/big', {
      sink: () => {
        if (++chunks === 3) throw new Error('the host disk is full');
      },
    });
    expect((await rejection(sinkFails)).message).toBe('the host disk is full');
    const failing = async function* () {
      yield Buffer.alloc(1024 * 1024, 3);
      throw new Error('the host file went away');
    };
    const sourceFails = agentRequest(client, { op: Op.Write, rel: 'tmp/half', mode: 0o644 }, '/tmp/half', { source: failing() });
    expect((await rejection(sourceFails)).message).toBe('the host file went away');
    expect((await files.read('/tmp/big')).length).toBe(4 * 1024 * 1024);
    for (let i = 0; client.active > 0 && i < 500; i++) await new Promise((r) => setTimeout(r, 10));
    expect(client.active).toBe(0);
    expect(client.connected).toBe(true);
    expect(fs.readdirSync(path.join(root, 'tmp')).sort()).toEqual(['big']);
  });

  test('a malformed REQUEST ends the session with a protocol error; the next connection works', async () => {
    const { socket } = await startAgent();
    const client = await connect(socket);
    const lost = new Promise<Error>((resolve) => client.onClose(resolve));
    client.request(Buffer.from([0, 0, 0, 99, 1, 2, 3]), { frame: () => undefined, lost: () => undefined });
    const e = await lost;
    expect(e).toBeInstanceOf(LxqAgentProtocolError);
    expect(e.message).toMatch(/malformed REQUEST/);
    const next = await connect(socket);
    expect((await new LxqAgentFiles(async () => next).stat('/tmp')).type).toBe('directory');
  });
});
