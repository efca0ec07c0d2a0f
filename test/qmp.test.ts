/**
 * QmpClient against a real QEMU (`-machine none`: no guest, greets in a few ms), and against the
 * fake server for the protocol edges QEMU will not produce on demand.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import * as fs from 'node:fs';
import * as path from 'node:path';
import {
  QmpAbortError,
  QmpClient,
  QmpCommandError,
  QmpConnectionError,
  QmpError,
  QmpProtocolError,
  QmpTimeoutError,
  type QmpEvent,
  type QmpStatusInfo,
  type QmpVersionInfo,
} from '../lib/qmp';
import { FakePeer, FakeServer, GREETING, tempDir } from './helpers/fake-qmp';

interface Qemu {
  proc: ChildProcess;
  dir: string;
  qmp: string;
}

const running: Qemu[] = [];
const dirs: string[] = [];

/** The error a promise rejects with (fails the test if it resolves). */
function rejection(p: Promise<unknown>): Promise<any> {
  return p.then((v) => { throw new Error(`expected a rejection, got ${JSON.stringify(v)}`); }, (e) => e);
}

/** Never called: tsc checks that QmpCommands refuses what QEMU would (each line must be an error). */
export function typedCommandsRefuse(qmp: QmpClient): void {
  // @ts-expect-error device_del takes { id }
  void qmp.execute('device_del', { idx: 'dev-a' });
  // @ts-expect-error device_del needs its arguments
  void qmp.execute('device_del');
  // @ts-expect-error query-status takes no arguments
  void qmp.execute('query-status', { bogus: 1 });
  // @ts-expect-error blockdev-backup's sync is a mode QEMU knows
  void qmp.execute('blockdev-backup', { device: 'a', target: 'b', sync: 'sometimes' });
  // @ts-expect-error DEVICE_DELETED's data has no `bogus`
  void qmp.waitEvent('DEVICE_DELETED', { filter: (d) => d.bogus === 1 });
}

/** Spawn QEMU with a QMP socket and no guest; killed in afterAll/afterEach. */
function startQemu(machine = ['-machine', 'none']): Qemu {
  const dir = tempDir('lxq-qmp-qemu-');
  const qmp = path.join(dir, 'qmp.sock');
  const proc = spawn(
    'qemu-system-x86_64',
    [...machine, '-nodefaults', '-no-user-config', '-display', 'none', '-name', 'lxqtest',
      '-qmp', `unix:${qmp},server=on,wait=off`],
    { stdio: 'ignore' },
  );
  const q = { proc, dir, qmp };
  running.push(q);
  return q;
}

/** Connect to a QEMU just spawned: its socket may not exist or listen yet. */
function connectTo(q: Qemu): Promise<QmpClient> {
  return QmpClient.connect(q.qmp, { timeout: 60_000, retry: true });
}

function killAll(): void {
  for (const q of running.splice(0)) {
    if (q.proc.exitCode === null && q.proc.signalCode === null) q.proc.kill('SIGKILL');
    fs.rmSync(q.dir, { recursive: true, force: true });
  }
}

afterAll(() => {
  killAll();
  for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
});

describe('QmpClient with a real QEMU (-machine none)', () => {
  let qemu: Qemu;
  let qmp: QmpClient;

  beforeAll(async () => {
    qemu = startQemu();
    qmp = await connectTo(qemu);
  });
  afterAll(async () => {
    await qmp?.close();
  });

  test('greeting and version', async () => {
    expect(qmp.connected).toBe(true);
    expect(qmp.greeting?.QMP.capabilities).toContain('oob');
    expect(qmp.version?.qemu.major).toBeGreaterThanOrEqual(7);
    expect(typeof qmp.version?.package).toBe('string');
  });

  test('query-status and query-version', async () => {
    const st: QmpStatusInfo = await qmp.execute('query-status');
    expect(st).toMatchObject({ status: 'running', running: true });
    const v: QmpVersionInfo = await qmp.execute('query-version');
    expect(v).toEqual(qmp.version);
  });

  test('unknown command: QmpCommandError CommandNotFound', async () => {
    const err = await rejection(qmp.execute('no-such-command'));
    expect(err).toBeInstanceOf(QmpCommandError);
    expect(err).toBeInstanceOf(QmpError);
    expect(err.errorClass).toBe('CommandNotFound');
    expect(err.desc).toMatch(/no-such-command/);
    expect(err.command).toBe('no-such-command');
  });

  test('bad arguments: QmpCommandError GenericError, connection still fine', async () => {
    // A name typed as a plain string: QmpCommands would refuse these arguments at compile time.
    const queryStatus: string = 'query-status';
    const e1 = await rejection(qmp.execute(queryStatus, { bogus: 1 }));
    expect(e1).toBeInstanceOf(QmpCommandError);
    expect(e1.errorClass).toBe('GenericError');
    expect(e1.desc).toMatch(/bogus/);
    const e2 = await rejection(qmp.execute('human-monitor-command', { 'command-line': 42 }));
    expect(e2).toBeInstanceOf(QmpCommandError);
    expect(e2.desc).toMatch(/command-line/);
    await expect(qmp.execute('query-status')).resolves.toMatchObject({ running: true });
  });

  test('50 concurrent commands are matched by id', async () => {
    const calls = Array.from({ length: 50 }, (_, i): Promise<[string, unknown]> => {
      switch (i % 4) {
        case 0: return qmp.execute('query-status').then((r) => ['status', r]);
        case 1: return qmp.execute('query-version').then((r) => ['version', r]);
        case 2: return qmp.execute('query-name').then((r) => ['name', r]);
        default: return rejection(qmp.execute(`nope-${i}`)).then((e: QmpCommandError) => ['error', e.desc]);
      }
    });
    const results = await Promise.all(calls);
    results.forEach(([kind, r], i) => {
      if (i % 4 === 0) expect([kind, r]).toEqual(['status', expect.objectContaining({ status: 'running' })]);
      if (i % 4 === 1) expect([kind, r]).toEqual(['version', qmp.version]);
      if (i % 4 === 2) expect([kind, r]).toEqual(['name', { name: 'lxqtest' }]);
      if (i % 4 === 3) expect([kind, r]).toEqual(['error', `The command nope-${i} has not been found`]);
    });
  });

  test('stop/cont give STOP and RESUME events, by name and on "event"', async () => {
    const all: QmpEvent[] = [];
    const onEvent = (e: QmpEvent) => all.push(e);
    qmp.on('event', onEvent);
    const stopped = new Promise<QmpEvent>((r) => qmp.once('STOP', r));
    const resumed = new Promise<QmpEvent>((r) => qmp.once('RESUME', r));
    await qmp.execute('stop');
    expect(await qmp.execute('query-status')).toMatchObject({ status: 'paused', running: false });
    await qmp.execute('cont');
    const [s, r] = await Promise.all([stopped, resumed]);
    qmp.off('event', onEvent);
    expect(s.event).toBe('STOP');
    expect(s.timestamp.seconds).toBeGreaterThan(0);
    expect(r.event).toBe('RESUME');
    expect(all.map((e) => e.event)).toEqual(['STOP', 'RESUME']);
    expect(await qmp.execute('query-status')).toMatchObject({ running: true });
  });

  test('a frozen QEMU: timeout, then the late reply is dropped', async () => {
    process.kill(qemu.proc.pid!, 'SIGSTOP');
    try {
      const t0 = Date.now();
      const err = await rejection(qmp.execute('query-version', undefined, { timeout: 150 }));
      expect(err).toBeInstanceOf(QmpTimeoutError);
      expect(err.command).toBe('query-version');
      expect(Date.now() - t0).toBeLessThan(30_000); // not hung (no bound on a loaded machine's speed)
    } finally {
      process.kill(qemu.proc.pid!, 'SIGCONT');
    }
    // The late query-version reply arrives now; it must not answer this one.
    const st = await qmp.execute('query-status');
    expect(st).toMatchObject({ status: 'running' });
  });
});

describe('QmpClient: QEMU going away', () => {
  afterEach(killAll);

  test('quit: reply, SHUTDOWN event, close event; later calls reject with QmpConnectionError', async () => {
    const qemu = startQemu();
    const qmp = await connectTo(qemu);
    const events: string[] = [];
    qmp.on('event', (e) => events.push(e.event));
    const shutdown = new Promise<QmpEvent>((r) => qmp.once('SHUTDOWN', r));
    const closed = new Promise<unknown>((r) => qmp.once('close', r));
    const quit = qmp.execute('quit');
    await expect(quit).resolves.toEqual({});
    expect((await shutdown).data).toEqual({ guest: false, reason: 'host-qmp-quit' });
    const closeErr = await closed;
    expect(closeErr).toBeInstanceOf(QmpConnectionError);
    expect(events).toEqual(['SHUTDOWN']);
    const next = await rejection(qmp.execute('query-status'));
    expect(next).toBeInstanceOf(QmpConnectionError);
    expect(qmp.connected).toBe(false);
    // QEMU may have exited already (a loaded machine runs this test slower than QEMU's exit).
    if (qemu.proc.exitCode === null && qemu.proc.signalCode === null) await once(qemu.proc, 'exit');
    expect(qemu.proc.exitCode).toBe(0);
  });

  test('commands sent right after quit reject with QmpConnectionError', async () => {
    const qemu = startQemu();
    const qmp = await connectTo(qemu);
    const quit = qmp.execute('quit');
    const after = Array.from({ length: 5 }, () => qmp.execute('query-status').then((r) => r, (e) => e));
    // QEMU may close the socket while the later commands are being written: that write fails
    // with EPIPE and Node drops the socket unread, quit's answer with it. quit resolves anyway.
    await expect(quit).resolves.toEqual({});
    const results = await Promise.all(after);
    // QEMU stops reading once quit is dispatched: none of these is answered.
    for (const r of results) expect(r).toBeInstanceOf(QmpConnectionError);
  });

  test('SIGKILL mid-command: every pending call rejects at once', async () => {
    const qemu = startQemu();
    const qmp = await connectTo(qemu);
    const closed = new Promise<unknown>((r) => qmp.once('close', r));
    process.kill(qemu.proc.pid!, 'SIGSTOP'); // so the commands are surely still pending
    const pending = Array.from({ length: 10 }, () => qmp.execute('query-status').then((r) => r, (e) => e));
    await new Promise((r) => setTimeout(r, 20));
    const t0 = Date.now();
    qemu.proc.kill('SIGKILL');
    const results = await Promise.all(pending);
    expect(Date.now() - t0).toBeLessThan(30_000); // not hung (no bound on a loaded machine's speed)
    for (const r of results) expect(r).toBeInstanceOf(QmpConnectionError);
    expect(await closed).toBeInstanceOf(QmpConnectionError);
    await expect(qmp.execute('query-status')).rejects.toBeInstanceOf(QmpConnectionError);
  });

  test('connect to a missing socket or one nobody listens on: QmpConnectionError', async () => {
    const dir = tempDir();
    dirs.push(dir);
    const err = await rejection(QmpClient.connect(path.join(dir, 'none.sock'), { timeout: 1000 }));
    expect(err).toBeInstanceOf(QmpConnectionError);
    expect(err.code).toBe('ENOENT');
    const qemu = startQemu();
    await (await connectTo(qemu)).close();
    qemu.proc.kill('SIGKILL');
    await once(qemu.proc, 'exit');
    const err2 = await rejection(QmpClient.connect(qemu.qmp, { timeout: 1000 }));
    expect(err2).toBeInstanceOf(QmpConnectionError);
    expect(err2.code).toBe('ECONNREFUSED');
  });
});

describe('QmpClient: protocol edges (fake server)', () => {
  let dir: string;
  let srv: FakeServer;
  let client: QmpClient | undefined;

  beforeEach(async () => {
    dir = tempDir();
    srv = await FakeServer.start(dir);
  });
  afterEach(async () => {
    await client?.close();
    client = undefined;
    await srv.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  async function connected(): Promise<[QmpClient, FakePeer]> {
    const peerP = srv.nextPeer();
    const clientP = QmpClient.connect(srv.path, { timeout: 30_000 });
    const peer = await peerP;
    await peer.qmpHandshake();
    client = await clientP;
    return [client, peer];
  }

  test('handshake: the greeting is read, qmp_capabilities sent with an id', async () => {
    const peerP = srv.nextPeer();
    const clientP = QmpClient.connect(srv.path, { timeout: 30_000 });
    const peer = await peerP;
    peer.send(GREETING);
    const req = await peer.next();
    expect(req).toEqual({ execute: 'qmp_capabilities', id: expect.any(String) });
    peer.send({ return: {}, id: req.id });
    client = await clientP;
    expect(client.version).toEqual(GREETING.QMP.version);
  });

  test('garbage JSON: every pending call rejects with QmpConnectionError, close fires', async () => {
    const [qmp, peer] = await connected();
    const closed = new Promise<unknown>((r) => qmp.once('close', r));
    const calls = [qmp.execute('a'), qmp.execute('b')].map((p) => p.then((r) => r, (e) => e));
    await peer.next();
    await peer.next();
    peer.send('{"return": {}, "id": \n');
    const results = await Promise.all(calls);
    for (const r of results) {
      expect(r).toBeInstanceOf(QmpConnectionError);
      expect(r).not.toBeInstanceOf(QmpProtocolError);
      expect(r.message).toMatch(/unparsable JSON/);
    }
    expect(await closed).toBe(results[0]);
    await peer.ended; // the client hung up
  });

  test('socket closed mid-command: pending rejects, next call rejects at once', async () => {
    const [qmp, peer] = await connected();
    const call = rejection(qmp.execute('query-status'));
    await peer.next();
    peer.destroy();
    const err = await call;
    expect(err).toBeInstanceOf(QmpConnectionError);
    expect(err.message).toMatch(/closed by peer|connection lost/);
    await expect(qmp.execute('query-status')).rejects.toBeInstanceOf(QmpConnectionError);
  });

  test('a reply that never comes: QmpTimeoutError; the late reply is dropped', async () => {
    const [qmp, peer] = await connected();
    const err = await rejection(qmp.execute('slow', undefined, { timeout: 100 }));
    expect(err).toBeInstanceOf(QmpTimeoutError);
    expect(err.timeout).toBe(100);
    const slow = await peer.next();
    const next = qmp.execute('query-status');
    const req = await peer.next();
    peer.send({ return: 'late', id: slow.id });
    peer.send({ return: 'right', id: req.id });
    await expect(next).resolves.toBe('right');
  });

  test('default timeout from connect applies to every command', async () => {
    const peerP = srv.nextPeer();
    const clientP = QmpClient.connect(srv.path, { timeout: 1500 }); // the handshake's turns fit in it on a loaded machine
    await (await peerP).qmpHandshake();
    client = await clientP;
    await expect(client.execute('slow')).rejects.toBeInstanceOf(QmpTimeoutError);
  });

  test('events before the qmp_capabilities reply are delivered (static connect)', async () => {
    const peerP = srv.nextPeer();
    const clientP = QmpClient.connect(srv.path, { timeout: 30_000 });
    const peer = await peerP;
    peer.send(GREETING);
    const req = await peer.next();
    peer.send({ event: 'EARLY', data: { n: 1 }, timestamp: { seconds: 1, microseconds: 2 } });
    peer.send({ return: {}, id: req.id });
    client = await clientP;
    const got: QmpEvent[] = [];
    client.on('EARLY', (e) => got.push(e));
    await new Promise((r) => setImmediate(r));
    expect(got).toEqual([{ event: 'EARLY', data: { n: 1 }, timestamp: { seconds: 1, microseconds: 2 } }]);
  });

  test('events before the qmp_capabilities reply are delivered (listener attached first)', async () => {
    const qmp = (client = new QmpClient());
    const got: string[] = [];
    qmp.on('event', (e) => got.push(e.event));
    const peerP = srv.nextPeer();
    const conn = qmp.connect(srv.path, { timeout: 30_000 });
    const peer = await peerP;
    peer.send(GREETING);
    const req = await peer.next();
    peer.send({ event: 'A', timestamp: { seconds: 1, microseconds: 0 } });
    peer.send({ return: {}, id: req.id });
    await conn;
    expect(got).toEqual(['A']);
  });

  test('events among replies, replies out of order, unknown ids dropped', async () => {
    const [qmp, peer] = await connected();
    const got: QmpEvent[] = [];
    qmp.on('event', (e) => got.push(e));
    const a = qmp.execute('a');
    const b = qmp.execute('b');
    const ra = await peer.next();
    const rb = await peer.next();
    peer.send({ event: 'E1', data: { x: 1 }, timestamp: { seconds: 5, microseconds: 6 } });
    peer.send({ return: 'unknown', id: 'never-issued' });
    peer.send({ return: 'B', id: rb.id });
    peer.send({ event: 'E2', timestamp: { seconds: 7, microseconds: 8 } });
    peer.send({ error: { class: 'GenericError', desc: 'nope' }, id: ra.id });
    await expect(b).resolves.toBe('B');
    await expect(a).rejects.toMatchObject({ errorClass: 'GenericError', desc: 'nope', command: 'a' });
    expect(got.map((e) => e.event)).toEqual(['E1', 'E2']);
    expect(got[1].data).toEqual({});
    expect(qmp.connected).toBe(true);
  });

  test('a reply with neither return nor error: QmpProtocolError, connection closed', async () => {
    const [qmp, peer] = await connected();
    const a = rejection(qmp.execute('a'));
    const b = rejection(qmp.execute('b'));
    const ra = await peer.next();
    peer.send({ id: ra.id, something: 1 });
    const [ea, eb] = await Promise.all([a, b]);
    expect(ea).toBeInstanceOf(QmpProtocolError);
    expect(ea).toBeInstanceOf(QmpConnectionError);
    expect(eb).toBe(ea);
    expect(qmp.connected).toBe(false);
  });

  test('a message without id or event: QmpProtocolError', async () => {
    const [qmp, peer] = await connected();
    const a = rejection(qmp.execute('a'));
    await peer.next();
    peer.send({ error: { class: 'GenericError', desc: 'JSON parse error' } });
    expect(await a).toBeInstanceOf(QmpProtocolError);
  });

  test('retry: waits for a socket that appears later, else QmpTimeoutError', async () => {
    const late = path.join(dir, 'late.sock');
    const err = await rejection(QmpClient.connect(late, { timeout: 100, retry: true }));
    expect(err).toBeInstanceOf(QmpTimeoutError);
    expect(err.message).toMatch(/ENOENT/);

    const clientP = QmpClient.connect(late, { timeout: 30_000, retry: true });
    await new Promise((r) => setTimeout(r, 50));
    const srv2 = await FakeServer.start(dir, 'late.sock');
    try {
      await (await srv2.nextPeer()).qmpHandshake();
      client = await clientP;
      expect(client.connected).toBe(true);
    } finally {
      await client?.close();
      await srv2.close();
    }
  });

  test('bad greeting: QmpProtocolError; no greeting: QmpTimeoutError', async () => {
    let peerP = srv.nextPeer();
    let clientP = rejection(QmpClient.connect(srv.path, { timeout: 30_000 }));
    (await peerP).send({ hello: 1 });
    const e1 = await clientP;
    expect(e1).toBeInstanceOf(QmpProtocolError);
    expect(e1.received).toEqual({ hello: 1 });

    peerP = srv.nextPeer();
    clientP = rejection(QmpClient.connect(srv.path, { timeout: 150 }));
    const peer = await peerP;
    const e2 = await clientP;
    expect(e2).toBeInstanceOf(QmpTimeoutError);
    expect(e2.message).toMatch(/greeting/);
    await peer.ended; // the client closed its socket
  });

  test('typed commands go on the wire as given: arguments when there are some, none otherwise', async () => {
    const [qmp, peer] = await connected();
    const del = qmp.execute('device_del', { id: 'dev-a' });
    const req = await peer.next();
    expect(req).toEqual({ execute: 'device_del', arguments: { id: 'dev-a' }, id: expect.any(String) });
    peer.send({ return: {}, id: req.id });
    await expect(del).resolves.toEqual({});
    const pci = qmp.execute('query-pci', undefined, { timeout: 1000 });
    const req2 = await peer.next();
    expect(req2).toEqual({ execute: 'query-pci', id: expect.any(String) });
    peer.send({ return: [{ bus: 0, devices: [] }], id: req2.id });
    const buses = await pci;
    expect(buses[0].devices).toEqual([]);
  });

  test('waitEvent: the first event of that name whose data passes the filter', async () => {
    const [qmp, peer] = await connected();
    const wait = qmp.waitEvent('DEVICE_DELETED', { filter: (d) => d.device === 'dev-b' });
    const first = qmp.waitEvent('DEVICE_DELETED');
    peer.send({ event: 'OTHER', data: { device: 'dev-b' }, timestamp: { seconds: 1, microseconds: 0 } });
    peer.send({ event: 'DEVICE_DELETED', data: { device: 'dev-a', path: '/a' }, timestamp: { seconds: 2, microseconds: 0 } });
    peer.send({ event: 'DEVICE_DELETED', data: { device: 'dev-b', path: '/b' }, timestamp: { seconds: 3, microseconds: 0 } });
    expect(await wait).toEqual({ event: 'DEVICE_DELETED', data: { device: 'dev-b', path: '/b' }, timestamp: { seconds: 3, microseconds: 0 } });
    expect((await first).data).toEqual({ device: 'dev-a', path: '/a' });
    // A settled wait leaves no listener behind.
    expect(qmp.listenerCount('DEVICE_DELETED')).toBe(0);
    expect(qmp.listenerCount('close')).toBe(0);
  });

  test('waitEvent: a filter that throws rejects the wait with its error', async () => {
    const [qmp, peer] = await connected();
    const wait = rejection(qmp.waitEvent('X_EVENT', { filter: () => { throw new Error('bad filter'); } }));
    peer.send({ event: 'X_EVENT', data: {}, timestamp: { seconds: 1, microseconds: 0 } });
    expect((await wait).message).toBe('bad filter');
    expect(qmp.listenerCount('X_EVENT')).toBe(0);
  });

  test('waitEvent: QmpTimeoutError when no matching event comes in time; the client stays usable', async () => {
    const [qmp, peer] = await connected();
    const wait = rejection(qmp.waitEvent('JOB_STATUS_CHANGE', { filter: (d) => d.status === 'concluded', timeout: 100 }));
    peer.send({ event: 'JOB_STATUS_CHANGE', data: { id: 'j', status: 'running' }, timestamp: { seconds: 1, microseconds: 0 } });
    const err = await wait;
    expect(err).toBeInstanceOf(QmpTimeoutError);
    expect(err.timeout).toBe(100);
    expect(err.message).toMatch(/JOB_STATUS_CHANGE event within 100 ms/);
    expect(qmp.listenerCount('JOB_STATUS_CHANGE')).toBe(0);
    const call = qmp.execute('query-status');
    const req = await peer.next();
    peer.send({ return: { status: 'running', running: true }, id: req.id });
    await expect(call).resolves.toEqual({ status: 'running', running: true });
  });

  test('waitEvent: an AbortSignal ends the wait with QmpAbortError, its reason as cause', async () => {
    const [qmp] = await connected();
    const ac = new AbortController();
    const wait = rejection(qmp.waitEvent('SHUTDOWN', { signal: ac.signal, timeout: 60_000 }));
    ac.abort(new Error('not needed any more'));
    const err = await wait;
    expect(err).toBeInstanceOf(QmpAbortError);
    expect(err).toBeInstanceOf(QmpError);
    expect(err.cause).toEqual(new Error('not needed any more'));
    expect(qmp.listenerCount('SHUTDOWN')).toBe(0);
    // Already aborted: rejects at once, nothing is listened to.
    expect(await rejection(qmp.waitEvent('SHUTDOWN', { signal: ac.signal }))).toBeInstanceOf(QmpAbortError);
    expect(qmp.listenerCount('SHUTDOWN')).toBe(0);
  });

  test('waitEvent: the connection closing rejects the wait with its QmpConnectionError; a closed client rejects at once', async () => {
    const [qmp, peer] = await connected();
    const wait = rejection(qmp.waitEvent('SHUTDOWN'));
    peer.destroy();
    const err = await wait;
    expect(err).toBeInstanceOf(QmpConnectionError);
    expect(err.message).toMatch(/closed by peer|connection lost/);
    expect(await rejection(qmp.waitEvent('SHUTDOWN'))).toBe(err);
    expect(await rejection(new QmpClient().waitEvent('SHUTDOWN'))).toBeInstanceOf(QmpConnectionError);
  });

  test('waitEvent: close() by the client rejects the wait with QmpConnectionError', async () => {
    const [qmp] = await connected();
    const wait = rejection(qmp.waitEvent('SHUTDOWN', { timeout: 60_000 }));
    await qmp.close();
    const err = await wait;
    expect(err).toBeInstanceOf(QmpConnectionError);
    expect(err.message).toMatch(/closed by client/);
  });

  test('close(): pending calls reject, close event has no error', async () => {
    const [qmp] = await connected();
    const closed = new Promise<unknown>((r) => qmp.once('close', r));
    const a = rejection(qmp.execute('a'));
    await qmp.close();
    expect(await a).toBeInstanceOf(QmpConnectionError);
    expect(await closed).toBeUndefined();
    expect(qmp.connected).toBe(false);
  });
});
