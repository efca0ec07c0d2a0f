/**
 * An instance's console on an LXD server (POST …/console): one data websocket (both directions)
 * and a control websocket for the window size, as a ConsoleEndpoint for lxq's ConsoleHub, which
 * fans it out to every stream attached in this process.
 */
import WebSocket, { createWebSocketStream } from 'ws';

import { NotFound } from '../../core/errors';
import type { ConsoleEndpoint } from '../../instance/console';
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

/** The instance's console log as LXD keeps it ('' before its first start). */
export async function remoteConsoleLog(client: LxdClient, instancePath: string): Promise<string> {
  const r = await client.request('GET', client.url(`${instancePath}/console`), undefined, { binary: true }).catch((e) => {
    if (e instanceof NotFound) return undefined; // never started: no log yet
    throw e;
  });
  return r?.raw?.toString('utf8') ?? '';
}
