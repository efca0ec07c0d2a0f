/**
 * A VM's link to its lxq agent (QEMU's `lxq-agent.sock`, the host end of the virtio-serial port
 * org.lxq.agent.0): one LxqAgentClient, connected on first need and again after it closed.
 *
 * - QEMU serves the chardev to one client at a time: a connection with no command on it is given
 *   up after IDLE_MS, so another process gets its turn. The agent kills a session's commands
 *   when its host goes away, so a connection is kept for as long as it has commands.
 * - While a process holds the port it serves it to the others on `lxq-mux.sock`
 *   (lxq-agent-broker.ts), which a link tries first: the CLI execs beside a program whose
 *   command holds the VM's port. The holder keeps the port while others are connected.
 * - The guest may lose its agent while the socket to QEMU stays open (QEMU does not close its end
 *   when the guest closes the port). The VM's monitor reports it (VSERPORT_CHANGE, open false:
 *   `portClosed`), and while commands run the agent is pinged every PING_EVERY_MS: no answer for
 *   SILENT_MS (the monitor may be held by another process, which then gets the event) ends the
 *   connection. Either way the commands reject with LxqAgentLost, and the next call connects
 *   again (to the respawned agent, once it answers).
 */
import * as net from 'node:net';

import { InvalidState } from '../../core/errors';
import type { InstanceProcess } from '../../instance/process';
import { LxqAgentClient } from './lxq-agent';
import { serveBroker } from './lxq-agent-broker';
import { connectMux, type MuxServer } from './mux-socket';
import { LxqAgentLost, type LxqAgentSpawnOptions } from './lxq-agent-protocol';

const IDLE_MS = 1_000;
/** One connection's wait for the agent's HELLO before a new connection is tried. */
const ATTEMPT_MS = 3_000;
const PING_EVERY_MS = 1_000;
/** Long enough for a guest under heavy load to answer a ping (a guest at load 20 under TCG took seconds). */
const SILENT_MS = 10_000;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export class LxqAgentLink {
  private client: LxqAgentClient | undefined;
  /** The connection being made, shared by concurrent callers, and until when it waits. */
  private connecting: { deadline: number; promise: Promise<LxqAgentClient> } | undefined;
  private idle: NodeJS.Timeout | undefined;
  private pinger: NodeJS.Timeout | undefined;
  /** While this process holds the port: the broker serving it to others (their connections keep it held). */
  private broker: MuxServer | undefined;

  constructor(
    private readonly socketPath: string,
    private readonly vmName: string,
    /** Where the process holding the port serves it to others (lxq-agent-broker.ts); none: not shared. */
    private readonly muxPath?: string,
  ) {}

  /**
   * The connected client: connects (once, shared by concurrent callers) when there is none,
   * waiting up to `timeoutMs` for the agent to answer (a guest still booting). InvalidState
   * when it does not.
   */
  async connect(timeoutMs: number): Promise<LxqAgentClient> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (this.client?.connected) return this.client;
      let attempt = this.connecting;
      if (!attempt) {
        const made: { deadline: number; promise: Promise<LxqAgentClient> } = { deadline, promise: this.open(timeoutMs) };
        made.promise.finally(() => this.connecting === made && (this.connecting = undefined)).catch(() => undefined);
        this.connecting = attempt = made;
      }
      try {
        return await attempt.promise;
      } catch (e) {
        // The shared attempt was another caller's shorter wait (state() gives it a second while a
        // start's exec gives it a minute): this caller's own wait goes on with an attempt of its own.
        if (attempt.deadline >= deadline) throw e;
      }
    }
  }

  private async open(timeoutMs: number): Promise<LxqAgentClient> {
    const deadline = Date.now() + timeoutMs;
    let last: unknown;
    while (Date.now() < deadline) {
      try {
        const client = (await this.viaBroker()) ?? (await this.direct(deadline));
        this.client = client;
        client.onClose(() => {
          if (this.client !== client) return;
          this.client = undefined;
          this.broker = undefined;
          clearInterval(this.pinger);
          this.pinger = undefined;
        });
        this.releaseWhenIdle();
        return client;
      } catch (e) {
        last = e;
        // No socket, or nobody listening on it: QEMU does not run; waiting will not help.
        const code = (e as { code?: string }).code;
        if (code === 'ENOENT' || code === 'ECONNREFUSED') break;
        await sleep(20);
      }
    }
    throw new InvalidState(`the lxq agent of ${this.vmName} does not answer: ${(last as Error)?.message ?? 'no attempt'}`, 'running');
  }

  /** A connection to another process's broker when one serves the port; undefined when none does. */
  private async viaBroker(): Promise<LxqAgentClient | undefined> {
    const socket = await connectMux(this.muxPath);
    if (!socket) return undefined;
    return LxqAgentClient.connect(socket, { timeout: ATTEMPT_MS });
  }

  /** A connection to QEMU's socket, the port's own; served to other processes while it lasts. */
  private async direct(deadline: number): Promise<LxqAgentClient> {
    const socket = net.createConnection({ path: this.socketPath });
    socket.unref(); // the agent's connection never keeps Node alive
    // QEMU accepts at once; the answer comes when the guest's agent reads the HELLO. Tried
    // again on a new connection after a while: a debian/12 guest sometimes never saw the
    // HELLO of a connection made soon after another closed (see the report in #25).
    const client = await LxqAgentClient.connect(socket, { timeout: Math.max(1, Math.min(ATTEMPT_MS, deadline - Date.now())) });
    if (this.muxPath) this.broker = await serveBroker(this.muxPath, client).catch(() => undefined);
    return client;
  }

  /** Starts a command through the agent (connecting first, waiting up to `waitMs`). */
  async spawn(argv: string[], opts: LxqAgentSpawnOptions, waitMs: number): Promise<InstanceProcess> {
    const client = await this.connect(waitMs);
    clearTimeout(this.idle);
    const proc = await client.spawn(argv, opts);
    this.watch(client);
    const done = () => this.releaseWhenIdle();
    proc.exit.then(done, done);
    return proc;
  }

  /**
   * The client, for a request (files, state): connected as for a command, watched while the
   * request runs and given up once idle.
   */
  async use(waitMs: number): Promise<LxqAgentClient> {
    const client = await this.connect(waitMs);
    clearTimeout(this.idle);
    this.watch(client);
    this.releaseWhenIdle();
    return client;
  }

  /** While `client` has commands, pings it; silence for SILENT_MS ends the connection. */
  private watch(client: LxqAgentClient): void {
    if (this.pinger) return;
    let lastAnswer = Date.now();
    this.pinger = setInterval(() => {
      if (!client.connected || client.active === 0) {
        clearInterval(this.pinger);
        this.pinger = undefined;
        return;
      }
      if (Date.now() - lastAnswer > SILENT_MS) {
        client.close(new LxqAgentLost(`the lxq agent of ${this.vmName} stopped answering (no reply for ${SILENT_MS} ms)`));
        return;
      }
      client.ping(SILENT_MS).then(
        () => (lastAnswer = Date.now()),
        () => undefined,
      );
    }, PING_EVERY_MS);
    this.pinger.unref();
  }

  /** The guest closed the agent's port (the agent died or restarted): its commands are lost. */
  portClosed(): void {
    this.client?.close(new LxqAgentLost(`the lxq agent of ${this.vmName} went away (the guest closed its port)`));
  }

  /** True if a client is connected now (no connection attempt). */
  get connected(): boolean {
    return !!this.client?.connected;
  }

  /** Closes the connection once no command has used it for IDLE_MS (checked again while some run). */
  private releaseWhenIdle(): void {
    clearTimeout(this.idle);
    if (!this.client) return;
    this.idle = setTimeout(() => {
      if (this.client?.active === 0 && !this.broker?.peers) this.close();
      else this.releaseWhenIdle();
    }, IDLE_MS);
    this.idle.unref();
  }

  close(): void {
    clearTimeout(this.idle);
    clearInterval(this.pinger);
    this.pinger = undefined;
    const c = this.client;
    this.client = undefined;
    this.broker = undefined;
    c?.close();
  }
}
