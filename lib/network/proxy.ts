/**
 * Proxy devices: a listener on the host (`listen`) whose connections are forwarded into the
 * instance (`connect`). The Node process that holds the instance serves them while it runs
 * (lxq has no daemon): they open when it starts, or when the device is added, or when a process
 * opens a running instance (`Host.get`), and close when it stops.
 */
import * as dgram from 'node:dgram';
import * as net from 'node:net';

import { InvalidArgument } from '../core/errors';
import { parseIpv4 } from './addresses';

export type InetEndpoint = { proto: 'tcp' | 'udp'; host: string; port: number };
export type UnixEndpoint = { proto: 'unix'; path: string };
export type Endpoint = InetEndpoint | UnixEndpoint;
/** Where a stream (tcp or unix) connection goes. */
export type StreamEndpoint = (InetEndpoint & { proto: 'tcp' }) | UnixEndpoint;
/** Where a udp proxy's datagrams go. */
export type DatagramEndpoint = InetEndpoint & { proto: 'udp' };

/** LXD's endpoint form: `tcp:<address>:<port>`, `udp:<address>:<port>` or `unix:<absolute path>`. */
export function parseEndpoint(key: string, text: string): Endpoint {
  const bad = (why: string) => new InvalidArgument(`bad value for "${key}": ${why}`);
  if (text.startsWith('unix:')) {
    const p = text.slice(5);
    if (!p.startsWith('/') || p.includes('\0')) throw bad(`a unix socket path must be absolute, got ${JSON.stringify(p)}`);
    return { proto: 'unix', path: p };
  }
  const m = /^(tcp|udp):(\[[0-9a-fA-F:]+\]|[\d.]+|localhost):(\d{1,5})$/.exec(text);
  if (!m || Number(m[3]) < 1 || Number(m[3]) > 65535) {
    throw bad(`expected "tcp:<address>:<port>", "udp:<address>:<port>" or "unix:<path>", got ${JSON.stringify(text)}`);
  }
  const host = m[2] === 'localhost' ? '127.0.0.1' : m[2].replace(/^\[|\]$/g, '');
  if (!host.includes(':')) {
    try {
      parseIpv4(host);
    } catch (e) {
      throw bad((e as Error).message);
    }
  }
  return { proto: m[1] as 'tcp' | 'udp', host, port: Number(m[3]) };
}

/** LXD's rule: a udp listener forwards to udp only, and a stream (tcp, unix) to a stream. */
export function checkProxyPair(where: string, listen: Endpoint, connect: Endpoint): void {
  if ((listen.proto === 'udp') !== (connect.proto === 'udp')) {
    throw new InvalidArgument(`${where}: "listen" is ${listen.proto} and "connect" is ${connect.proto}: udp is forwarded to udp only`);
  }
}

/** Opens the way inside the instance: a connection per proxied stream, a socket per udp peer. */
export interface Connector {
  stream(to: StreamEndpoint): Promise<net.Socket>;
  datagram(to: DatagramEndpoint): Promise<dgram.Socket>;
}

/** A udp peer with no traffic for this long is forgotten (its socket inside closed), as conntrack does. */
const UDP_IDLE_MS = 60_000;
/** Datagrams a new udp peer may send before its socket inside is ready; more are dropped, as udp may. */
const UDP_PENDING_MAX = 64;

interface UdpPeer {
  inside: dgram.Socket | undefined;
  pending: Buffer[];
  idle: NodeJS.Timeout;
}

export class ProxyServer {
  private server: net.Server | undefined;
  private udp: dgram.Socket | undefined;
  private readonly sockets = new Set<net.Socket>();
  private readonly peers = new Map<string, UdpPeer>();

  constructor(
    readonly name: string,
    private readonly listen: Endpoint,
    private readonly connect: Endpoint,
    private readonly connector: Connector,
  ) {}

  /** Listens; an address already bound is refused with InvalidArgument naming it. */
  async start(): Promise<void> {
    const listen = this.listen;
    const inUse = (e: NodeJS.ErrnoException) => {
      const where = listen.proto === 'unix' ? listen.path : `${listen.proto}:${listen.host}:${listen.port}`;
      return e.code === 'EADDRINUSE' ? new InvalidArgument(`proxy "${this.name}": "listen" ${where} is already in use on the host`) : e;
    };
    if (listen.proto === 'udp') {
      const udp = dgram.createSocket(listen.host.includes(':') ? 'udp6' : 'udp4');
      await new Promise<void>((resolve, reject) => {
        udp.once('error', (e) => reject(inUse(e)));
        udp.bind(listen.port, listen.host, () => resolve());
      });
      udp.on('message', (msg, from) => this.relay(udp, msg, from));
      udp.on('error', () => undefined); // a peer's ICMP error is not the listener's end
      udp.unref(); // a proxy does not keep the program alive
      this.udp = udp;
      return;
    }
    const server = net.createServer((client) => this.forward(client));
    const stream = listen as StreamEndpoint;
    await new Promise<void>((resolve, reject) => {
      server.once('error', (e) => reject(inUse(e)));
      if (stream.proto === 'tcp') server.listen(stream.port, stream.host, resolve);
      else server.listen(stream.path, resolve);
    });
    server.unref();
    this.server = server;
  }

  /** A datagram from a peer of the listener goes out of the peer's own socket inside; replies come back to it. */
  private relay(udp: dgram.Socket, msg: Buffer, from: dgram.RemoteInfo): void {
    const key = `${from.address}|${from.port}`;
    const known = this.peers.get(key);
    if (known) {
      known.idle.refresh();
      if (known.inside) known.inside.send(msg);
      else if (known.pending.length < UDP_PENDING_MAX) known.pending.push(msg);
      return;
    }
    const peer: UdpPeer = { inside: undefined, pending: [msg], idle: setTimeout(() => this.forget(key), UDP_IDLE_MS).unref() };
    this.peers.set(key, peer);
    this.connector.datagram(this.connect as DatagramEndpoint).then(
      (inside) => {
        if (this.peers.get(key) !== peer) return inside.close();
        peer.inside = inside;
        inside.unref();
        inside.on('message', (reply) => {
          peer.idle.refresh();
          udp.send(reply, from.port, from.address);
        });
        inside.on('error', () => this.forget(key));
        for (const m of peer.pending.splice(0)) inside.send(m);
      },
      () => this.forget(key),
    );
  }

  private forget(key: string): void {
    const peer = this.peers.get(key);
    if (!peer) return;
    this.peers.delete(key);
    clearTimeout(peer.idle);
    peer.inside?.close();
  }

  private forward(client: net.Socket): void {
    this.sockets.add(client);
    client.once('close', () => this.sockets.delete(client));
    client.pause();
    this.connector.stream(this.connect as StreamEndpoint).then(
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
    const udp = this.udp;
    this.server = undefined;
    this.udp = undefined;
    for (const s of this.sockets) s.destroy();
    for (const key of [...this.peers.keys()]) this.forget(key);
    if (server) await new Promise<void>((r) => server.close(() => r()));
    if (udp) await new Promise<void>((r) => udp.close(() => r()));
  }
}
