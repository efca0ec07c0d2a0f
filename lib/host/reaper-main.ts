/**
 * The reaper process (see reaper.ts): started by Host.open({ reap: true }), detached, its owner's
 * messages on fd 3. It deletes the instances it was told of once its owner is gone, then exits.
 */
import { existsSync } from 'node:fs';
import { Socket } from 'node:net';
import * as path from 'node:path';

import { NotFound } from '../core/errors';
import { sys } from '../native/sys';
import { REAP_DEADLINE_MS, REAPER_START_MS, type ReaperMessage } from './reaper';

function log(message: string): void {
  process.stderr.write(`${new Date().toISOString()} reaper ${process.pid}: ${message}\n`);
}

function main(): void {
  const channel = new Socket({ fd: 3, readable: true, writable: true });
  const held = new Map<string, string>();
  let hello: { owner: number; host: string; images: string } | undefined;
  let reaping = false;
  const startTimer = setTimeout(() => quit(1, `no greeting within ${REAPER_START_MS} ms`), REAPER_START_MS);

  const reap = (why: string) => {
    if (reaping) return;
    reaping = true;
    if (!hello) return quit(1, `${why} before its greeting`);
    log(`${why}: deleting ${held.size} instance(s) of ${hello.host}`);
    setTimeout(() => quit(1, `not done within ${REAP_DEADLINE_MS} ms`), REAP_DEADLINE_MS).unref();
    void deleteAll(hello, held).then(
      () => quit(0),
      (e) => quit(1, (e as Error).message),
    );
  };

  let partial = '';
  channel.on('data', (chunk) => {
    const lines = (partial + chunk.toString('utf8')).split('\n');
    partial = lines.pop() ?? '';
    for (const line of lines) {
      let m: ReaperMessage;
      try {
        m = JSON.parse(line);
      } catch {
        return quit(1, `a message that is not JSON: ${line.slice(0, 80)}`);
      }
      if ('hello' in m) {
        hello = m.hello;
        clearTimeout(startTimer);
        // The owner is our parent now (alive): its pidfd is its own, whatever pid is reused later.
        if (hello.owner !== process.ppid) return quit(1, `the owner ${hello.owner} is not this process's parent (${process.ppid})`);
        try {
          sys().watchPid(hello.owner, () => reap('its owner exited'));
        } catch {
          return reap('its owner exited');
        }
        channel.write('ready\n');
      } else if ('add' in m) held.set(m.add.name, m.add.createdAt);
      else if ('remove' in m) held.delete(m.remove.name);
      else if ('close' in m) return quit(0);
    }
  });
  channel.on('end', () => reap('its owner closed the channel'));
  channel.on('error', () => reap('the channel failed'));
}

/** Deletes each instance still the one its owner made (same name and createdAt), through lxq's own code. */
async function deleteAll(hello: { host: string; images: string }, held: Map<string, string>): Promise<void> {
  // Nothing left to delete, or the host directory removed with everything in it: Host.open would make it again.
  if (!held.size || !existsSync(path.join(hello.host, 'instances'))) return;
  // Loaded only now: the greeting, which Host.open({ reap: true }) waits for, needs none of it.
  // eslint-disable-next-line @typescript-eslint/no-require-imports -- see above
  const { Host } = require('./host') as typeof import('./host');
  const host = await Host.open({ path: hello.host, images: hello.images });
  try {
    for (const [name, createdAt] of held) {
      try {
        const instance = await host.get(name);
        if (instance.createdAt.toISOString() !== createdAt) continue; // another instance of that name
        await instance.delete({ force: true });
        log(`deleted ${name}`);
      } catch (e) {
        if (!(e instanceof NotFound)) log(`cannot delete ${name}: ${(e as Error).message}`);
      }
    }
  } finally {
    await host.close();
  }
}

function quit(code: number, why?: string): void {
  if (why) log(why);
  process.exit(code);
}

main();
