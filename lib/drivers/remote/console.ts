/**
 * An instance's console on an LXD server (POST …/console): one data websocket (both directions)
 * and a control websocket for the window size, as a ConsoleEndpoint for lxq's ConsoleHub, which
 * fans it out to every stream attached in this process.
 */
import WebSocket, { createWebSocketStream } from 'ws';

import { NotFound, OperationFailed } from '../../core/errors';
import type { ConsoleEndpoint } from '../../instance/console';
import type { LogRead } from '../../instance/console-log';
import type { InstanceStatus } from '../../instance/instance';
import { checkWindowSize } from '../../instance/process';
import type { LxdClient } from './client';
import type { RemoteSockets } from './exec';

export async function remoteConsole(client: LxdClient, instancePath: string, { track }: RemoteSockets = {}): Promise<ConsoleEndpoint> {
  const r = await client.request('POST', client.url(`${instancePath}/console`), { width: 80, height: 24, type: 'console' });
  const opPath = r.operation!.split('?')[0];
  const fds = r.metadata.metadata.fds as Record<string, string>;
  const open = (fd: string) =>
    new Promise<WebSocket>((resolve, reject) => {
      const q = new URLSearchParams({ secret: fds[fd] });
      if (client.project) q.set('project', client.project);
      const ws = new WebSocket(client.websocketUrl(`${opPath}/websocket?${q}`), client.websocketOptions());
      ws.on('error', () => undefined);
      track?.(ws);
      ws.once('open', () => resolve(ws));
      ws.once('error', reject);
    });
  const [data, control] = await Promise.all([open('0'), open('control')]);
  const stream = createWebSocketStream(data);
  // Closing the control websocket detaches from the console (the operation ends).
  stream.once('close', () => control.close());
  control.once('close', () => stream.destroy());
  return {
    stream,
    resize: async (cols, rows) => {
      checkWindowSize(cols, rows);
      control.send(JSON.stringify({ command: 'window-resize', args: { width: String(cols), height: String(rows) } }));
    },
  };
}

/**
 * The instance's console log as LXD serves it ('' before its first start). Of a running
 * container LXD reads liblxc's console ring buffer, and reading consumes it: the answer is what
 * was printed since the last read, by anyone (LXD 5.0 answers 500 "open : no such file or
 * directory" when nothing was: that is ''). Of a stopped one it is the file those reads were
 * appended to.
 */
export async function remoteConsoleLog(client: LxdClient, instancePath: string): Promise<string> {
  const r = await client.request('GET', client.url(`${instancePath}/console`), undefined, { binary: true }).catch((e) => {
    if (e instanceof NotFound) return undefined; // never started: no log yet
    if (e instanceof OperationFailed && /open : no such file or directory/.test(e.message)) return undefined;
    throw e;
  });
  return r?.raw?.toString('utf8') ?? '';
}

/**
 * A follow's reader of an LXD instance's log (see remoteConsoleLog): while it runs, each read is
 * what is new; a stopped instance's log does not grow, and is not read again until it runs, when
 * its log has started over.
 */
export function remoteLogReader(client: LxdClient, instancePath: string, status: () => Promise<InstanceStatus>): () => Promise<LogRead> {
  let wasRunning: boolean | undefined;
  return async () => {
    const s = await status();
    const running = s !== 'stopped' && s !== 'error';
    const first = wasRunning === undefined;
    const restarted = wasRunning === false && running;
    wasRunning = running;
    if (!running && !first) return { text: '', restarted: false };
    return { text: await remoteConsoleLog(client, instancePath), restarted };
  };
}
