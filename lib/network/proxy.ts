/**
 * Proxy devices: a listener on the host (`listen`) whose connections are forwarded into the
 * instance (`connect`). The Node process that holds the instance serves them while it runs
 * (lxq has no daemon): they open when it starts, or when the device is added, or when a process
 * opens a running instance (`Host.get`), and close when it stops.
 */
import * as net from 'node:net';

import { InvalidArgument, NotSupported } from '../errors';
import { parseIpv4 } from './addresses';

export type Endpoint = { proto: 'tcp'; host: string; port: number } | { proto: 'unix'; path: string };

/** LXD's endpoint form: `tcp:<address>:<port>` or `unix:<absolute path>` (udp is not served yet). */
export function parseEndpoint(key: string, text: string): Endpoint {
  const bad = (why: string) => new InvalidArgument(`bad value for "${key}": ${why}`);
  if (text.startsWith('unix:')) {
    const p = text.slice(5);
    if (!p.startsWith('/') || p.includes('\0')) throw bad(`a unix socket path must be absolute, got ${JSON.stringify(p)}`);
    return { proto: 'unix', path: p };
  }
  if (text.startsWith('udp:')) throw new NotSupported(`"${key}": udp proxies are not supported yet (tcp and unix are)`);
  const m = /^tcp:(\[[0-9a-fA-F:]+\]|[\d.]+|localhost):(\d{1,5})$/.exec(text);
  if (!m || Number(m[2]) < 1 || Number(m[2]) > 65535) throw bad(`expected "tcp:<address>:<port>" or "unix:<path>", got ${JSON.stringify(text)}`);
  const host = m[1] === 'localhost' ? '127.0.0.1' : m[1].replace(/^\[|\]$/g, '');
  if (!host.includes(':')) {
    try {
      parseIpv4(host);
    } catch (e) {
      throw bad((e as Error).message);
    }
  }
  return { proto: 'tcp', host, port: Number(m[2]) };
}

/** Opens the connection inside the instance for one proxied connection. */
export type Connector = (to: Endpoint) => Promise<net.Socket>;

export class ProxyServer {
  private server: net.Server | undefined;
  private readonly sockets = new Set<net.Socket>();

  constructor(
    readonly name: string,
    private readonly listen: Endpoint,
    private readonly connect: Endpoint,
    private readonly connector: Connector,
  ) {}

  /** Listens; an address already bound is refused with InvalidArgument naming it. */
  async start(): Promise<void> {
    const server = net.createServer((client) => this.forward(client));
    await new Promise<void>((resolve, reject) => {
      server.once('error', (e: NodeJS.ErrnoException) => {
        const where = this.listen.proto === 'tcp' ? `${this.listen.host}:${this.listen.port}` : this.listen.path;
        reject(e.code === 'EADDRINUSE' ? new InvalidArgument(`proxy "${this.name}": "listen" ${where} is already in use on the host`) : e);
      });
      if (this.listen.proto === 'tcp') server.listen(this.listen.port, this.listen.host, resolve);
      else server.listen(this.listen.path, resolve);
    });
    server.unref(); // a proxy does not keep the program alive
    this.server = server;
  }

  private forward(client: net.Socket): void {
    this.sockets.add(client);
    client.once('close', () => this.sockets.delete(client));
    client.pause();
    this.connector(this.connect).then(
      (inside) => {
        this.sockets.add(inside);
        inside.once('close', () => this.sockets.delete(inside));
        inside.on('error', () => client.destroy());
        client.on('error', () => inside.destroy());
        client.pipe(inside).pipe(client);
        client.resume();
      },
      () => client.destroy(),
    );
  }

  async close(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    for (const s of this.sockets) s.destroy();
    if (server) await new Promise<void>((r) => server.close(() => r()));
  }
}
