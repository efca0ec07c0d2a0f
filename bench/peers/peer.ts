/**
 * One interface for every container peer of bench/containers.ts, so that each runs the same
 * cycle on its own fresh container and the orchestrator can interleave them in one run.
 *
 * The cycle (the same as bench/peers/lxc-ops.c, which is the floor):
 *   create from the cached image, start → running, n × state, n × exec /bin/true (stdin, stdout
 *   and stderr on pipes, read to end, exit status reaped), n × (freeze, unfreeze), stop (forced),
 *   start, pause 200 ms (so init has its signal handlers), stop (graceful), delete.
 * Only the operations themselves are timed (ms, from a monotonic clock in the process that
 * makes the call).
 */
import { existsSync } from 'node:fs';
import * as path from 'node:path';

export const CONTAINER_OPS = ['create', 'start', 'state', 'exec', 'freeze', 'unfreeze', 'stop-force', 'stop-graceful', 'delete'] as const;
export type ContainerOp = (typeof CONTAINER_OPS)[number];
export type Samples = Partial<Record<ContainerOp, number[]>>;

/** What every peer gets: where lxq's containers live and a stopped container made by lxq from the busybox image. */
export interface PeerContext {
  /** liblxc's lxcpath (lxq's Host.instancesDir). */
  lxcpath: string;
  /** A stopped busybox container made by lxq: the "cached image" the liblxc peers clone. */
  template: string;
  /** A scratch directory of the run (build outputs, sockets). */
  scratch: string;
}

export interface ContainerPeer {
  readonly label: string;
  /** null when the peer can run here; otherwise why it is skipped (not installed, …). */
  check(ctx: PeerContext): Promise<string | null>;
  /** One cycle on a fresh container called `name`, which it creates and deletes. */
  cycle(ctx: PeerContext, name: string, n: number): Promise<Samples>;
  /** Releases what check() or the cycles set up (daemons, images). */
  close?(): Promise<void>;
}

/**
 * Why a peer that creates by liblxc's clone cannot run here, or null: cloning a directory-backed
 * container runs rsync, which the lxc package only recommends.
 */
export function cloneUnsupported(): string | null {
  const onPath = (process.env.PATH ?? '/usr/bin:/bin').split(':').some((dir) => existsSync(path.join(dir, 'rsync')));
  return onPath ? null : "rsync not installed (liblxc's clone of a container runs it; apt-get install rsync)";
}

/** Parses "op ms" lines, as lxc-ops.c and lxc-ops.py print them. */
export function parseOpLines(text: string): Samples {
  const out: Samples = {};
  for (const line of text.trim().split('\n')) {
    const [op, ms] = line.trim().split(/\s+/);
    if (!(CONTAINER_OPS as readonly string[]).includes(op) || !Number.isFinite(Number(ms))) throw new Error(`unexpected peer output line: ${JSON.stringify(line)}`);
    (out[op as ContainerOp] ??= []).push(Number(ms));
  }
  return out;
}
