/**
 * A VM's guest agent (qemu-ga in the guest, over the `qga.sock` virtio-serial channel): one
 * QgaClient per VM, connected lazily, and connected again after QEMU restarts (the old socket
 * closes with the old QEMU, and the next call opens a new one). QEMU serves the channel to one
 * client at a time, so an idle connection is given up soon, and while this process holds it it
 * serves it to the others on `qga-mux.sock` (qga-broker.ts), which a GuestAgent tries first: the
 * CLI's exec in an image without lxq's agent runs beside a program's long command. The next call
 * after a release connects again (~ms; the sync-delimited handshake drops whatever a previous
 * client left unread).
 */
import * as net from 'node:net';

import { InvalidState, OperationFailed } from '../../core/errors';
import { QgaClient, QmpCommandError, QmpError } from '../../qmp';
import { connectMux, type MuxServer } from './mux-socket';
import { serveQgaBroker } from './qga-broker';

/** Bound on connect + sync of one attempt. */
const CONNECT_MS = 5_000;
/**
 * How long exec and files wait for the agent of a running VM (a guest still booting: ~4 s under
 * TCG here), so `await vm.start(); await vm.exec(…)` works as it does for a container.
 */
const AUTO_WAIT_MS = 60_000;
/** Default timeout of an agent command. */
const COMMAND_MS = 30_000;
/** How long a connection nobody uses is kept (an exec's status polls come well within it). */
const IDLE_MS = 1_000;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export class GuestAgent {
  private client: QgaClient | undefined;
  private connecting: Promise<QgaClient> | undefined;
  /** Commands waiting for their reply; the connection is kept while there are any. */
  private inFlight = 0;
  private idle: NodeJS.Timeout | undefined;
  /** While this process holds the port: the broker serving it to others (their connections keep it held). */
  private broker: MuxServer | undefined;

  constructor(
    private readonly socketPath: string,
    private readonly vmName: string,
    /** Where the process holding the port serves it to others (qga-broker.ts); none: not shared. */
    private readonly muxPath?: string,
  ) {}

  /** The connected client; connects (once, shared by concurrent callers) when there is none. */
  connect(timeoutMs = CONNECT_MS): Promise<QgaClient> {
    if (this.client?.connected) return Promise.resolve(this.client);
    this.connecting ??= (async () => {
      const client = (await this.viaBroker(timeoutMs)) ?? (await this.direct(timeoutMs));
      this.client = client;
      client.on('close', () => {
        if (this.client !== client) return;
        this.client = undefined;
        this.broker = undefined;
      });
      this.releaseWhenIdle();
      return client;
    })().finally(() => (this.connecting = undefined));
    return this.connecting;
  }

  /** A connection to another process's broker when one serves the port; undefined when none listens. */
  private async viaBroker(timeoutMs: number): Promise<QgaClient | undefined> {
    const socket = await connectMux(this.muxPath);
    if (!socket) return undefined;
    return QgaClient.connect(socket, { timeout: COMMAND_MS, connectTimeout: timeoutMs });
  }

  /** A connection to QEMU's socket, the port's own; served to other processes while it lasts. */
  private async direct(timeoutMs: number): Promise<QgaClient> {
    const socket = net.createConnection({ path: this.socketPath });
    socket.unref(); // the agent's connection never keeps Node alive
    const client = await QgaClient.connect(socket, { timeout: COMMAND_MS, connectTimeout: timeoutMs });
    if (this.muxPath) this.broker = await serveQgaBroker(this.muxPath, client).catch(() => undefined);
    return client;
  }

  /** True if a client is connected now (no connection attempt). */
  get connected(): boolean {
    return !!this.client?.connected;
  }

  /**
   * Resolves when the agent answers a sync (the guest has booted far enough to run commands);
   * retries while QEMU's socket is not there yet or the agent does not answer yet.
   */
  async wait(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    let last: unknown;
    while (Date.now() < deadline) {
      try {
        await this.connect(Math.max(1, Math.min(2_000, deadline - Date.now())));
        return;
      } catch (e) {
        last = e;
        // No socket, or nobody listening on it: QEMU does not run; waiting will not help.
        const code = (e as { code?: string }).code;
        if (code === 'ENOENT' || code === 'ECONNREFUSED') break;
        await sleep(20);
      }
    }
    throw new OperationFailed(`the guest agent of ${this.vmName} did not answer within ${timeoutMs} ms: ${(last as Error)?.message ?? 'no attempt'}`, { call: 'qga:guest-sync-delimited' });
  }

  /**
   * Runs an agent command; agent errors become OperationFailed, a missing agent InvalidState.
   * `keepOpen`: the connection is held until it settles, for a `noReply` command's late answer
   * (see askGuestShutdown).
   */
  async execute<T>(command: string, args?: Record<string, unknown>, opts: { timeout?: number; noReply?: boolean; connectTimeout?: number; keepOpen?: Promise<unknown> } = {}): Promise<T> {
    let client: QgaClient;
    try {
      if (!this.connected) await this.wait(opts.connectTimeout ?? AUTO_WAIT_MS);
      client = await this.connect(opts.connectTimeout);
    } catch (e) {
      throw new InvalidState(`the guest agent of ${this.vmName} does not answer (does the guest run qemu-ga? another process may be using it): ${(e as Error).message}`, 'running');
    }
    this.inFlight++;
    try {
      return await client.execute<T>(command, args, opts);
    } catch (e) {
      if (e instanceof QmpCommandError) throw new AgentCommandError(command, e);
      if (e instanceof QmpError) throw new OperationFailed(`guest agent ${command} on ${this.vmName}: ${e.message}`, { call: `qga:${command}` }, { cause: e });
      throw e;
    } finally {
      await opts.keepOpen?.catch(() => undefined);
      this.inFlight--;
      this.releaseWhenIdle();
    }
  }

  /** Closes the connection once no command has used it for IDLE_MS. */
  private releaseWhenIdle(): void {
    clearTimeout(this.idle);
    if (this.inFlight > 0) return;
    this.idle = setTimeout(() => {
      if (this.inFlight === 0 && !this.broker?.peers) this.close();
      else if (this.inFlight === 0) this.releaseWhenIdle();
    }, IDLE_MS);
    this.idle.unref();
  }

  close(): void {
    clearTimeout(this.idle);
    const c = this.client;
    this.client = undefined;
    this.broker?.close();
    this.broker = undefined;
    void c?.close();
  }
}

/** The agent ran the command and refused it (its message says why, e.g. an errno text). */
export class AgentCommandError extends OperationFailed {
  constructor(
    readonly command: string,
    cause: QmpCommandError,
  ) {
    super(`guest agent ${command}: ${cause.message}`, { call: `qga:${command}` }, { cause });
  }
}
