/**
 * The LXD peer: LXD 5.0 (Debian's `lxd` package) driven over its REST API on its unix socket,
 * with node:http and a keep-alive agent, the way a Node program would drive it (no `lxc` client
 * in the timed path). Each operation is one request, plus, for the asynchronous ones, a wait on
 * the background operation (GET /1.0/operations/<id>/wait) until LXD reports its result.
 *
 * Setup (check(), untimed) needs no `lxd init`: it starts the daemon if it is not running
 * (`lxd --group lxd --logfile <scratch>/lxd.log`, detached; close() stops it again with
 * `lxd shutdown`), then makes, idempotently, what `lxd init --auto` would plus the image:
 *   - a `dir` storage pool `lxq-bench` and a profile `lxq-bench` holding only its root disk
 *     (no NIC: there is no bridge on the hosts this runs on, and lxq's containers have none);
 *   - the image `lxq-bench-busybox`, made from lxq's own cached busybox image (no image server
 *     is reachable): a unified tarball (metadata.yaml + rootfs/) posted to /1.0/images. Its
 *     properties record the lxq image it came from, so a rebuilt lxq image is re-imported.
 * Containers are LXD's default: unprivileged, root mapped to the host's subuid/subgid range.
 */
import { execFile, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream, existsSync, promises as fs } from 'node:fs';
import * as http from 'node:http';
import * as path from 'node:path';
import { performance } from 'node:perf_hooks';
import { promisify } from 'node:util';

import { ImageStore } from '../../lib/images/store';
import type { ContainerPeer, PeerContext, Samples } from './peer';

const run = promisify(execFile);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** Whether `p` settles within `ms` (the timer does not outlive it). */
async function within(p: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<boolean>((r) => (timer = setTimeout(() => r(false), ms)));
  try {
    return await Promise.race([p.then(() => true), late]);
  } finally {
    clearTimeout(timer);
  }
}

const LXD_BINS = ['/usr/bin/lxd', '/usr/sbin/lxd'];
const POOL = 'lxq-bench';
const PROFILE = 'lxq-bench';
const ALIAS = 'lxq-bench-busybox';

interface LxdResponse {
  type: 'sync' | 'async' | 'error';
  status_code: number;
  error_code?: number;
  error?: string;
  operation?: string;
  metadata: any; // eslint-disable-line @typescript-eslint/no-explicit-any
}

export class LxdError extends Error {
  constructor(
    message: string,
    readonly code: number,
  ) {
    super(message);
  }
}

/** A minimal LXD REST client over the unix socket. */
export class LxdClient {
  private readonly agent = new http.Agent({ keepAlive: true, maxSockets: 8 });

  constructor(readonly socketPath: string) {}

  request(method: string, url: string, body?: unknown, opts: { stream?: string; timeoutMs?: number } = {}): Promise<LxdResponse> {
    return new Promise((resolve, reject) => {
      const headers: http.OutgoingHttpHeaders = {};
      let payload: Buffer | undefined;
      if (body !== undefined) {
        payload = Buffer.from(JSON.stringify(body));
        headers['Content-Type'] = 'application/json';
        headers['Content-Length'] = payload.length;
      }
      if (opts.stream) headers['Content-Type'] = 'application/octet-stream';
      const req = http.request({ socketPath: this.socketPath, agent: this.agent, method, path: url, headers, host: 'lxd' }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('error', reject);
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let r: LxdResponse;
          try {
            r = JSON.parse(text);
          } catch {
            return reject(new LxdError(`LXD ${method} ${url}: HTTP ${res.statusCode}, not JSON: ${text.slice(0, 200)}`, res.statusCode ?? 0));
          }
          if (r.type === 'error') return reject(new LxdError(`LXD ${method} ${url}: ${r.error} (${r.error_code})`, r.error_code ?? res.statusCode ?? 0));
          resolve(r);
        });
      });
      req.on('error', reject);
      if (opts.timeoutMs) req.setTimeout(opts.timeoutMs, () => req.destroy(new Error(`LXD ${method} ${url}: timed out`)));
      if (opts.stream) {
        const src = createReadStream(opts.stream);
        src.on('error', (e) => req.destroy(e));
        src.pipe(req);
      } else {
        req.end(payload);
      }
    });
  }

  /** Waits for a background operation; resolves with its final metadata, rejects if it failed. */
  async wait(r: LxdResponse, what: string): Promise<any> { // eslint-disable-line @typescript-eslint/no-explicit-any
    if (r.type !== 'async' || !r.operation) return r.metadata;
    const op = (await this.request('GET', `${r.operation}/wait?timeout=120`)).metadata;
    if (op.status_code !== 200) throw new LxdError(`LXD ${what}: ${op.status} ${op.err ?? ''}`.trim(), op.status_code);
    return op;
  }

  /** A request and, if it is asynchronous, the wait for its operation. */
  async call(method: string, url: string, body?: unknown): Promise<any> { // eslint-disable-line @typescript-eslint/no-explicit-any
    return this.wait(await this.request(method, url, body), `${method} ${url}`);
  }

  close(): void {
    this.agent.destroy();
  }
}

export class LxdPeer implements ContainerPeer {
  readonly label = 'LXD 5.0 (REST)';
  private readonly lxdDir = process.env.LXD_DIR ?? '/var/lib/lxd';
  private readonly client = new LxdClient(path.join(this.lxdDir, 'unix.socket'));
  private bin?: string;
  /** The daemon, when check() started it (then close() stops it). */
  private daemon?: { pid: number; exited: Promise<void> };
  /** Containers made by cycle() and not (yet) deleted: close() removes them. */
  private readonly live = new Set<string>();
  /** How long check() took (daemon start, pool, profile, image), ms. */
  setupMs?: number;

  async check(ctx: PeerContext): Promise<string | null> {
    const t0 = performance.now();
    this.bin = LXD_BINS.find((b) => existsSync(b));
    if (!this.bin) return `lxd is not installed (${LXD_BINS.join(' or ')} missing; Debian: apt-get install lxd)`;
    if (process.getuid?.() !== 0) return 'the LXD peer needs root (to start lxd and use its socket)';
    try {
      if (!(await this.ping())) {
        const why = await this.startDaemon(ctx);
        if (why) return why;
      }
      await this.ensurePool();
      await this.ensureProfile();
      await this.ensureImage(ctx);
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
      if (this.daemon) await this.stopDaemon();
    }
  }

  /** Force-stops and deletes a container left by a failed cycle. */
  private async remove(name: string): Promise<void> {
    const inst = `/1.0/instances/${encodeURIComponent(name)}`;
    try {
      await this.client.request('GET', inst);
    } catch (e) {
      if (e instanceof LxdError && e.code === 404) {
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
    await fs.rm(path.join(process.env.LXD_LOG_DIR ?? '/var/log/lxd', name), { recursive: true, force: true });
  }

  private async ping(): Promise<boolean> {
    if (!existsSync(this.client.socketPath)) return false;
    try {
      const r = await this.client.request('GET', '/1.0', undefined, { timeoutMs: 5000 });
      return r.metadata?.auth === 'trusted';
    } catch {
      return false;
    }
  }

  /** Starts lxd in the background (there is no systemd here); null when it answers on its socket. */
  private async startDaemon(ctx: PeerContext): Promise<string | null> {
    const log = path.join(ctx.scratch, 'lxd.log');
    const child = spawn(this.bin!, ['--group', 'lxd', '--logfile', log], { detached: true, stdio: 'ignore' });
    if (child.pid === undefined) return `could not start ${this.bin}`;
    let exitCode: number | null | undefined;
    const exited = new Promise<void>((resolve) => {
      child.once('exit', (code, signal) => {
        exitCode = code ?? (signal ? -1 : 0);
        resolve();
      });
      child.once('error', () => resolve());
    });
    child.unref();
    this.daemon = { pid: child.pid, exited };
    const deadline = performance.now() + 60_000;
    while (performance.now() < deadline) {
      if (exitCode !== undefined) break;
      // What `lxd waitready` waits for: the daemon answers and has finished its start-up.
      if ((await this.ping()) && (await this.client.request('GET', '/internal/ready').then(() => true, () => false))) return null;
      await sleep(50);
    }
    const tail = await fs.readFile(log, 'utf8').then((t) => t.trim().split('\n').slice(-5).join(' | '), () => '');
    await this.stopDaemon();
    return `lxd did not start${exitCode !== undefined ? ` (exit ${exitCode})` : ' within 60 s'}${tail ? `: ${tail}` : ''}`;
  }

  private async stopDaemon(): Promise<void> {
    const d = this.daemon;
    if (!d) return;
    this.daemon = undefined;
    // `lxd shutdown` stops the instances (there should be none) and the daemon, which unmounts
    // its tmpfs mounts (shmounts, devlxd) on the way out.
    await run(this.bin!, ['shutdown', '--timeout', '60'], { timeout: 90_000 }).catch(() => undefined);
    if (!(await within(d.exited, 10_000))) {
      try {
        process.kill(d.pid, 'SIGTERM');
      } catch {
        return;
      }
      if (!(await within(d.exited, 10_000))) {
        try {
          process.kill(d.pid, 'SIGKILL');
        } catch {
          /* already gone */
        }
      }
    }
  }

  private async ensurePool(): Promise<void> {
    try {
      await this.client.request('GET', `/1.0/storage-pools/${POOL}`);
    } catch (e) {
      if (!(e instanceof LxdError && e.code === 404)) throw e;
      await this.client.call('POST', '/1.0/storage-pools', { name: POOL, driver: 'dir', config: {}, description: 'lxq benchmark (bench/peers/lxd.ts)' });
    }
  }

  private async ensureProfile(): Promise<void> {
    const profile = { config: {}, description: 'lxq benchmark (bench/peers/lxd.ts)', devices: { root: { type: 'disk', path: '/', pool: POOL } } };
    try {
      await this.client.request('GET', `/1.0/profiles/${PROFILE}`);
      await this.client.call('PUT', `/1.0/profiles/${PROFILE}`, profile);
    } catch (e) {
      if (!(e instanceof LxdError && e.code === 404)) throw e;
      await this.client.call('POST', '/1.0/profiles', { name: PROFILE, ...profile });
    }
  }

  /** Imports lxq's busybox image as `lxq-bench-busybox`, unless the alias already points at it. */
  private async ensureImage(ctx: PeerContext): Promise<void> {
    const image = await new ImageStore(process.env.LXQ_TEST_IMAGES ?? '/var/tmp/lxq-test-images').ensure('busybox');
    const source = `${path.basename(image.dir)}@${image.createdAt}`;
    let old: string | undefined;
    try {
      const alias = (await this.client.request('GET', `/1.0/images/aliases/${ALIAS}`)).metadata;
      old = alias.target as string;
      const current = (await this.client.request('GET', `/1.0/images/${old}`)).metadata;
      if (current.properties?.['lxq.source'] === source) return;
    } catch (e) {
      if (!(e instanceof LxdError && e.code === 404)) throw e;
    }

    const dir = await fs.mkdtemp(path.join(ctx.scratch, 'lxd-image-'));
    try {
      const metadata = [
        'architecture: x86_64',
        `creation_date: ${Math.floor(Date.parse(image.createdAt) / 1000)}`,
        'properties:',
        '  description: "lxq busybox (bench)"',
        '  os: busybox',
        `  release: "${String(image.meta.busybox ?? '').replace(/["\\]/g, '')}"`,
        `  lxq.source: "${source}"`,
        'templates: {}',
        '',
      ].join('\n');
      await fs.writeFile(path.join(dir, 'metadata.yaml'), metadata);
      const tarball = path.join(dir, 'image.tar');
      // A unified image: metadata.yaml and rootfs/ in one tarball, owners kept as they are (root).
      await run('tar', ['--numeric-owner', '-cf', tarball, '-C', dir, 'metadata.yaml', '-C', image.dir, 'rootfs']);
      // The fingerprint of a unified image is the sha256 of its tarball.
      const fingerprint = createHash('sha256').update(await fs.readFile(tarball)).digest('hex');
      const known = await this.client.request('GET', `/1.0/images/${fingerprint}`).then(() => true, () => false);
      if (!known) await this.client.wait(await this.client.request('POST', '/1.0/images', undefined, { stream: tarball }), 'image import');
      if (old) {
        await this.client.call('PUT', `/1.0/images/aliases/${ALIAS}`, { target: fingerprint, description: '' });
        if (old !== fingerprint) await this.client.call('DELETE', `/1.0/images/${old}`).catch(() => undefined);
      } else {
        await this.client.call('POST', '/1.0/images/aliases', { name: ALIAS, target: fingerprint, description: 'lxq busybox (bench)' });
      }
    } finally {
      await fs.rm(dir, { recursive: true, force: true });
    }
  }
}
