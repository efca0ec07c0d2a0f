/**
 * QgaClient: the sync handshake, in-order answers and noReply against the fake server; against a
 * real QEMU with a guest-agent channel but no guest, connect must time out cleanly.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import {
  QgaClient,
  QmpClient,
  QmpCommandError,
  QmpConnectionError,
  QmpError,
  QmpTimeoutError,
  type QmpStatusInfo,
} from '../lib/qmp';
import { FakePeer, FakeServer, tempDir } from './helpers/fake-qmp';

const FF = Buffer.from([0xff]);

/** The error a promise rejects with (fails the test if it resolves). */
function rejection(p: Promise<unknown>): Promise<any> {
  return p.then((v) => { throw new Error(`expected a rejection, got ${JSON.stringify(v)}`); }, (e) => e);
}

/** Answer the client's guest-sync-delimited like qemu-ga: 0xFF then {"return": id}. */
async function answerSync(peer: FakePeer, before: string | Buffer = ''): Promise<number> {
  const req = await peer.next();
  expect(req.execute).toBe('guest-sync-delimited');
  const id = req.arguments.id;
  expect(Number.isInteger(id)).toBe(true);
  peer.send(Buffer.concat([Buffer.from(before), FF, Buffer.from(`{"return": ${id}}\n`)]));
  return id;
}

describe('QgaClient: protocol (fake agent)', () => {
  let dir: string;
  let srv: FakeServer;
  let client: QgaClient | undefined;

  beforeEach(async () => {
    dir = tempDir('lxq-qga-');
    srv = await FakeServer.start(dir, 'qga.sock');
  });
  afterEach(async () => {
    await client?.close();
    client = undefined;
    await srv.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  async function connected(timeout = 2000): Promise<[QgaClient, FakePeer]> {
    const peerP = srv.nextPeer();
    const clientP = QgaClient.connect(srv.path, { timeout });
    const peer = await peerP;
    await answerSync(peer);
    client = await clientP;
    return [client, peer];
  }

  test('sync: 0xFF first, stale replies, garbage and an old sync are discarded', async () => {
    const peerP = srv.nextPeer();
    const clientP = QgaClient.connect(srv.path, { timeout: 30_000 });
    const peer = await peerP;
    const req = await peer.next();
    expect(peer.received[0]).toBe(0xff); // resets the agent's parser
    expect(req).toEqual({ execute: 'guest-sync-delimited', arguments: { id: expect.any(Number) } });
    const id: number = req.arguments.id;
    // What an earlier client left behind, then an old sync answer, then ours in two pieces.
    peer.send('{"return": {"stale": 1}}\n{"error": {"class": "GenericError", "desc": "old"}}\n{"ret');
    peer.send(Buffer.concat([FF, Buffer.from('{"return": 12345}\n'), Buffer.from('not json\n'), FF]));
    await new Promise((r) => setTimeout(r, 20));
    peer.send(`{"return": ${id}`);
    peer.send('}\n');
    client = await clientP;
    expect(client.connected).toBe(true);

    const ping = client.ping();
    expect(await peer.next()).toEqual({ execute: 'guest-ping' }); // no "id": the agent answers in order
    peer.send('{"return": {}}\n');
    await expect(ping).resolves.toBeUndefined();
  });

  test('commands go one at a time and get their answers in order', async () => {
    const [qga, peer] = await connected();
    const a = qga.execute('guest-info');
    const b = qga.execute('guest-get-time');
    const c = rejection(qga.execute('guest-bogus', { x: 1 }));
    expect(await peer.next()).toEqual({ execute: 'guest-info' });
    expect(await peer.silentFor(50)).toBe(true); // b is held until a is answered
    peer.send({ return: { version: '7.2' } });
    expect(await peer.next()).toEqual({ execute: 'guest-get-time' });
    peer.send({ return: 1234 });
    expect(await peer.next()).toEqual({ execute: 'guest-bogus', arguments: { x: 1 } });
    peer.send({ error: { class: 'CommandNotFound', desc: 'The command guest-bogus has not been found' } });
    await expect(a).resolves.toEqual({ version: '7.2' });
    await expect(b).resolves.toBe(1234);
    const err = await c;
    expect(err).toBeInstanceOf(QmpCommandError);
    expect(err).toBeInstanceOf(QmpError);
    expect(err.errorClass).toBe('CommandNotFound');
    expect(peer.syncBytes).toBe(1); // no resync needed between answered commands
  });

  test('noReply resolves once sent; the next command resyncs first', async () => {
    const [qga, peer] = await connected();
    await expect(qga.execute('guest-shutdown', { mode: 'powerdown' }, { noReply: true })).resolves.toBeUndefined();
    expect(await peer.next()).toEqual({ execute: 'guest-shutdown', arguments: { mode: 'powerdown' } });
    // Had it failed, the agent would answer after all; that answer must not go to the next command.
    peer.send({ error: { class: 'GenericError', desc: 'shutdown failed' } });
    const ping = qga.execute('guest-ping');
    await answerSync(peer);
    expect(peer.syncBytes).toBe(2);
    expect(await peer.next()).toEqual({ execute: 'guest-ping' });
    peer.send({ return: {} });
    await expect(ping).resolves.toEqual({});
  });

  test('timeout: QmpTimeoutError, the late answer is discarded by a resync', async () => {
    const [qga, peer] = await connected();
    const err = await rejection(qga.execute('guest-info', undefined, { timeout: 100 }));
    expect(err).toBeInstanceOf(QmpTimeoutError);
    expect(err.command).toBe('guest-info');
    expect(await peer.next()).toEqual({ execute: 'guest-info' });
    const next = qga.execute('guest-get-time');
    peer.send({ return: { late: true } }); // the answer to guest-info, after its timeout
    await answerSync(peer);
    expect(await peer.next()).toEqual({ execute: 'guest-get-time' });
    peer.send({ return: 99 });
    await expect(next).resolves.toBe(99);
  });

  test('a resync that times out, answered late: the late 0xFF answer is dropped, the next resync works', async () => {
    const [qga, peer] = await connected();
    await rejection(qga.execute('guest-info', undefined, { timeout: 50 })); // needs a resync now
    expect(await peer.next()).toEqual({ execute: 'guest-info' });
    const err = await rejection(qga.execute('guest-ping', undefined, { timeout: 80 }));
    expect(err).toBeInstanceOf(QmpTimeoutError);
    expect(err.command).toBe('guest-sync-delimited');
    const late = await peer.next();
    expect(late.execute).toBe('guest-sync-delimited');
    // Both answers arrive after their callers gave up, the sync one with its 0xFF.
    peer.send('{"return": {"late": "guest-info"}}\n');
    peer.send(Buffer.concat([FF, Buffer.from(`{"return": ${late.arguments.id}}\n`)]));
    await new Promise((r) => setTimeout(r, 20));
    expect(qga.connected).toBe(true);
    const next = qga.execute('guest-get-time');
    await answerSync(peer, 'junk');
    expect(await peer.next()).toEqual({ execute: 'guest-get-time' });
    peer.send({ return: 7 });
    await expect(next).resolves.toBe(7);
  });

  test('a command waiting its turn times out on its own budget', async () => {
    const [qga, peer] = await connected();
    let slowDone = false;
    const slow = rejection(qga.execute('guest-slow', undefined, { timeout: 300 })).finally(() => (slowDone = true));
    const queued = await rejection(qga.execute('guest-ping', undefined, { timeout: 80 }));
    expect(queued).toBeInstanceOf(QmpTimeoutError);
    // Its own 80 ms, not the slow command's 300: it gave up while the slow one still waited
    // (timers fire in the order they expire, however late the process runs them).
    expect(slowDone).toBe(false);
    expect(await slow).toBeInstanceOf(QmpTimeoutError);
    expect(await peer.next()).toEqual({ execute: 'guest-slow' });
    expect(await peer.silentFor(50)).toBe(true); // guest-ping was never sent
  });

  test('socket closed mid-command: the running and the queued commands reject', async () => {
    const [qga, peer] = await connected();
    const closed = new Promise<unknown>((r) => qga.once('close', r));
    const a = rejection(qga.execute('guest-info'));
    const b = rejection(qga.execute('guest-info'));
    await peer.next();
    peer.destroy();
    expect(await a).toBeInstanceOf(QmpConnectionError);
    expect(await b).toBeInstanceOf(QmpConnectionError);
    expect(await closed).toBeInstanceOf(QmpConnectionError);
    await expect(qga.ping()).rejects.toBeInstanceOf(QmpConnectionError);
  });

  test('garbage after sync: QmpConnectionError', async () => {
    const [qga, peer] = await connected();
    const a = rejection(qga.execute('guest-info'));
    await peer.next();
    peer.send('<html>\n');
    const err = await a;
    expect(err).toBeInstanceOf(QmpConnectionError);
    expect(err.message).toMatch(/unparsable JSON/);
  });

  test('no agent answering: connect times out on the sync and hangs up', async () => {
    const peerP = srv.nextPeer();
    const t0 = Date.now();
    const clientP = rejection(QgaClient.connect(srv.path, { timeout: 200 }));
    const peer = await peerP;
    const err = await clientP;
    expect(Date.now() - t0).toBeLessThan(30_000); // not hung (no bound on a loaded machine's speed)
    expect(err).toBeInstanceOf(QmpTimeoutError);
    expect(err.command).toBe('guest-sync-delimited');
    expect(err.message).toMatch(/qemu-ga running/);
    await peer.ended;
  });
});

describe('QgaClient with a real QEMU and no guest agent', () => {
  let proc: ChildProcess | undefined;
  let dir: string;

  afterEach(() => {
    if (proc && proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
    fs.rmSync(dir, { recursive: true, force: true });
  });

  test('the channel accepts the connection; connect times out cleanly, twice', async () => {
    dir = tempDir('lxq-qga-qemu-');
    const qmpPath = path.join(dir, 'qmp.sock');
    const qgaPath = path.join(dir, 'qga.sock');
    proc = spawn(
      'qemu-system-x86_64',
      ['-machine', 'pc', '-accel', 'tcg', '-nodefaults', '-no-user-config', '-display', 'none',
        '-qmp', `unix:${qmpPath},server=on,wait=off`,
        '-chardev', `socket,path=${qgaPath},server=on,wait=off,id=qga0`,
        '-device', 'virtio-serial', '-device', 'virtserialport,chardev=qga0,name=org.qemu.guest_agent.0'],
      { stdio: 'ignore' },
    );
    const qmp = await QmpClient.connect(qmpPath, { timeout: 60_000, retry: true }); // QEMU is up
    try {
      for (let i = 0; i < 2; i++) {
        const t0 = Date.now();
        const err = await rejection(QgaClient.connect(qgaPath, { timeout: 300 }));
        const ms = Date.now() - t0;
        expect(err).toBeInstanceOf(QmpTimeoutError);
        expect(err.message).toMatch(/guest-sync-delimited/);
        expect(ms).toBeGreaterThanOrEqual(290);
        expect(ms).toBeLessThan(30_000); // not hung (no bound on a loaded machine's speed)
      }
      // QEMU itself is fine.
      await expect(qmp.execute<QmpStatusInfo>('query-status')).resolves.toMatchObject({ running: true });
    } finally {
      await qmp.close();
    }
  });
});
