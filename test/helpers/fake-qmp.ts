/**
 * A scriptable unix-socket peer for protocol edges a real QEMU will not produce on demand
 * (garbage, a reply that never comes, unknown ids, stale guest-agent bytes). Tests drive it:
 *
 *   const srv = await FakeServer.start(dir);
 *   const peerP = srv.nextPeer();              // before the client connects
 *   const client = QmpClient.connect(srv.path);
 *   const peer = await peerP;
 *   await peer.qmpHandshake();
 *   const req = await peer.next();             // {"execute": ..., "id": ...}
 *   peer.send({ return: {}, id: req.id });
 */
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';

export const GREETING = {
  QMP: { version: { qemu: { major: 9, minor: 9, micro: 9 }, package: 'fake' }, capabilities: ['oob'] },
};

export function tempDir(prefix = 'lxq-qmp-'): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

export class FakePeer {
  /** Everything the client wrote, raw. */
  received = Buffer.alloc(0);
  /** Count of 0xFF bytes the client sent (guest-agent resync). */
  syncBytes = 0;
  readonly ended: Promise<void>;
  private lines: unknown[] = [];
  private waiting?: (msg: unknown) => void;
  private buf = Buffer.alloc(0);

  constructor(readonly socket: net.Socket) {
    this.ended = new Promise((resolve) => socket.once('close', () => resolve()));
    socket.on('error', () => undefined);
    socket.on('data', (d: Buffer) => {
      this.received = Buffer.concat([this.received, d]);
      this.buf = Buffer.concat([this.buf, d]);
      let nl: number;
      while ((nl = this.buf.indexOf(0x0a)) >= 0) {
        let line = this.buf.subarray(0, nl);
        this.buf = this.buf.subarray(nl + 1);
        while (line[0] === 0xff) {
          this.syncBytes++;
          line = line.subarray(1);
        }
        const text = line.toString('utf8').trim();
        if (text) this.push(JSON.parse(text));
      }
    });
  }

  /** Next message the client sent; rejects after `timeout` ms. */
  next(timeout = 2000): Promise<any> {
    const m = this.lines.shift();
    if (m !== undefined) return Promise.resolve(m);
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => {
        this.waiting = undefined;
        reject(new Error(`fake peer: no message within ${timeout} ms`));
      }, timeout);
      this.waiting = (msg) => {
        clearTimeout(t);
        resolve(msg);
      };
    });
  }

  /** True if the client sends nothing for `ms`. */
  async silentFor(ms: number): Promise<boolean> {
    try {
      const m = await this.next(ms);
      this.lines.unshift(m);
      return false;
    } catch {
      return true;
    }
  }

  /** Objects go out as one JSON line ending in "\r\n" like QEMU's; strings and Buffers raw. */
  send(msg: object | string | Buffer): void {
    this.socket.write(Buffer.isBuffer(msg) || typeof msg === 'string' ? msg : JSON.stringify(msg) + '\r\n');
  }

  /** Greeting, then answer qmp_capabilities. */
  async qmpHandshake(): Promise<void> {
    this.send(GREETING);
    const req = await this.next();
    if (req.execute !== 'qmp_capabilities') throw new Error(`expected qmp_capabilities, got ${JSON.stringify(req)}`);
    this.send({ return: {}, id: req.id });
  }

  destroy(): void {
    this.socket.destroy();
  }

  private push(msg: unknown): void {
    const w = this.waiting;
    this.waiting = undefined;
    if (w) w(msg);
    else this.lines.push(msg);
  }
}

export class FakeServer {
  private readonly peers: FakePeer[] = [];
  private waiters: ((p: FakePeer) => void)[] = [];
  private queued: FakePeer[] = [];

  private constructor(
    readonly server: net.Server,
    readonly path: string,
  ) {
    server.on('connection', (s) => {
      const p = new FakePeer(s);
      this.peers.push(p);
      const w = this.waiters.shift();
      if (w) w(p);
      else this.queued.push(p);
    });
  }

  static start(dir: string, name = 'fake.sock'): Promise<FakeServer> {
    const file = path.join(dir, name);
    const server = net.createServer();
    return new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen(file, () => resolve(new FakeServer(server, file)));
    });
  }

  /** The next client connection. */
  nextPeer(): Promise<FakePeer> {
    const p = this.queued.shift();
    return p ? Promise.resolve(p) : new Promise((resolve) => this.waiters.push(resolve));
  }

  close(): Promise<void> {
    for (const p of this.peers) p.destroy();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}
