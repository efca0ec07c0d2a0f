/**
 * A VM's lxq agent shared between processes. QEMU serves the agent's port to one client at a
 * time, so the process whose link holds it serves `lxq-mux.sock` beside it as long as it does:
 * other processes (the CLI beside a program that holds the VM) speak the agent's own protocol
 * there, and each of their channels is relayed over the holder's connection on a channel of its
 * own, so their commands run while the holder's do. The broker answers their HELLO and PING
 * itself; everything else goes through, renumbered. When a peer goes away its commands are
 * killed and its transfers cancelled (what the agent does when a session ends); when the
 * holder's connection ends, so does the broker and every peer's connection (their commands are
 * lost, as the holder's are), and the next connection is made to QEMU.
 */
import type * as net from 'node:net';

import type { LxqAgentClient } from './lxq-agent';
import { frame, FrameType, MAGIC, takeFrames, VERSION } from './lxq-agent-protocol';
import { type MuxServer, serveMux } from './mux-socket';

/** A peer's relayed channel: its channel on the holder's connection and what ends it. */
interface Relayed {
  up: number;
  exec: boolean;
  /** Exec: EXIT and the ends of stdout and stderr (stderr already ended on a terminal). */
  exited: boolean;
  ended: { stdout: boolean; stderr: boolean };
}

/** One process connected to the broker. */
class Peer {
  private buffer: Buffer = Buffer.alloc(0);
  private synced = false;
  private readonly relayed = new Map<number, Relayed>();

  constructor(
    private readonly socket: net.Socket,
    private readonly client: LxqAgentClient,
  ) {
    socket.on('data', (chunk: Buffer) => this.receive(chunk));
    socket.on('error', () => undefined);
    socket.on('close', () => this.gone());
  }

  close(): void {
    this.socket.destroy();
  }

  private receive(chunk: Buffer): void {
    this.buffer = this.buffer.length ? Buffer.concat([this.buffer, chunk]) : chunk;
    const { rest, problem } = takeFrames(this.buffer, () => !this.socket.destroyed, (type, channel, payload) => this.handle(type, channel, payload));
    if (problem) return this.close();
    this.buffer = rest;
  }

  private handle(type: FrameType, channel: number, payload: Buffer): void {
    if (!this.synced) return this.hello(type, payload);
    if (channel === 0) {
      if (type === FrameType.Ping && payload.length <= 64) this.socket.write(frame(FrameType.Pong, 0, payload));
      return;
    }
    let r = this.relayed.get(channel);
    if (!r) {
      // A frame for a channel that is not open (a late ACK or signal): dropped, as the agent does.
      if (type !== FrameType.Exec && type !== FrameType.Request) return;
      if (!this.client.connected) return this.close();
      const exec = type === FrameType.Exec;
      const tty = exec && payload.length >= 4 && (payload.readUInt32BE(0) & 1) === 1;
      const made: Relayed = { up: 0, exec, exited: false, ended: { stdout: false, stderr: tty } };
      made.up = this.client.relay({ frame: (t, p) => this.fromAgent(channel, made, t, p), lost: () => this.close() });
      this.relayed.set(channel, (r = made));
    }
    this.client.send(type, r.up, payload);
  }

  /** The peer's HELLO: answered as the agent would, with the agent's window and limit. */
  private hello(type: FrameType, payload: Buffer): void {
    if (type !== FrameType.Hello || payload.length !== 24 || !payload.subarray(0, 8).equals(MAGIC)) return this.close();
    if (payload.readUInt16BE(8) > VERSION || payload.readUInt16BE(10) < VERSION) return this.close();
    const answer = Buffer.alloc(28);
    MAGIC.copy(answer, 0);
    answer.writeUInt16BE(VERSION, 8);
    answer.writeUInt32BE(this.client.agentMaxPayload, 12);
    answer.writeUInt32BE(this.client.agentWindow, 16);
    payload.copy(answer, 20, 16, 24);
    this.synced = true;
    this.socket.write(frame(FrameType.Hello, 0, answer));
  }

  /** A frame of the agent's for the peer's `channel`; the relay ends with the channel's last frame. */
  private fromAgent(channel: number, r: Relayed, type: FrameType, payload: Buffer): undefined {
    if (!this.socket.destroyed) this.socket.write(frame(type, channel, payload));
    if (type === FrameType.Exit) r.exited = true;
    if (type === FrameType.Stdout && payload.length === 0) r.ended.stdout = true;
    if (type === FrameType.Stderr && payload.length === 0) r.ended.stderr = true;
    const done = r.exec
      ? type === FrameType.Error || (r.exited && r.ended.stdout && r.ended.stderr)
      : type === FrameType.Error || type === FrameType.Result || (type === FrameType.Data && payload.length === 0);
    if (done) this.end(channel, r);
    return undefined;
  }

  private end(channel: number, r: Relayed): void {
    this.relayed.delete(channel);
    this.client.release(r.up);
  }

  /**
   * The peer went away: its commands are killed and its transfers cancelled, as a session's end
   * does; each relay lasts until the agent's last frame for it (dropped), so that frame is not
   * taken for a frame of no channel.
   */
  private gone(): void {
    for (const r of this.relayed.values()) {
      const kill = Buffer.alloc(4);
      kill.writeUInt32BE(9);
      this.client.send(r.exec ? FrameType.Signal : FrameType.Cancel, r.up, r.exec ? kill : undefined);
    }
  }
}

/**
 * Serves `socketPath` for other processes while `client` (this process's connection to the
 * agent's port) is connected; undefined when it cannot (the path taken by something else).
 */
export function serveBroker(socketPath: string, client: LxqAgentClient): Promise<MuxServer | undefined> {
  return serveMux(socketPath, (socket) => new Peer(socket, client), (close) => client.onClose(close));
}
