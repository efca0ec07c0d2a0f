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

import type { LxdClient } from '../../lib/remote/client';

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
