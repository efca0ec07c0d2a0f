/**
 * The LXD peer: LXD 5.0 (Debian's `lxd` package) driven over its REST API on its unix socket,
 * with node:http and a keep-alive agent, the way a Node program would drive it (no `lxc` client
 * in the timed path). Each operation is one request, plus, for the asynchronous ones, a wait on
 * the background operation (GET /1.0/operations/<id>/wait) until LXD reports its result.
 *
 * The REST client is lxq's own (lib/drivers/remote/client.ts); the daemon set-up is test/helpers/lxd.ts,
 * shared with test/remote.test.ts. Setup (check(), untimed) needs no `lxd init`: it starts a
 * daemon of its own in a temporary LXD_DIR (or uses the one `LXD_DIR` names, started if it is not
 * running; close() stops what it started with `lxd shutdown` and removes its own directory), then makes, idempotently, what `lxd init --auto` would plus the image:
 *   - a `dir` storage pool `lxq-bench` and a profile `lxq-bench` holding only its root disk
 *     (no NIC: there is no bridge on the hosts this runs on, and lxq's containers have none);
 *   - the image `lxq-bench-busybox`, made from lxq's own cached busybox image (no image server
 *     is reachable): a unified tarball (metadata.yaml + rootfs/) posted to /1.0/images. Its
 *     properties record the lxq image it came from, so a rebuilt lxq image is re-imported.
 * Containers are LXD's default: unprivileged, root mapped to the host's subuid/subgid range.
 */
import { existsSync, mkdtempSync, promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { performance } from 'node:perf_hooks';

import { NotFound } from '../../lib/core/errors';
import { LxdClient } from '../../lib/drivers/remote/client';
import { removeTree } from '../../lib/storage/pools/mounts';
import { ensureBusyboxImage, ensurePool, ensureProfile, LxdDaemon, lxdAnswers, startLxd, LXD_BINS } from '../../test/helpers/lxd';
import type { ContainerPeer, PeerContext, Samples } from './peer';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const POOL = 'lxq-bench';
const PROFILE = 'lxq-bench';
const ALIAS = 'lxq-bench-busybox';

export class LxdPeer implements ContainerPeer {
  readonly label = 'LXD 5.0 (REST)';
  /**
   * A daemon of its own in a directory of its own (the rule for anything a benchmark starts), or
   * the one LXD_DIR names: the host's own /var/lib/lxd is never touched.
   */
  private readonly lxdDir = process.env.LXD_DIR ?? mkdtempSync(path.join(os.tmpdir(), 'lxq-bench-lxd-'));
  private readonly ownDir = process.env.LXD_DIR === undefined;
  private readonly logDir = process.env.LXD_LOG_DIR ?? path.join(this.lxdDir, 'log');
  private readonly client = new LxdClient({ socket: path.join(this.lxdDir, 'unix.socket') });
  /** The daemon, when check() started it (then close() stops it). */
  private daemon?: LxdDaemon;
  /** Containers made by cycle() and not (yet) deleted: close() removes them. */
  private readonly live = new Set<string>();
  /** How long check() took (daemon start, pool, profile, image), ms. */
  setupMs?: number;

  async check(ctx: PeerContext): Promise<string | null> {
    const t0 = performance.now();
    if (!LXD_BINS.some((b) => existsSync(b))) return `lxd is not installed (${LXD_BINS.join(' or ')} missing; Debian: apt-get install lxd)`;
    if (process.getuid?.() !== 0) return 'the LXD peer needs root (to start lxd and use its socket)';
    try {
      if (!(await lxdAnswers(this.client.where))) {
        try {
          this.daemon = await startLxd(this.lxdDir, this.logDir);
        } catch (e) {
          return (e as Error).message;
        }
      }
      const why = 'lxq benchmark (bench/peers/lxd.ts)';
      await ensurePool(this.client, POOL, why);
      await ensureProfile(this.client, PROFILE, POOL, why);
      await ensureBusyboxImage(this.client, ALIAS, ctx.scratch);
    } catch (e) {
      await this.close().catch(() => undefined);
      return `LXD set-up failed: ${(e as Error).message}`;
    }
    this.setupMs = performance.now() - t0;
    return null;
  }

  async cycle(_ctx: PeerContext, name: string, n: number): Promise<Samples> {
    const c = this.client;
    const inst = `/1.0/instances/${encodeURIComponent(name)}`;
    const out: Required<Pick<Samples, 'create' | 'start' | 'state' | 'exec' | 'freeze' | 'unfreeze' | 'stop-force' | 'stop-graceful' | 'delete'>> = {
      create: [], start: [], state: [], exec: [], freeze: [], unfreeze: [], 'stop-force': [], 'stop-graceful': [], delete: [],
    };
    const timed = async <T>(samples: number[], f: () => Promise<T>): Promise<T> => {
      const t = performance.now();
      const r = await f();
      samples.push(performance.now() - t);
      return r;
    };
    const setState = (body: Record<string, unknown>) => () => c.call('PUT', `${inst}/state`, body);

    this.live.add(name);
    try {
      await timed(out.create, () =>
        c.call('POST', '/1.0/instances', { name, type: 'container', source: { type: 'image', alias: ALIAS }, profiles: [PROFILE] }),
      );
      await timed(out.start, setState({ action: 'start', timeout: 30 }));
      for (let i = 0; i < n; i++) {
        // GET /1.0/instances/<name>: what `lxc info`/`lxc list` and client libraries read the
        // status from. /1.0/instances/<name>/state also gathers network, disk, memory and
        // process counters, which is more than "is it running?" needs.
        const meta = await timed(out.state, async () => (await c.request('GET', inst)).metadata);
        if (meta.status !== 'Running') throw new Error(`LXD: ${name} is ${meta.status}, not Running`);
      }
      for (let i = 0; i < n; i++) {
        // Non-interactive exec without websockets: LXD runs the command with /dev/null as its
        // stdin/stdout/stderr (record-output false), and the operation ends when the command
        // has been reaped, with its exit status in metadata.return.
        const op = await timed(out.exec, () =>
          c.call('POST', `${inst}/exec`, { command: ['/bin/true'], environment: {}, 'wait-for-websocket': false, interactive: false, 'record-output': false }),
        );
        if (op.metadata?.return !== 0) throw new Error(`LXD exec /bin/true in ${name}: exit status ${op.metadata?.return}`);
      }
      for (let i = 0; i < n; i++) {
        await timed(out.freeze, setState({ action: 'freeze' }));
        await timed(out.unfreeze, setState({ action: 'unfreeze' }));
      }
      await timed(out['stop-force'], setState({ action: 'stop', force: true }));
      await timed(out.start, setState({ action: 'start', timeout: 30 }));
      await sleep(200);
      // LXD sends the container's halt signal (liblxc's default, SIGPWR; busybox init halts on
      // it as on lxq's SIGUSR1) and waits up to `timeout` seconds for init to exit.
      await timed(out['stop-graceful'], setState({ action: 'stop', force: false, timeout: 30 }));
      await timed(out.delete, () => c.call('DELETE', inst));
      this.live.delete(name);
      await this.removeLogs(name);
    } catch (e) {
      await this.remove(name).catch(() => undefined);
      throw e;
    }
    return out;
  }

  async close(): Promise<void> {
    try {
      for (const name of [...this.live]) await this.remove(name).catch(() => undefined);
    } finally {
      this.client.close();
      const d = this.daemon;
      this.daemon = undefined;
      await d?.stop();
      if (this.ownDir) await removeTree(this.lxdDir);
    }
  }

  /** Force-stops and deletes a container left by a failed cycle. */
  private async remove(name: string): Promise<void> {
    const inst = `/1.0/instances/${encodeURIComponent(name)}`;
    try {
      await this.client.request('GET', inst);
    } catch (e) {
      if (e instanceof NotFound) {
        this.live.delete(name);
        return;
      }
      throw e;
    }
    await this.client.call('PUT', `${inst}/state`, { action: 'stop', force: true }).catch(() => undefined);
    await this.client.call('DELETE', inst);
    this.live.delete(name);
    await this.removeLogs(name);
  }

  /** LXD 5.0 leaves an instance's log directory (lxc.conf, lxc.log, console.log) behind when it deletes it. */
  private async removeLogs(name: string): Promise<void> {
    if (!name || name.includes('/') || name.startsWith('.')) return;
    await fs.rm(path.join(this.logDir, name), { recursive: true, force: true });
  }
}
