/**
 * `Host.open({ reap: true })` (testcontainers' Ryuk, without a daemon): a small detached Node
 * process, the reaper, deletes the instances this process made through that host (create,
 * launch, copy, import) when this process dies, SIGKILL included.
 *
 * - It is told of each instance as it is made (its name and `createdAt`, the instance's identity:
 *   another instance made later under the same name is not it) and of each deletion and rename,
 *   over a socket pair that is its fd 3; nothing else reaches it, and it deletes nothing else.
 * - Its owner's death is the channel's end (every fd of it closed: the kernel closes them at any
 *   death) or the exit of the owner's pid, watched through a pidfd opened while the owner was
 *   known alive (its parent, at its start): a pid reused later is never mistaken for it.
 * - It then deletes its instances through lxq's own code (Host.open, which finishes what the
 *   owner left half-done; each instance's lock; `delete({ force: true })`), and exits.
 * - `host.close()` tells it to exit without deleting anything: the instances outlive the
 *   process, as any that were made without `reap`.
 * - It exits if it cannot do its job (no owner, no greeting within REAPER_START_MS, a failed
 *   Host.open) and never outlives REAP_DEADLINE_MS after its owner's death.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { openSync, closeSync } from 'node:fs';
import type { Socket } from 'node:net';
import * as path from 'node:path';

import { OperationFailed } from '../core/errors';
import { nodeProgramArgs } from '../core/proc';
import type { Instance } from '../instance/instance';

/** How long the reaper may take to start and greet its owner. */
export const REAPER_START_MS = 30_000;
/** How long the reaper may take to delete its instances once its owner died. */
export const REAP_DEADLINE_MS = 300_000;
/** The reaper's stderr, in the host directory: what it did and what failed. */
export const REAPER_LOG = 'reaper.log';

/** One line on the channel, owner to reaper. */
export type ReaperMessage =
  | { hello: { owner: number; host: string; images: string } }
  | { add: { name: string; createdAt: string } }
  | { remove: { name: string } }
  | { close: true };

/** The owner's side of a reaper: one per Host object opened with `reap: true`. */
export class Reaper {
  /** The instances told to the reaper, by name. */
  private readonly held = new Map<string, string>();
  private closed = false;

  private constructor(
    private readonly child: ChildProcess,
    private readonly channel: Socket,
  ) {
    child.once('exit', (code, signal) => {
      if (!this.closed) process.emitWarning(`lxq: the reaper of this process's instances exited (${signal ?? `code ${code}`}); they will not be deleted when it dies`);
    });
  }

  /** Starts the reaper of host `hostPath` and waits for its greeting (it watches this process from then on). */
  static async start(hostPath: string, images: string): Promise<Reaper> {
    const log = openSync(path.join(hostPath, REAPER_LOG), 'a', 0o600);
    let child: ChildProcess;
    try {
      child = spawn(process.execPath, nodeProgramArgs(path.join(__dirname, 'reaper-main')), { detached: true, stdio: ['ignore', log, log, 'pipe'] });
    } finally {
      closeSync(log);
    }
    const channel = child.stdio[3] as Socket;
    const reaper = new Reaper(child, channel);
    reaper.send({ hello: { owner: process.pid, host: hostPath, images } });
    try {
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => fail(new Error(`no greeting within ${REAPER_START_MS} ms`)), REAPER_START_MS);
        const fail = (e: Error) => {
          clearTimeout(timer);
          reject(e);
        };
        channel.once('data', () => {
          clearTimeout(timer);
          resolve();
        });
        channel.once('close', () => fail(new Error(`it exited; see ${path.join(hostPath, REAPER_LOG)}`)));
        child.once('error', fail);
      });
    } catch (e) {
      reaper.closed = true;
      child.kill('SIGKILL');
      throw new OperationFailed(`cannot start the reaper of ${hostPath}: ${(e as Error).message}`);
    }
    // Neither keeps this process alive: its death is the reaper's cue.
    channel.unref();
    child.unref();
    return reaper;
  }

  /** An instance this process made: deleted by the reaper if this process dies. */
  add(instance: Instance): void {
    const createdAt = instance.createdAt.toISOString();
    this.held.set(instance.name, createdAt);
    this.send({ add: { name: instance.name, createdAt } });
  }

  /** An instance deleted, or renamed (`to`): the reaper follows. */
  changed(name: string, to?: string): void {
    const createdAt = this.held.get(name);
    if (createdAt === undefined) return;
    this.held.delete(name);
    this.send({ remove: { name } });
    if (to !== undefined) {
      this.held.set(to, createdAt);
      this.send({ add: { name: to, createdAt } });
    }
  }

  /** The host is closed: the reaper exits without deleting anything. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const exited = new Promise<void>((resolve) => (this.child.exitCode !== null || this.child.signalCode !== null ? resolve() : this.child.once('exit', () => resolve())));
    this.send({ close: true });
    this.channel.end();
    // Waited for with the child referenced: unreferenced, nothing would keep this process up to see it exit.
    this.child.ref();
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([exited, new Promise((r) => (timer = setTimeout(r, 5_000)))]);
    clearTimeout(timer);
    this.child.unref();
  }

  private send(message: ReaperMessage): void {
    if (!this.channel.destroyed) this.channel.write(`${JSON.stringify(message)}\n`);
  }
}
