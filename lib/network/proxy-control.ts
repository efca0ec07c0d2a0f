/**
 * The proxy process's control socket (`<instance dir>/proxy.sock`, root's only): a live change of
 * the proxy devices is sent to the running process, which closes and opens the listeners of the
 * devices that changed and leaves the others' listeners and connections alone. One JSON line
 * each way: `{"devices": {...}}` → `ok`, `restart` (a change it does not make live: the caller
 * restarts the process) or `error {"name", "message"}`.
 */
import { promises as fs } from 'node:fs';
import * as net from 'node:net';

import { InvalidArgument } from '../core/errors';

/** Thrown by a change handler for a change it does not make live. */
export class RestartNeeded extends Error {}

/** How long a change may take to be answered (a loaded machine is slow). */
const ANSWER_MS = 60_000;

function oneLine(socket: net.Socket, onLine: (line: string) => void): void {
  let text = '';
  socket.setEncoding('utf8');
  socket.on('data', (d: string) => {
    text += d;
    const at = text.indexOf('\n');
    if (at < 0) return;
    socket.removeAllListeners('data');
    onLine(text.slice(0, at));
  });
}

/** Serves changes one at a time (in the proxy process); `apply` makes one or throws. */
export async function serveControl<Devices>(socketPath: string, apply: (devices: Devices) => Promise<void>): Promise<net.Server> {
  if ((await fs.lstat(socketPath).catch(() => undefined))?.isSocket()) await fs.unlink(socketPath); // an ended process's
  let queue = Promise.resolve();
  const server = net.createServer((socket) => {
    socket.on('error', () => socket.destroy());
    oneLine(socket, (line) => {
      queue = queue.then(async () => {
        let answer = 'ok';
        try {
          await apply((JSON.parse(line) as { devices: Devices }).devices);
        } catch (e) {
          answer = e instanceof RestartNeeded ? 'restart' : `error ${JSON.stringify({ name: (e as Error).name, message: (e as Error).message })}`;
        }
        socket.end(`${answer}\n`);
      });
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(socketPath, () => resolve());
  });
  await fs.chmod(socketPath, 0o600);
  return server;
}

/**
 * Sends the served devices to the instance's proxy process: true once it made the change, false
 * if there is no process to ask or it asks for a restart; an InvalidArgument (an address in use)
 * or Error with the process's message if it refused (it then serves what it served before).
 */
export function askControl(socketPath: string, devices: unknown): Promise<boolean> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(socketPath);
    const timer = setTimeout(() => socket.destroy(new Error(`the proxy process did not answer within ${ANSWER_MS / 1000} s`)), ANSWER_MS);
    const done = (f: () => void) => {
      clearTimeout(timer);
      socket.destroy();
      f();
    };
    let connected = false;
    // Nothing to connect to (no process, an ended one's socket, a path too long to serve): not asked.
    socket.once('error', (e) => done(() => (connected ? reject(e) : resolve(false))));
    socket.once('connect', () => {
      connected = true;
      socket.write(`${JSON.stringify({ devices })}\n`);
    });
    oneLine(socket, (line) =>
      done(() => {
        if (line === 'ok') return resolve(true);
        if (line === 'restart') return resolve(false);
        const e = JSON.parse(line.replace(/^error /, '')) as { name: string; message: string };
        reject(e.name === 'InvalidArgument' ? new InvalidArgument(e.message) : new Error(e.message));
      }),
    );
    socket.once('end', () => done(() => reject(new Error('the proxy process closed its control socket without an answer'))));
  });
}
