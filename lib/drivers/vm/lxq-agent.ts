/**
 * The host side of lxq's own guest agent (`native/agent/`, protocol in
 * `native/agent/PROTOCOL.md`): one connection to QEMU's chardev socket of the agent's
 * virtio-serial port, many commands multiplexed over it, each presented as an InstanceProcess
 * whose stdin, stdout and stderr stream while it runs.
 *
 * The agent is hostile input: a frame over the maximum, of an unknown type or the wrong size, or
 * output past a stream's window is a protocol error (LxqAgentProtocolError): the connection is
 * closed and everything pending on it rejects; nothing here grows with what the agent sends (a
 * stream buffers at most its window plus the consumer's high-water mark, since the agent sends
 * more only once the consumer has read).
 */
import { randomBytes } from 'node:crypto';
import * as net from 'node:net';
import { Readable, Writable } from 'node:stream';

import { InvalidArgument, InvalidState, OperationFailed, Timeout } from '../../core/errors';
import { checkWindowSize, ExitStatus, InstanceProcess, signalName, signalNumber } from '../../instance/process';
import {
  AGENT_HELLO_PREFIX,
  AGENT_HELLO_SIZE,
  frame,
  FrameType,
  HEADER,
  LxqAgentLost,
  LxqAgentProtocolError,
  type ChannelHandler,
  type LxqAgentSpawnOptions,
  MAGIC,
  MAX_DATA,
  MAX_PAYLOAD,
  STREAM_HIGH_WATER,
  StreamId,
  takeFrames,
  VERSION,
} from './lxq-agent-protocol';

/**
 * A connection to an lxq agent.
 *
 * @example
 * ```ts
 * const agent = await LxqAgentClient.connect('/var/lib/lxq/instances/vm1/lxq-agent.sock');
 * const p = await agent.spawn(['sh', '-c', 'cat'], { env: ['PATH=/usr/bin:/bin'] });
 * ```
 */
export class LxqAgentClient {
  private readonly socket: net.Socket;
  private buffer: Buffer = Buffer.alloc(0);
  private synced = false;
  private readonly nonce = randomBytes(8);
  private readonly commands = new Map<number, AgentCommand>();
  private readonly starting = new Map<number, { resolve: (c: AgentCommand) => void; reject: (e: Error) => void; pty: boolean }>();
  private readonly pings = new Map<string, () => void>();
  /** Requests (files, state) in progress, by channel. */
  private readonly channels = new Map<number, ChannelHandler>();
  private nextChannel = 1;
  private closedBy: Error | undefined;
  private readonly closeListeners = new Set<(reason: Error) => void>();
  private handshake: { resolve: () => void; reject: (e: Error) => void } | undefined;
  /** The agent's window per stream (from its HELLO). */
  private window = 0;
  private maxPayload = 0;

  private constructor(socket: net.Socket) {
    this.socket = socket;
    socket.on('data', (chunk: Buffer) => this.receive(chunk));
    socket.on('error', (e) => this.fail(new LxqAgentLost(`the lxq agent's connection failed: ${e.message}`, { cause: e })));
    socket.on('close', () => this.fail(new LxqAgentLost("the lxq agent's connection closed")));
  }

  /**
   * Connects to the agent's socket (a path, or a connected socket) and makes the handshake;
   * rejects with Timeout when no agent answers within `timeout` ms.
   */
  static async connect(target: string | net.Socket, opts: { timeout?: number } = {}): Promise<LxqAgentClient> {
    const timeout = opts.timeout ?? 5_000;
    const socket = typeof target === 'string' ? net.createConnection({ path: target }) : target;
    const client = new LxqAgentClient(socket);
    const shaken = new Promise<void>((resolve, reject) => (client.handshake = { resolve, reject }));
    const hello = Buffer.alloc(24);
    MAGIC.copy(hello, 0);
    hello.writeUInt16BE(VERSION, 8);
    hello.writeUInt16BE(VERSION, 10);
    client.nonce.copy(hello, 16);
    socket.write(frame(FrameType.Hello, 0, hello));
    let timer: NodeJS.Timeout | undefined;
    try {
      await Promise.race([
        shaken,
        new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Timeout(`the lxq agent did not answer within ${timeout} ms`)), timeout))),
      ]);
    } catch (e) {
      client.close();
      throw e;
    } finally {
      clearTimeout(timer);
    }
    return client;
  }

  /** False once the connection has closed (for any reason). */
  get connected(): boolean {
    return !this.closedBy;
  }

  /** Calls `listener` once with the reason when the connection ends; returns what unsubscribes it. */
  onClose(listener: (reason: Error) => void): () => void {
    if (this.closedBy) listener(this.closedBy);
    else this.closeListeners.add(listener);
    return () => void this.closeListeners.delete(listener);
  }

  /** Commands started and not yet done (exited, output ended). */
  get active(): number {
    return this.commands.size + this.starting.size + this.channels.size;
  }

  /** Closes the connection; whatever is pending rejects with `reason`. */
  close(reason: Error = new LxqAgentLost('the lxq agent connection was closed')): void {
    this.fail(reason);
  }

  /** Resolves when the agent answers a PING within `timeout` ms. */
  async ping(timeout = 5_000): Promise<void> {
    this.refuseWhenClosed();
    const token = randomBytes(8);
    const key = token.toString('hex');
    let timer: NodeJS.Timeout | undefined;
    let unsubscribe: () => void = () => undefined;
    try {
      await new Promise<void>((resolve, reject) => {
        this.pings.set(key, resolve);
        unsubscribe = this.onClose(reject);
        timer = setTimeout(() => reject(new Timeout(`the lxq agent did not answer a ping within ${timeout} ms`)), timeout);
        this.socket.write(frame(FrameType.Ping, 0, token));
      });
    } finally {
      clearTimeout(timer);
      this.pings.delete(key);
      unsubscribe();
    }
  }

  /** Starts `argv`; resolves once the agent has started it (its pid known). */
  async spawn(argv: string[], opts: LxqAgentSpawnOptions): Promise<InstanceProcess> {
    this.refuseWhenClosed();
    const strings = [opts.cwd ?? '', ...argv, ...opts.env];
    const fixed = Buffer.alloc(24);
    fixed.writeUInt32BE(opts.pty ? 1 : 0, 0);
    fixed.writeUInt32BE(opts.user ?? 0, 4);
    fixed.writeUInt32BE(opts.group ?? 0, 8);
    fixed.writeUInt16BE(opts.pty?.cols ?? 80, 12);
    fixed.writeUInt16BE(opts.pty?.rows ?? 24, 14);
    fixed.writeUInt32BE(argv.length, 16);
    fixed.writeUInt32BE(opts.env.length, 20);
    const payload = Buffer.concat([fixed, ...strings.map((s) => Buffer.from(s + '\0'))]);
    if (payload.length > MAX_PAYLOAD) throw new InvalidArgument(`the command line and environment take ${payload.length} bytes; the lxq agent takes at most ${MAX_PAYLOAD}`);
    const channel = this.allocate();
    return new Promise<InstanceProcess>((resolve, reject) => {
      this.starting.set(channel, { resolve, reject, pty: !!opts.pty });
      this.holdWhileActive();
      this.socket.write(frame(FrameType.Exec, channel, payload));
    });
  }

  private allocate(): number {
    const channel = this.nextChannel;
    this.nextChannel = this.nextChannel >= 0xffffffff ? 1 : this.nextChannel + 1;
    return channel;
  }

  /** Sends a REQUEST on a new channel whose frames go to `handler` until `release`; returns the channel. */
  request(payload: Buffer, handler: ChannelHandler): number {
    this.refuseWhenClosed();
    const channel = this.allocate();
    this.channels.set(channel, handler);
    this.holdWhileActive();
    this.socket.write(frame(FrameType.Request, channel, payload));
    return channel;
  }

  /** A new channel whose frames go to `handler` until `release`, for another process's channel (lxq-agent-broker.ts). */
  relay(handler: ChannelHandler): number {
    this.refuseWhenClosed();
    const channel = this.allocate();
    this.channels.set(channel, handler);
    this.holdWhileActive();
    return channel;
  }

  /** A request's channel is done (its RESULT, ERROR or end came). */
  release(channel: number): void {
    this.channels.delete(channel);
    this.holdWhileActive();
  }

  private refuseWhenClosed(): void {
    if (this.closedBy) throw new LxqAgentLost(`the lxq agent connection is closed: ${this.closedBy.message}`, { cause: this.closedBy });
  }

  /** Sends a frame unless the connection has ended (a late kill, resize or ack is then moot). */
  send(type: FrameType, channel: number, payload?: Buffer): void {
    if (!this.closedBy) this.socket.write(frame(type, channel, payload));
  }

  get agentWindow(): number {
    return this.window;
  }

  /** The largest payload the agent accepts (from its HELLO). */
  get agentMaxPayload(): number {
    return this.maxPayload;
  }

  /** A command whose exit and output ends have all arrived no longer needs its channel. */
  forget(channel: number): void {
    this.commands.delete(channel);
    this.holdWhileActive();
  }

  /**
   * The connection keeps Node alive while a command starts or runs (a program awaiting an exit
   * has nothing else pending), and not while idle (a connection kept for the next command).
   */
  private holdWhileActive(): void {
    if (this.active > 0) this.socket.ref();
    else this.socket.unref();
  }

  private fail(reason: Error): void {
    if (this.closedBy) return;
    this.closedBy = reason;
    this.socket.destroy();
    this.buffer = Buffer.alloc(0);
    this.handshake?.reject(reason);
    for (const s of this.starting.values()) s.reject(reason);
    this.starting.clear();
    for (const c of this.commands.values()) c.lost(reason);
    this.commands.clear();
    for (const h of this.channels.values()) h.lost(reason);
    this.channels.clear();
    const listeners = [...this.closeListeners];
    this.closeListeners.clear();
    for (const l of listeners) l(reason);
  }

  private receive(chunk: Buffer): void {
    if (this.closedBy) return;
    this.buffer = this.buffer.length ? Buffer.concat([this.buffer, chunk]) : chunk;
    if (!this.synced && !this.findHello()) return;
    const { rest, problem } = takeFrames(this.buffer, () => !this.closedBy, (type, channel, payload) => this.handle(type, channel, payload));
    if (problem) return this.fail(new LxqAgentProtocolError(problem));
    if (!this.closedBy) this.buffer = rest;
  }

  /**
   * Before the handshake everything is left over from an earlier session (another process's
   * commands, an agent restarted): skipped until the agent's HELLO with our nonce.
   */
  private findHello(): boolean {
    for (;;) {
      const at = this.buffer.indexOf(AGENT_HELLO_PREFIX);
      if (at < 0) {
        this.buffer = Buffer.from(this.buffer.subarray(Math.max(0, this.buffer.length - AGENT_HELLO_PREFIX.length + 1)));
        return false;
      }
      if (this.buffer.length - at < HEADER + AGENT_HELLO_SIZE) {
        this.buffer = Buffer.from(this.buffer.subarray(at));
        return false;
      }
      const hello = this.buffer.subarray(at + HEADER, at + HEADER + AGENT_HELLO_SIZE);
      if (!hello.subarray(20, 28).equals(this.nonce)) {
        this.buffer = this.buffer.subarray(at + 1);
        continue;
      }
      const version = hello.readUInt16BE(8);
      this.window = hello.readUInt32BE(16);
      this.maxPayload = hello.readUInt32BE(12);
      this.buffer = Buffer.from(this.buffer.subarray(at + HEADER + AGENT_HELLO_SIZE));
      if (version !== VERSION) {
        this.fail(new LxqAgentProtocolError(`the guest's lxq agent does not speak this host's protocol version ${VERSION}: its image was built by another lxq (the image store builds it again from this lxq's native/agent/)`));
        return false;
      }
      if (this.window < 1 || this.window > 16 * 1024 * 1024) {
        this.fail(new LxqAgentProtocolError(`a window of ${this.window} bytes`));
        return false;
      }
      this.synced = true;
      this.holdWhileActive();
      this.handshake?.resolve();
      this.handshake = undefined;
      return true;
    }
  }

  private handle(type: number, channel: number, payload: Buffer): void {
    const bad = (what: string) => this.fail(new LxqAgentProtocolError(`${what} (channel ${channel}, ${payload.length} bytes)`));
    const handler = channel === 0 ? undefined : this.channels.get(channel);
    if (handler) {
      const problem = handler.frame(type, payload);
      return problem ? bad(problem) : undefined;
    }
    switch (type) {
      case FrameType.Pong:
        this.pings.get(payload.toString('hex'))?.();
        return;
      case FrameType.Hello:
        return bad('a second HELLO');
      case FrameType.Error: {
        if (payload.length < 4) return bad('a malformed ERROR');
        const errno = payload.readUInt32BE(0);
        const message = payload.subarray(4, 4 + 1024).toString('utf8');
        if (channel === 0) return this.fail(new LxqAgentProtocolError(`the agent ended the session: ${message}`));
        const s = this.starting.get(channel);
        if (!s) return bad('an ERROR for no command being started');
        this.starting.delete(channel);
        this.holdWhileActive();
        s.reject(new OperationFailed(`the lxq agent could not start the command: ${message}`, { call: 'lxq-agent:exec', errno }));
        return;
      }
      case FrameType.Started: {
        const s = this.starting.get(channel);
        if (!s || payload.length !== 4) return bad('an unexpected STARTED');
        this.starting.delete(channel);
        const command = new AgentCommand(this, channel, payload.readUInt32BE(0), s.pty);
        this.commands.set(channel, command);
        s.resolve(command);
        return;
      }
      case FrameType.Stdout:
      case FrameType.Stderr:
      case FrameType.Ack:
      case FrameType.Exit: {
        const command = this.commands.get(channel);
        if (!command) return bad('a frame for no running command');
        const problem = command.receive(type, payload);
        if (problem) bad(problem);
        return;
      }
      default:
        return bad(`an unknown frame type ${type}`);
    }
  }
}

/** One command run by the agent. */
class AgentCommand implements InstanceProcess {
  readonly stdin: Writable;
  readonly stdout: Readable;
  readonly stderr: Readable;
  readonly exit: Promise<ExitStatus>;
  private settleExit!: { resolve: (s: ExitStatus) => void; reject: (e: Error) => void };
  private exited = false;
  private ended = { stdout: false, stderr: false };
  /** Output received and not yet acknowledged to the agent (what it counts against its window). */
  private unacked = { stdout: 0, stderr: 0 };
  /** Stdin bytes sent and not yet acknowledged; writes wait while it is at the window. */
  private stdinInFlight = 0;
  private stdinWaiter: (() => void) | undefined;
  private gone: Error | undefined;

  constructor(
    private readonly client: LxqAgentClient,
    private readonly channel: number,
    readonly pid: number,
    readonly tty: boolean,
  ) {
    this.exit = new Promise<ExitStatus>((resolve, reject) => (this.settleExit = { resolve, reject }));
    this.exit.catch(() => undefined);
    this.stdout = new Readable({ highWaterMark: STREAM_HIGH_WATER, read: () => this.acknowledge('stdout') });
    this.stderr = new Readable({ highWaterMark: STREAM_HIGH_WATER, read: () => this.acknowledge('stderr') });
    // On a terminal there is no stderr of its own: it is merged into stdout.
    if (tty) this.endStream('stderr');
    this.stdin = new Writable({
      highWaterMark: MAX_DATA,
      write: (chunk: Buffer, _encoding, callback) => this.writeStdin(chunk).then(() => callback(), callback),
      final: (callback) => {
        this.client.send(FrameType.Stdin, this.channel);
        callback();
      },
    });
  }

  kill(signal: NodeJS.Signals | number = 'SIGTERM'): boolean {
    const n = signalNumber(signal);
    if (this.exited || this.gone) return false;
    const payload = Buffer.alloc(4);
    payload.writeUInt32BE(n);
    this.client.send(FrameType.Signal, this.channel, payload);
    return true;
  }

  resize(cols: number, rows: number): void {
    checkWindowSize(cols, rows);
    if (!this.tty) throw new InvalidState('this process has no terminal (spawn it with { pty: true })');
    const payload = Buffer.alloc(4);
    payload.writeUInt16BE(cols, 0);
    payload.writeUInt16BE(rows, 2);
    this.client.send(FrameType.Resize, this.channel, payload);
  }

  /** A frame for this command; returns what is wrong with it, if anything (a protocol error). */
  receive(type: FrameType, payload: Buffer): string | undefined {
    if (type === FrameType.Exit) {
      if (payload.length !== 12 || this.exited) return 'a malformed or second EXIT';
      this.exited = true;
      const code = payload.readUInt32BE(0);
      const signal = payload.readUInt32BE(4);
      this.settleExit.resolve(signal ? { exitCode: null, signal: signalName(signal) } : { exitCode: code, signal: null });
      this.forgetWhenDone();
      return undefined;
    }
    if (type === FrameType.Ack) {
      if (payload.length !== 8 || payload.readUInt8(0) !== StreamId.Stdin) return 'a malformed ACK';
      const bytes = payload.readUInt32BE(4);
      if (bytes > this.stdinInFlight) return 'an ACK of more stdin than was sent';
      this.stdinInFlight -= bytes;
      this.stdinWaiter?.();
      return undefined;
    }
    const name = type === FrameType.Stdout ? 'stdout' : 'stderr';
    if (this.ended[name]) return `${name} data after its end`;
    if (payload.length === 0) {
      this.endStream(name);
      this.forgetWhenDone();
      return undefined;
    }
    if (payload.length > MAX_DATA) return `a ${name} frame over ${MAX_DATA} bytes`;
    if (this.unacked[name] + payload.length > this.client.agentWindow) return `${name} past its window`;
    this.unacked[name] += payload.length;
    // Copied: the payload is a view of the connection's read buffer.
    if (this[name].push(Buffer.from(payload))) this.acknowledge(name);
    return undefined;
  }

  /** The consumer wants more: what it was given is acknowledged, so the agent may send more. */
  private acknowledge(name: 'stdout' | 'stderr'): void {
    const bytes = this.unacked[name];
    if (bytes === 0 || this.ended[name]) return;
    this.unacked[name] = 0;
    const payload = Buffer.alloc(8);
    payload.writeUInt8(name === 'stdout' ? StreamId.Stdout : StreamId.Stderr, 0);
    payload.writeUInt32BE(bytes, 4);
    this.client.send(FrameType.Ack, this.channel, payload);
  }

  private async writeStdin(chunk: Buffer): Promise<void> {
    for (let at = 0; at < chunk.length; ) {
      // After the command is gone its input goes nowhere, as into a pipe nobody reads.
      if (this.gone || (this.exited && this.ended.stdout && this.ended.stderr)) return;
      const window = this.client.agentWindow;
      if (this.stdinInFlight >= window) {
        await new Promise<void>((resolve) => (this.stdinWaiter = resolve));
        this.stdinWaiter = undefined;
        continue;
      }
      const size = Math.min(MAX_DATA, chunk.length - at, window - this.stdinInFlight);
      this.stdinInFlight += size;
      this.client.send(FrameType.Stdin, this.channel, chunk.subarray(at, at + size));
      at += size;
    }
  }

  private endStream(name: 'stdout' | 'stderr'): void {
    this.ended[name] = true;
    this[name].push(null);
  }

  private forgetWhenDone(): void {
    if (!this.exited || !this.ended.stdout || !this.ended.stderr) return;
    this.client.forget(this.channel);
    this.stdinWaiter?.();
  }

  /** The connection ended before the command did. */
  lost(reason: Error): void {
    this.gone = reason;
    this.stdinWaiter?.();
    if (!this.ended.stdout) this.endStream('stdout');
    if (!this.ended.stderr) this.endStream('stderr');
    if (!this.exited) this.settleExit.reject(reason);
  }
}
