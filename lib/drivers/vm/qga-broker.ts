/**
 * A VM's qemu-ga shared between processes, as lxq-agent-broker.ts shares lxq's agent. QEMU serves
 * the guest agent's port to one client at a time (a second one waits in the listen backlog until
 * the first leaves), so the process whose GuestAgent holds `qga.sock` serves `qga-mux.sock`
 * beside it while it does: other processes speak qemu-ga's own protocol there (a QgaClient works
 * unchanged) and each command of theirs is run over the holder's connection, in turn with the
 * holder's own. The broker answers the resynchronisation (`guest-sync-delimited`, `guest-sync`)
 * itself, at once, and from then on drops the replies of that peer's earlier commands (what the
 * sync means: nothing older is answered after it). A peer's input is hostile: a line that is not
 * a JSON object gets qemu-ga's error, one longer than MAX_LINE ends the peer.
 */
import type * as net from 'node:net';

import { isObject } from '../../qmp/connection';
import { type QgaClient, QmpCommandError, QmpConnectionError } from '../../qmp';
import { type MuxServer, serveMux } from './mux-socket';

/** The longest command line a peer may send (a guest-file-write's base64 of 48 MiB fits). */
const MAX_LINE = 64 * 1024 * 1024;
/** How long a peer's command may take on the holder's connection (a stuck agent then frees it). */
const RELAY_MS = 120_000;
/** Commands qemu-ga does not answer when they succeed. */
const NO_REPLY = new Set(['guest-shutdown', 'guest-suspend-disk', 'guest-suspend-ram', 'guest-suspend-hybrid']);
const SYNC_BYTE = 0xff;

/** One process connected to the broker. */
class QgaPeer {
  private partial: Buffer[] = [];
  private size = 0;
  /** Bumped by each sync: a reply of a command sent before it is dropped. */
  private generation = 0;

  constructor(
    private readonly socket: net.Socket,
    private readonly client: QgaClient,
  ) {
    socket.on('data', (chunk: Buffer) => this.receive(chunk));
    socket.on('error', () => undefined);
  }

  close(): void {
    this.socket.destroy();
  }

  private receive(data: Buffer): void {
    let start = 0;
    while (start < data.length && !this.socket.destroyed) {
      const ff = data.indexOf(SYNC_BYTE, start);
      const nl = data.indexOf(0x0a, start);
      // 0xFF resets qemu-ga's parser: a partial line before it is dropped.
      if (ff >= 0 && (nl < 0 || ff < nl)) {
        this.partial = [];
        this.size = 0;
        start = ff + 1;
        continue;
      }
      const end = nl < 0 ? data.length : nl;
      this.size += end - start;
      if (this.size > MAX_LINE) return this.close();
      this.partial.push(data.subarray(start, end));
      if (nl < 0) return;
      start = nl + 1;
      const line = Buffer.concat(this.partial).toString('utf8').trim();
      this.partial = [];
      this.size = 0;
      if (line) this.line(line);
    }
  }

  private line(text: string): void {
    let msg: unknown;
    try {
      msg = JSON.parse(text);
    } catch {
      msg = undefined;
    }
    const command = isObject(msg) ? msg.execute : undefined;
    if (!isObject(msg) || typeof command !== 'string' || (msg.arguments !== undefined && !isObject(msg.arguments))) {
      return this.reply({ error: { class: 'GenericError', desc: 'Invalid JSON syntax or not a command' } });
    }
    const args = msg.arguments as Record<string, unknown> | undefined;
    if (command === 'guest-sync-delimited' || command === 'guest-sync') {
      this.generation++;
      return this.reply({ return: args?.id }, command === 'guest-sync-delimited');
    }
    const generation = this.generation;
    const noReply = NO_REPLY.has(command);
    this.client.execute(command, args, { timeout: RELAY_MS, noReply }).then(
      (r) => !noReply && generation === this.generation && this.reply({ return: r ?? {} }),
      (e: Error) => {
        if (e instanceof QmpConnectionError) return this.close();
        if (generation !== this.generation) return;
        this.reply({ error: e instanceof QmpCommandError ? { class: e.errorClass, desc: e.desc } : { class: 'GenericError', desc: e.message } });
      },
    );
  }

  private reply(msg: Record<string, unknown>, delimited = false): void {
    if (this.socket.destroyed) return;
    const line = Buffer.from(`${JSON.stringify(msg)}\n`);
    this.socket.write(delimited ? Buffer.concat([Buffer.from([SYNC_BYTE]), line]) : line);
  }
}

/**
 * Serves `socketPath` for other processes while `client` (this process's connection to qemu-ga's
 * port) is connected; undefined when it cannot (the path taken by something else).
 */
export async function serveQgaBroker(socketPath: string, client: QgaClient): Promise<MuxServer | undefined> {
  const served = await serveMux(socketPath, (socket) => new QgaPeer(socket, client), (close) => client.on('close', close));
  if (!client.connected) served?.close();
  return served;
}
