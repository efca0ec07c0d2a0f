/**
 * exec through LXD's exec websockets (`ws` from npm): a non-interactive command gets three data
 * websockets (stdin, stdout, stderr) and a control one; the operation ends when the command has
 * been reaped, with its exit status in metadata.return.
 */
import WebSocket from 'ws';

import { InvalidArgument } from '../errors';
import type { LxdClient } from './client';

export interface RemoteExecOptions {
  /** Written to the command's stdin, then closed. */
  input?: string | Buffer;
  env?: Record<string, string>;
  cwd?: string;
  user?: number;
  group?: number;
}

export interface RemoteExecResult {
  exitCode: number;
  stdout: string;
  stderr: string;
}

export async function remoteExec(client: LxdClient, instancePath: string, command: string[], options: RemoteExecOptions = {}): Promise<RemoteExecResult> {
  if (!Array.isArray(command) || command.length === 0 || command.some((a) => typeof a !== 'string'))
    throw new InvalidArgument('exec: command must be a non-empty array of strings');
  const r = await client.request('POST', client.url(`${instancePath}/exec`), {
    command,
    environment: options.env ?? {},
    'wait-for-websocket': true,
    interactive: false,
    'record-output': false,
    ...(options.cwd ? { cwd: options.cwd } : {}),
    ...(options.user !== undefined ? { user: options.user } : {}),
    ...(options.group !== undefined ? { group: options.group } : {}),
  });
  const opPath = r.operation!.split('?')[0];
  const fds = r.metadata.metadata.fds as Record<string, string>;
  const connect = (fd: string) =>
    new Promise<WebSocket>((resolve, reject) => {
      const q = new URLSearchParams({ secret: fds[fd] });
      if (client.project) q.set('project', client.project);
      const ws = new WebSocket(client.websocketUrl(`${opPath}/websocket?${q}`), client.websocketOptions());
      ws.once('open', () => resolve(ws));
      ws.once('error', reject);
    });
  const [control, stdin, stdout, stderr] = await Promise.all([connect('control'), connect('0'), connect('1'), connect('2')]);
  const collect = (ws: WebSocket) =>
    new Promise<string>((resolve) => {
      const chunks: Buffer[] = [];
      ws.on('message', (d: Buffer, isBinary: boolean) => {
        if (!isBinary && d.length === 0) return ws.close();
        chunks.push(Buffer.from(d));
      });
      ws.on('close', () => resolve(Buffer.concat(chunks).toString('utf8')));
      ws.on('error', () => resolve(Buffer.concat(chunks).toString('utf8')));
    });
  const out = collect(stdout);
  const err = collect(stderr);
  if (options.input !== undefined) stdin.send(Buffer.from(options.input), { binary: true });
  // An empty text message is LXD's end-of-stream on a data websocket.
  stdin.send('', { binary: false }, () => stdin.close());
  const op = await client.wait(r, `POST ${instancePath}/exec`, 3600);
  const [o, e] = await Promise.all([out, err]);
  control.close();
  return { exitCode: Number(op.metadata?.return ?? -1), stdout: o, stderr: e };
}
