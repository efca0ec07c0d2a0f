/**
 * LXD over the network, for tests and benchmarks, on loopback only: a free port on a 127.x.y.z
 * address, a daemon set to listen there (`core.https_address`), a client certificate made with
 * `openssl` and added to the daemon's trust store over its unix socket, and the daemon's own
 * certificate to pin.
 */
import { execFile } from 'node:child_process';
import { promises as fs } from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { promisify } from 'node:util';

import { stringify as stringifyYaml } from 'yaml';

import { LxdClient } from '../../lib/drivers/remote/client';
import { ensurePool, ensureProfile, LxdDaemon, startLxd } from './lxd';

const run = promisify(execFile);

/** A loopback address of this run's own (127.a.b.c, never 127.0.0.1), so parallel files do not meet. */
export function loopbackAddress(last: number): string {
  const a = 100 + Math.floor(Math.random() * 100);
  const b = 1 + Math.floor(Math.random() * 250);
  return `127.${a}.${b}.${last}`;
}

/** A port nothing listens on at `address` now (the kernel's pick, released again). */
export function freePort(address: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, address, () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

/** Makes the daemon listen for HTTPS on `address` (loopback) and returns its URL. */
export async function listenHttps(client: LxdClient, address: string): Promise<string> {
  if (!address.startsWith('127.')) throw new Error(`refusing to listen on ${address}: loopback only`);
  const port = await freePort(address);
  await client.call('PATCH', '/1.0', { config: { 'core.https_address': `${address}:${port}` } });
  return `https://${address}:${port}`;
}

export interface ClientCert {
  cert: string;
  key: string;
}

/** A self-signed client certificate (EC P-384, as `lxc` makes), written under `dir`. */
export async function makeClientCert(dir: string, name: string): Promise<ClientCert> {
  const crt = path.join(dir, `${name}.crt`);
  const key = path.join(dir, `${name}.key`);
  await run('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:secp384r1', '-nodes', '-days', '2', '-subj', `/CN=${name}`, '-keyout', key, '-out', crt]);
  return { cert: await fs.readFile(crt, 'utf8'), key: await fs.readFile(key, 'utf8') };
}

/** Adds `cert` to the daemon's trust store as a client certificate (POST /1.0/certificates over the socket). */
export async function trust(client: LxdClient, cert: string, name: string): Promise<void> {
  const der = cert.replace(/-----(BEGIN|END) CERTIFICATE-----|\s+/g, '');
  await client.call('POST', '/1.0/certificates', { type: 'client', name, certificate: der });
}

/** The daemon's own certificate (what a client pins): `server.crt` in its LXD_DIR, as GET /1.0 also reports. */
export async function serverCert(client: LxdClient): Promise<string> {
  return (await client.request('GET', '/1.0')).metadata.environment.certificate as string;
}

export interface LxdCluster {
  /** The members, in join order (m1 bootstrapped the cluster, m2 joined it). */
  members: Array<{ name: string; daemon: LxdDaemon; client: LxdClient; url: string; lxdDir: string }>;
  /** Stops the members, the joiner first (`lxd shutdown`), and closes their clients. */
  stop(): Promise<void>;
}

/**
 * A two-member LXD cluster on this machine: two daemons (LXD_DIRs under `dir`) on two loopback
 * addresses of their own. m1 gets the `dir` pool and the profile, then enables clustering over
 * REST; m2 joins with a token (`lxc cluster add`) through `lxd init --preseed`, as an admin would.
 * Whatever fails, what was started is stopped again before the error is thrown.
 */
export async function startCluster(dir: string, pool: string, profile: string): Promise<LxdCluster> {
  const members: LxdCluster['members'] = [];
  const stop = async () => {
    for (const m of [...members].reverse()) {
      m.client.close();
      await m.daemon.stop();
    }
  };
  try {
    const net = loopbackAddress(0).replace(/\.0$/, '');
    for (const name of ['m1', 'm2']) {
      const lxdDir = path.join(dir, name);
      const daemon = await startLxd(lxdDir, path.join(dir, `${name}-log`));
      members.push({ name, daemon, client: new LxdClient({ socket: daemon.socket }), url: '', lxdDir });
    }
    const [m1, m2] = members;
    await ensurePool(m1.client, pool, 'lxq cluster tests');
    await ensureProfile(m1.client, profile, pool, 'lxq cluster tests');
    m1.url = await listenHttps(m1.client, `${net}.2`);
    await m1.client.call('PUT', '/1.0/cluster', { server_name: 'm1', enabled: true });
    const env = (m: { lxdDir: string }) => ({ ...process.env, LXD_DIR: m.lxdDir });
    const added = await run('lxc', ['cluster', 'add', 'm2'], { env: env(m1), timeout: 60_000 });
    const token = added.stdout.trim().split('\n').pop()!.trim();
    const m2Address = `${net}.3:${await freePort(`${net}.3`)}`;
    const preseed = stringifyYaml({
      cluster: {
        enabled: true,
        server_name: 'm2',
        server_address: m2Address,
        cluster_address: m1.url.replace('https://', ''),
        cluster_token: token,
        // The pool's per-member key: m2's `dir` pool lives in its own LXD_DIR.
        member_config: [{ entity: 'storage-pool', name: pool, key: 'source', value: '' }],
      },
    });
    const child = execFile('lxd', ['init', '--preseed'], { env: env(m2), timeout: 120_000 });
    const joined = new Promise<void>((resolve, reject) => {
      let stderr = '';
      child.stderr?.on('data', (d) => (stderr += d));
      child.on('error', reject);
      child.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`lxd init --preseed (join m2): exit ${code}: ${stderr.trim()}`))));
    });
    child.stdin?.end(preseed);
    await joined;
    m2.url = `https://${m2Address}`;
    return { members, stop };
  } catch (e) {
    await stop();
    throw e;
  }
}
