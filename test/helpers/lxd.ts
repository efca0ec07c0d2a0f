/**
 * A real LXD daemon for tests and the LXD benchmark peer: Debian's `lxd` started detached with
 * its own LXD_DIR and LXD_LOG_DIR (no `lxd init`), a `dir` storage pool, a profile holding only
 * its root disk (no NIC: nothing touches the host's links, no lxdbr0), and lxq's busybox image
 * imported under an alias (no image server is reachable). `stop()` runs `lxd shutdown`.
 */
import { execFile, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';

import { NotFound } from '../../lib/core/errors';
import { ImageStore } from '../../lib/images/store';
import { LxdClient } from '../../lib/drivers/remote/client';
import { RemoteHost } from '../../lib/drivers/remote/host';

const run = promisify(execFile);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export const LXD_BINS = ['/usr/bin/lxd', '/usr/sbin/lxd'];
export const lxdBin = (): string | undefined => LXD_BINS.find((b) => existsSync(b));

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

export interface LxdDaemon {
  socket: string;
  lxdDir: string;
  stop(): Promise<void>;
}

async function answers(client: LxdClient): Promise<boolean> {
  if (!existsSync(client.where)) return false;
  try {
    const r = await client.request('GET', '/1.0', undefined, { timeoutMs: 5000 });
    return r.metadata?.auth === 'trusted';
  } catch {
    return false;
  }
}

/** Whether a daemon answers (trusted) on `socket`. */
export async function lxdAnswers(socket: string): Promise<boolean> {
  const c = new LxdClient({ socket });
  try {
    return await answers(c);
  } finally {
    c.close();
  }
}

/** Starts `lxd` with its own directories; resolves once it is ready, throws with its log's tail otherwise. */
export async function startLxd(lxdDir: string, logDir = path.join(lxdDir, 'log')): Promise<LxdDaemon> {
  const bin = lxdBin();
  if (!bin) throw new Error(`lxd is not installed (${LXD_BINS.join(' or ')} missing; Debian: apt-get install lxd)`);
  await fs.mkdir(lxdDir, { recursive: true, mode: 0o711 });
  await fs.mkdir(logDir, { recursive: true });
  const socket = path.join(lxdDir, 'unix.socket');
  // LXD fetches its instance types from images.linuxcontainers.org at start (a daily task, not
  // configurable in 5.0): its HTTPS goes to a closed loopback port instead, so the tests' daemons
  // send nothing off this machine (LXD never proxies loopback, so cluster members still meet).
  const nowhere = 'http://127.0.0.1:9';
  const env = { ...process.env, LXD_DIR: lxdDir, LXD_LOG_DIR: logDir, HTTPS_PROXY: nowhere, https_proxy: nowhere, HTTP_PROXY: nowhere, http_proxy: nowhere, NO_PROXY: '', no_proxy: '' };
  const log = path.join(logDir, 'lxd.log');
  const child = spawn(bin, ['--group', 'lxd', '--logfile', log], { detached: true, stdio: 'ignore', env });
  if (child.pid === undefined) throw new Error(`could not start ${bin}`);
  let exitCode: number | null | undefined;
  const exited = new Promise<void>((resolve) => {
    child.once('exit', (code, signal) => {
      exitCode = code ?? (signal ? -1 : 0);
      resolve();
    });
    child.once('error', () => resolve());
  });
  child.unref();
  const pid = child.pid;
  const stop = async () => {
    // `lxd shutdown` stops the instances and the daemon, which unmounts its tmpfs mounts
    // (shmounts, devlxd) on the way out.
    await run(bin, ['shutdown', '--timeout', '60'], { timeout: 90_000, env }).catch(() => undefined);
    if (!(await within(exited, 10_000))) {
      for (const sig of ['SIGTERM', 'SIGKILL'] as const) {
        try {
          process.kill(pid, sig);
        } catch {
          return;
        }
        if (await within(exited, 10_000)) return;
      }
    }
  };
  const client = new LxdClient({ socket });
  try {
    const deadline = Date.now() + 60_000;
    while (Date.now() < deadline && exitCode === undefined) {
      // What `lxd waitready` waits for: the daemon answers and has finished its start-up.
      if ((await answers(client)) && (await client.request('GET', '/internal/ready').then(() => true, () => false))) return { socket, lxdDir, stop };
      await sleep(50);
    }
  } finally {
    client.close();
  }
  const tail = await fs.readFile(log, 'utf8').then((t) => t.trim().split('\n').slice(-5).join(' | '), () => '');
  await stop();
  throw new Error(`lxd did not start${exitCode !== undefined ? ` (exit ${exitCode})` : ' within 60 s'}${tail ? `: ${tail}` : ''}`);
}

export async function ensurePool(client: LxdClient, pool: string, description: string, driver: 'dir' | 'btrfs' = 'dir', config: Record<string, string> = {}): Promise<void> {
  try {
    await client.request('GET', `/1.0/storage-pools/${pool}`);
  } catch (e) {
    if (!(e instanceof NotFound)) throw e;
    // A btrfs pool without `source` is a loop file LXD makes in its own LXD_DIR (removed with it).
    await client.call('POST', '/1.0/storage-pools', { name: pool, driver, config, description });
  }
}

/** A profile with only a root disk on `pool` (no NIC). */
export async function ensureProfile(client: LxdClient, profile: string, pool: string, description: string): Promise<void> {
  const body = { config: {}, description, devices: { root: { type: 'disk', path: '/', pool } } };
  try {
    await client.request('GET', client.url(`/1.0/profiles/${profile}`));
    await client.call('PUT', client.url(`/1.0/profiles/${profile}`), body);
  } catch (e) {
    if (!(e instanceof NotFound)) throw e;
    await client.call('POST', client.url('/1.0/profiles'), { name: profile, ...body });
  }
}

/** Imports lxq's busybox image as `alias`, unless the alias already points at it. */
export async function ensureBusyboxImage(client: LxdClient, alias: string, scratch: string): Promise<void> {
  const image = await new ImageStore(process.env.LXQ_TEST_IMAGES ?? '/var/tmp/lxq-test-images').ensure('busybox');
  const source = `${path.basename(image.dir)}@${image.createdAt}`;
  let old: string | undefined;
  try {
    old = (await client.request('GET', `/1.0/images/aliases/${alias}`)).metadata.target as string;
    const current = (await client.request('GET', `/1.0/images/${old}`)).metadata;
    if (current.properties?.['lxq.source'] === source) return;
  } catch (e) {
    if (!(e instanceof NotFound)) throw e;
  }
  const dir = await fs.mkdtemp(path.join(scratch, 'lxd-image-'));
  try {
    const metadata = [
      'architecture: x86_64',
      `creation_date: ${Math.floor(Date.parse(image.createdAt) / 1000)}`,
      'properties:',
      '  description: "lxq busybox"',
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
    const known = await client.request('GET', `/1.0/images/${fingerprint}`).then(() => true, () => false);
    if (!known) await client.wait(await client.request('POST', '/1.0/images', undefined, { stream: tarball, timeoutMs: 300_000 }), 'POST /1.0/images');
    if (old) {
      await client.call('PUT', `/1.0/images/aliases/${alias}`, { target: fingerprint, description: '' });
      if (old !== fingerprint) await client.call('DELETE', `/1.0/images/${old}`).catch(() => undefined);
    } else {
      await client.call('POST', '/1.0/images/aliases', { name: alias, target: fingerprint, description: 'lxq busybox' });
    }
  } finally {
    await fs.rm(dir, { recursive: true, force: true });
  }
}

/** A private LXD for one test file: its directories under a temporary one, a pool, a profile and the busybox alias. */
export interface LxdFixture {
  dir: string;
  daemon: LxdDaemon;
  client: LxdClient;
  /** Stops the daemon (after restart(), the new one) and removes its directories. */
  stop(): Promise<void>;
  /** Stops the daemon and starts it again on the same directories (its instances are kept). */
  restart(): Promise<void>;
}

export async function startLxdFixture(prefix: string, names: { pool: string; profile: string; alias: string }): Promise<LxdFixture> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), prefix));
  // The containers' root (mapped to a subuid) must be able to traverse down to LXD_DIR.
  await fs.chmod(dir, 0o711);
  let daemon: LxdDaemon | undefined;
  let client: LxdClient | undefined;
  try {
    daemon = await startLxd(path.join(dir, 'lxd'), path.join(dir, 'log'));
    client = new LxdClient({ socket: daemon.socket });
    await ensurePool(client, names.pool, 'lxq tests');
    await ensureProfile(client, names.profile, names.pool, 'lxq tests');
    await ensureBusyboxImage(client, names.alias, dir);
  } catch (e) {
    client?.close();
    await daemon?.stop();
    await fs.rm(dir, { recursive: true, force: true });
    throw e;
  }
  const fixture: LxdFixture = {
    dir,
    daemon,
    client,
    stop: async () => {
      fixture.client.close();
      await fixture.daemon.stop();
      await fs.rm(dir, { recursive: true, force: true });
    },
    restart: async () => {
      await fixture.daemon.stop();
      fixture.daemon = await startLxd(path.join(dir, 'lxd'), path.join(dir, 'log'));
    },
  };
  return fixture;
}

/**
 * A private LXD (startLxdFixture) and lxq's RemoteHost on it for the tests of a file (or of a
 * describe, if called there): made before them; after them every container named in `made` is
 * stopped and deleted there, the connection closed and the daemon stopped. Its fields are read
 * once it is made.
 */
export function lxdPerFile(prefix: string, names: { pool: string; profile: string; alias: string }): { readonly lxd: LxdFixture; readonly remote: RemoteHost; readonly made: string[] } {
  let lxd: LxdFixture | undefined;
  let remote: RemoteHost | undefined;
  const made: string[] = [];
  beforeAll(async () => {
    lxd = await startLxdFixture(prefix, names);
    remote = await RemoteHost.connect({ socket: lxd.daemon.socket });
  }, 300_000);
  afterAll(async () => {
    try {
      for (const c of made) {
        await lxd?.client.call('PUT', `/1.0/instances/${c}/state`, { action: 'stop', force: true }).catch(() => undefined);
        await lxd?.client.call('DELETE', `/1.0/instances/${c}`).catch(() => undefined);
      }
    } finally {
      remote?.close();
      await lxd?.stop();
    }
  }, 120_000);
  const ready = <T>(x: T | undefined): T => {
    if (x === undefined) throw new Error('the LXD fixture is made in beforeAll');
    return x;
  };
  return {
    get lxd() {
      return ready(lxd);
    },
    get remote() {
      return ready(remote);
    },
    made,
  };
}
