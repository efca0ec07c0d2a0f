/**
 * A proxy device's listener and forwarding (one per listen address): what lxq's proxy process
 * (lib/host/proxy-process.ts, detached, as LXD's forkproxy) runs for each device. Where it
 * listens and how it connects are given: on the host or in the instance's network namespace.
 */
import * as dgram from 'node:dgram';
import { closeSync } from 'node:fs';
import * as net from 'node:net';

import { InvalidArgument } from '../core/errors';
import { sys } from '../native/sys';
import { type DatagramEndpoint, type Endpoint, proxyLine, type StreamEndpoint } from './proxy-address';

/** How a listener is made: an fd made elsewhere (in the instance's network namespace), or on the host (undefined). */
export type ListenFd = (() => Promise<number>) | undefined;

/** Where a listener or connection is, for messages and for Node ("\0name" is an abstract unix socket). */
export function endpointText(e: Endpoint): string {
  return e.proto === 'unix' ? `unix:${e.abstract ? '@' : ''}${e.path}` : `${e.proto}:${e.host.includes(':') ? `[${e.host}]` : e.host}:${e.port}`;
}

/** Opens the way inside the instance: a connection per proxied stream (its fd, the caller's to close), a socket per udp peer. */
export interface Connector {
  stream(to: StreamEndpoint): Promise<number>;
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
  /** The cancel functions of the stream connections being copied. */
  private readonly links = new Set<() => void>();
  private closed = false;
  private readonly peers = new Map<string, UdpPeer>();

  constructor(
    readonly name: string,
    private readonly listen: Endpoint,
    private readonly connect: Endpoint,
    private readonly connector: Connector,
    private readonly options: { listenFd?: ListenFd; proxyProtocol?: boolean } = {},
  ) {}

  /** Listens; an address already bound is refused with InvalidArgument naming it. */
  async start(): Promise<void> {
    const listen = this.listen;
    const inUse = (e: NodeJS.ErrnoException) =>
      e.code === 'EADDRINUSE' ? new InvalidArgument(`proxy "${this.name}": "listen" ${endpointText(listen)} is already in use`) : e;
    const fd = this.options.listenFd ? await this.options.listenFd().catch((e: NodeJS.ErrnoException) => Promise.reject(inUse(e))) : undefined;
    if (listen.proto === 'udp') {
      const udp = dgram.createSocket(listen.host.includes(':') ? 'udp6' : 'udp4');
      await new Promise<void>((resolve, reject) => {
        udp.once('error', (e) => reject(inUse(e)));
        if (fd !== undefined) udp.bind({ fd }, () => resolve());
        else udp.bind(listen.port, listen.host, () => resolve());
      });
      udp.on('message', (msg, from) => this.relay(udp, msg, from));
      udp.on('error', () => undefined); // a peer's ICMP error is not the listener's end
      this.udp = udp;
      return;
    }
    // Paused: Node never reads from an accepted socket (its fd goes to the kernel's copy).
    const server = net.createServer({ pauseOnConnect: true }, (client) => this.forward(client));
    await new Promise<void>((resolve, reject) => {
      server.once('error', (e) => reject(inUse(e)));
      if (fd !== undefined) server.listen({ fd }, resolve);
      else if (listen.proto === 'unix') server.listen(listen.abstract ? `\0${listen.path}` : listen.path, resolve);
      else server.listen(listen.port, listen.host, resolve);
    });
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

  /**
   * A stream connection is copied by the kernel (splice, native/splice.cc), not through Node: the
   * accepted socket's fd and the one inside are handed over and Node's own are closed at once.
   */
  private forward(client: net.Socket): void {
    client.on('error', () => client.destroy());
    this.connector.stream(this.connect as StreamEndpoint).then(
      (inside) => {
        try {
          const fd = (client as unknown as { _handle?: { fd?: number } })._handle?.fd;
          if (this.closed || client.destroyed || fd === undefined || fd < 0) return;
          const head = Buffer.from(this.options.proxyProtocol ? proxyLine(client) : '');
          const cancel = sys().spliceStreams(fd, inside, head, () => this.links.delete(cancel));
          this.links.add(cancel);
        } finally {
          closeSync(inside);
          client.destroy();
        }
      },
      () => client.destroy(),
    );
  }

  async close(): Promise<void> {
    const server = this.server;
    const udp = this.udp;
    this.server = undefined;
    this.udp = undefined;
    this.closed = true;
    for (const cancel of this.links) cancel();
    for (const key of [...this.peers.keys()]) this.forget(key);
    if (server) await new Promise<void>((r) => server.close(() => r()));
    if (udp) await new Promise<void>((r) => udp.close(() => r()));
  }
}

