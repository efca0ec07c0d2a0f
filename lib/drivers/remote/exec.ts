/**
 * Commands through LXD's exec websockets (`ws` from npm), as an InstanceProcess: a command
 * without a pty gets three data websockets (stdin, stdout, stderr), one with a pty gets one (both
 * directions of the terminal); both get a control websocket, which carries signals and window
 * sizes. The operation ends when the command has been reaped, its status in metadata.return.
 */
import { PassThrough, Readable, Writable } from 'node:stream';
import WebSocket from 'ws';

import { InvalidState } from '../../core/errors';
import { checkWindowSize, type ExitStatus, type InstanceProcess, signalName, signalNumber } from '../../instance/process';
import type { LxdClient, LxdResponse } from './client';

export interface RemoteSpawnRequest {
  argv: string[];
  env: Record<string, string>;
  cwd?: string;
  user?: number;
  group?: number;
  /** The terminal size, or null for pipes. */
  pty: { cols: number; rows: number } | null;
}

/** How long a command may run (Node's timers stop at 2^31 ms, about 24 days). */
const LONGEST_WAIT_S = 20 * 24 * 3600;

/** LXD's own refusal of a command it cannot find (lxq's runner exits 127 with this message). */
const NOT_FOUND = /command not found|no such file/i;

/** Resolves with an operation once it has ended (its failure as a typed error), like LxdClient.wait. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any -- LXD's JSON: its fields are read where they are used
export type OperationWaiter = (r: LxdResponse, what: string) => Promise<any>;

/** What the host gives the websockets of its instances. */
export interface RemoteSockets {
  /** Learns of an operation's end (the host's events websocket: no request held open per command). */
  finished?: OperationWaiter;
  /** Each websocket made, for the host to close with itself. */
  track?: (ws: WebSocket) => void;
}

/** Starts a command; without `finished`, its operation is waited on with a long-poll request. */
export async function remoteSpawn(client: LxdClient, instancePath: string, req: RemoteSpawnRequest, { finished, track }: RemoteSockets = {}): Promise<InstanceProcess> {
  const r = await client.request('POST', client.url(`${instancePath}/exec`), {
    command: req.argv,
    environment: req.env,
    'wait-for-websocket': true,
    interactive: req.pty !== null,
    'record-output': false,
    ...(req.pty ? { width: req.pty.cols, height: req.pty.rows } : {}),
    ...(req.cwd ? { cwd: req.cwd } : {}),
    ...(req.user !== undefined ? { user: req.user } : {}),
    ...(req.group !== undefined ? { group: req.group } : {}),
  });
  const opPath = r.operation!.split('?')[0];
  // Listening for the end before the command can start (it waits for the websockets).
  const what = `POST ${instancePath}/exec`;
  const done = finished ? finished(r, what) : client.wait(r, what, LONGEST_WAIT_S);
  done.catch(() => undefined);
  const fds = r.metadata.metadata.fds as Record<string, string>;
  const names = req.pty ? ['control', '0'] : ['control', '0', '1', '2'];
  const sockets = names.map((fd) => {
    const q = new URLSearchParams({ secret: fds[fd] });
    if (client.project) q.set('project', client.project);
    const ws = new WebSocket(client.websocketUrl(`${opPath}/websocket?${q}`), client.websocketOptions());
    ws.on('error', () => undefined);
    track?.(ws);
    return ws;
  });
  // LXD starts the command once the last websocket is connected: its first output may come
  // before this side has seen every socket open, so the output streams listen from the start.
  const [control, stdin, out = stdin, err] = sockets;
  const stdout = readableOf(out);
  const stderr = err ? readableOf(err) : undefined;
  const opened = await Promise.allSettled(
    sockets.map((ws) => new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve());
      ws.once('error', reject);
    })),
  );
  const failed = opened.find((s): s is PromiseRejectedResult => s.status === 'rejected');
  if (failed) {
    for (const ws of sockets) ws.terminate();
    throw failed.reason;
  }
  return new RemoteProcess(done, req, control, stdin, out, stdout, stderr);
}

/**
 * A readable fed by a data websocket: an empty text message (LXD's end of stream) or the close
 * ends it. Its listener is there before the socket opens: LXD starts the command as soon as the
 * last of the command's websockets connects, and ws drops a message nobody listens to. (When the
 * listeners came after every socket had opened, 10 MiB outputs lost their first 16 KiB–2 MiB in
 * 13 of 45 runs at load 2, the exit status 0: the short remote exec of the benchmarks.)
 */
function readableOf(ws: WebSocket): Readable & { received: Promise<void> } {
  let ended = false;
  let received: () => void = () => undefined;
  const stream = Object.assign(new Readable({ read: () => ws.isPaused && ws.resume() }), {
    /** Settles once LXD has sent all of it (whether read yet or not). */
    received: new Promise<void>((r) => (received = r)),
  });
  const end = () => {
    if (ended) return;
    ended = true;
    stream.push(null);
    received();
  };
  ws.on('message', (d: Buffer, isBinary: boolean) => {
    if (!isBinary && d.length === 0) return end();
    if (!stream.push(Buffer.from(d))) ws.pause();
  });
  // LXD 5.0 also drops an output websocket without a close frame (1006), mostly after its end
  // marker, sometimes instead of it (seen for a 1-byte output, complete): both end the stream.
  ws.on('close', end);
  return stream;
}

class RemoteProcess implements InstanceProcess {
  /** LXD does not say which pid the command got. */
  readonly pid = 0;
  readonly stdin: Writable;
  readonly stdout: Readable;
  readonly stderr: Readable;
  readonly tty: boolean;
  readonly exit: Promise<ExitStatus>;
  private exited = false;
  /** The last signal sent through the control socket: LXD reports a death by it as 128+n. */
  private sent: number | undefined;

  constructor(
    // eslint-disable-next-line @typescript-eslint/no-explicit-any -- LXD's JSON: its fields are read where they are used
    done: Promise<any>,
    req: RemoteSpawnRequest,
    private readonly control: WebSocket,
    stdinWs: WebSocket,
    outWs: WebSocket,
    stdout: Readable & { received: Promise<void> },
    lxdStderr: (Readable & { received: Promise<void> }) | undefined,
  ) {
    this.tty = req.pty !== null;
    this.stdout = stdout;
    // With a pty, LXD ends the operation once the client has closed the terminal's websocket,
    // which it does when the output has ended (as lxc does).
    if (this.tty) void stdout.received.then(() => outWs.close());
    // stderr ends once LXD's stream has ended and the exit is known: a command LXD cannot start
    // gets lxq's message there, as from lxq's own runner.
    const stderr = new PassThrough();
    this.stderr = stderr;
    const errDone = new Promise<void>((resolve) => {
      if (!lxdStderr) return resolve();
      lxdStderr.on('data', (d: Buffer) => stderr.write(d)).once('end', resolve);
    });
    const tty = this.tty;
    this.stdin = new Writable({
      write: (chunk: Buffer, _enc, cb) => stdinWs.send(chunk, { binary: true }, (e) => cb(e && new InvalidState('the command has exited; its stdin is closed'))),
      // An empty text message is LXD's end-of-input on a pipe; a terminal has no end of input
      // but its own (^D), and its one websocket also carries the output.
      final: (cb) => (tty ? cb() : stdinWs.send('', { binary: false }, () => cb())),
    });
    let lxqMessage = '';
    this.exit = done.then(
      // eslint-disable-next-line @typescript-eslint/no-explicit-any -- LXD's JSON: its fields are read where they are used
      (done: any): ExitStatus => {
        const code = Number(done.metadata?.return ?? -1);
        if (this.sent !== undefined && code === 128 + this.sent) return { exitCode: null, signal: signalName(this.sent) };
        return { exitCode: code, signal: null };
      },
      (e: unknown): ExitStatus => {
        const message = (e as { lxd?: { serverMessage: string } }).lxd?.serverMessage ?? String((e as Error)?.message ?? e);
        if (!NOT_FOUND.test(message)) throw e;
        lxqMessage = `lxq: cannot run ${req.argv[0]}: No such file or directory (LXD: ${message})\n`;
        return { exitCode: 127, signal: null };
      },
    );
    const settled = this.exit.then(
      () => undefined,
      () => undefined,
    );
    void settled.then(() => (this.exited = true));
    void Promise.all([settled, errDone]).then(() => stderr.end(lxqMessage || undefined));
    // The operation's end can be told before the last output has come (another socket): the
    // control socket, whose close makes LXD drop the command's websockets, goes last.
    void Promise.all([settled, stdout.received, lxdStderr?.received]).then(() => this.control.close());
  }

  kill(signal: NodeJS.Signals | number = 'SIGTERM'): boolean {
    const n = signalNumber(signal);
    if (this.exited || this.control.readyState !== WebSocket.OPEN) return false;
    this.sent = n;
    this.control.send(JSON.stringify({ command: 'signal', signal: n }));
    return true;
  }

  resize(cols: number, rows: number): void {
    if (!this.tty) throw new InvalidState('resize needs a command started with { pty }');
    checkWindowSize(cols, rows);
    if (this.exited) return;
    this.control.send(JSON.stringify({ command: 'window-resize', args: { width: String(cols), height: String(rows) } }));
  }
}
