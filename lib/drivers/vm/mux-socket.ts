/**
 * The socket on which the process holding one of a VM's agent ports serves it to other processes
 * (lxq-agent-broker.ts for lxq's agent, qga-broker.ts for qemu-ga): listened on under a name of
 * its own and renamed over the path (a connection never sees a half-made socket), removed when
 * closed while it is still this process's (another process may hold the port by then).
 */
import { promises as fs } from 'node:fs';
import * as net from 'node:net';

/** A served mux socket: its connected peers, and its end. */
export interface MuxServer {
  close(): void;
  readonly peers: number;
}

/**
 * Serves `socketPath`, making a peer of each connection with `peer`; `onEnd` is given the close
 * (called when the holder's connection ends). Undefined when the path cannot be served.
 */
export async function serveMux(socketPath: string, peer: (socket: net.Socket) => { close(): void }, onEnd: (close: () => void) => void): Promise<MuxServer | undefined> {
  const peers = new Set<{ close(): void }>();
  const server = net.createServer((socket) => {
    const p = peer(socket);
    peers.add(p);
    socket.on('close', () => peers.delete(p));
  });
  const staging = `${socketPath}.${process.pid}`;
  await fs.rm(staging, { force: true });
  const listening = await new Promise<boolean>((resolve) => {
    server.once('error', () => resolve(false));
    server.listen(staging, () => resolve(true));
  });
  if (!listening) return undefined;
  server.unref();
  await fs.rename(staging, socketPath);
  const ino = (await fs.stat(socketPath)).ino;
  let closed = false;
  const close = () => {
    if (closed) return;
    closed = true;
    server.close();
    for (const p of peers) p.close();
    fs.stat(socketPath).then((st) => (st.ino === ino ? fs.rm(socketPath, { force: true }) : undefined)).catch(() => undefined);
  };
  onEnd(close);
  return {
    close,
    get peers() {
      return peers.size;
    },
  };
}

/**
 * A connection to the mux socket at `socketPath` (unref'd: it never keeps Node alive); undefined
 * when none listens there (no file, or a dead process's): the port is then free to take.
 */
export async function connectMux(socketPath: string | undefined): Promise<net.Socket | undefined> {
  if (!socketPath) return undefined;
  const socket = await new Promise<net.Socket | undefined>((resolve) => {
    const s = net.createConnection({ path: socketPath }, () => resolve(s));
    s.once('error', () => resolve(undefined));
  });
  socket?.unref();
  return socket;
}
