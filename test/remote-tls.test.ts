/**
 * Host.connect over HTTPS against a real LXD 5.0: a private daemon (its own LXD_DIR and
 * LXD_LOG_DIR) listening on a loopback address of this file's own, a client certificate made
 * with openssl and trusted over the unix socket, the daemon's certificate pinned. Then every way
 * of getting the connection wrong, each a typed error with the server's words, never a hang.
 */
import { randomBytes } from 'node:crypto';
import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';

import { Host } from '../lib';
import { InvalidArgument, InvalidState, LxqError, NotFound, OperationFailed, PermissionDenied, Timeout } from '../lib/core/errors';
import { LxdClient } from '../lib/drivers/remote/client';
import { ClientCert, freePort, listenHttps, loopbackAddress, makeClientCert, serverCert, trust } from './helpers/lxd-net';
import { ensureBusyboxImage, ensurePool, ensureProfile, LxdDaemon, startLxd } from './helpers/lxd';
import { execText, thrown } from './helpers/host';

jest.setTimeout(300_000);

const POOL = 'lxq-tls';
const PROFILE = 'lxq-tls';
const ALIAS = 'lxq-tls-busybox';
const tag = randomBytes(3).toString('hex');

let dir: string;
let daemon: LxdDaemon | undefined;
let unix: LxdClient;
let url: string;
let address: string;
let pinned: string;
let trusted: ClientCert;
let stranger: ClientCert;
const made = new Set<string>();

beforeAll(async () => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'lxq-lxd-tls-'));
  chmodSync(dir, 0o711);
  daemon = await startLxd(path.join(dir, 'lxd'), path.join(dir, 'log'));
  unix = new LxdClient({ socket: daemon.socket });
  await ensurePool(unix, POOL, 'lxq tls tests');
  await ensureProfile(unix, PROFILE, POOL, 'lxq tls tests');
  await ensureBusyboxImage(unix, ALIAS, dir);
  address = loopbackAddress(1);
  url = await listenHttps(unix, address);
  pinned = await serverCert(unix);
  trusted = await makeClientCert(dir, `lxq-test-${tag}`);
  stranger = await makeClientCert(dir, `lxq-stranger-${tag}`);
  await trust(unix, trusted.cert, `lxq-test-${tag}`);
});

afterAll(async () => {
  try {
    for (const n of made) {
      await unix?.call('PUT', `/1.0/instances/${n}/state`, { action: 'stop', force: true }).catch(() => undefined);
      await unix?.call('DELETE', `/1.0/instances/${n}`).catch(() => undefined);
    }
  } finally {
    unix?.close();
    await daemon?.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});

const lxd = (e: LxqError) => (e as unknown as { lxd?: { status: number; serverMessage: string } }).lxd;

describe('Host.connect over https', () => {
  test('a trusted client certificate with the pinned server certificate: create, start, exec over wss, state, the server\'s state refusals typed, stop, delete', async () => {
    const host = await Host.connect({ url, ...trusted, serverCert: pinned });
    const name = `tls-${tag}`;
    made.add(name);
    try {
      expect(await host.members()).toEqual([expect.objectContaining({ message: 'not clustered' })]);
      const i = await host.create(name, { image: ALIAS, profiles: [PROFILE] });
      await i.start();
      expect((await i.state()).status).toBe('running');
      expect(execText(await i.exec(['/bin/sh', '-c', 'cat; echo err >&2'], { stdin: 'over tls\n' }))).toEqual({ exitCode: 0, stdout: 'over tls\n', stderr: 'err\n' });
      expect((await host.list()).map((x) => x.name)).toContain(name);
      // The server's own refusals by state, at once or from the operation, are InvalidState with its words.
      const raw = host.client;
      const running = await thrown(raw.call('DELETE', `/1.0/instances/${name}`));
      expect(running).toBeInstanceOf(InvalidState);
      expect(lxd(running)).toMatchObject({ status: 400, serverMessage: 'Instance is running' });
      await i.stop({ force: true });
      const stopped = await thrown(raw.call('PUT', `/1.0/instances/${name}/state`, { action: 'stop', force: true }));
      expect(stopped).toBeInstanceOf(InvalidState);
      expect(lxd(stopped)?.serverMessage).toMatch(/already stopped/);
      await i.delete();
      made.delete(name);
      await expect(host.get(name)).rejects.toBeInstanceOf(NotFound);
    } finally {
      host.close();
    }
  });

  test('an untrusted client certificate: PermissionDenied with the server\'s message and status', async () => {
    const e = await thrown(Host.connect({ url, ...stranger, serverCert: pinned }));
    console.log(`untrusted client: ${e.name}: ${e.message}`);
    expect(e).toBeInstanceOf(PermissionDenied);
    expect(lxd(e)?.status).toBe(403);
    expect(lxd(e)?.serverMessage).toMatch(/not authorized|forbidden|trusted/i);
  });

  test('a server certificate that is not the pinned one: refused during the handshake, nothing sent', async () => {
    // Another certificate entirely (the stranger's), pinned as if it were the server's.
    const e = await thrown(Host.connect({ url, ...trusted, serverCert: stranger.cert, timeoutMs: 5000 }));
    console.log(`wrong pin: ${e.name}: ${e.message}`);
    expect(e).toBeInstanceOf(PermissionDenied);
    expect(e.message).toMatch(/not the pinned/);
  });

  test('a closed loopback port and a missing socket: OperationFailed at once, not a hang', async () => {
    const closed = `https://${address}:${await freePort(address)}`;
    let t0 = Date.now();
    const e = await thrown(Host.connect({ url: closed, ...trusted, serverCert: pinned, timeoutMs: 60_000 }));
    expect(e).toBeInstanceOf(OperationFailed);
    expect(e.message).toMatch(/no LXD server answers at https:\/\/127\./);
    expect(Date.now() - t0).toBeLessThan(30_000); // at once, not at the timeout
    t0 = Date.now();
    const s = await thrown(Host.connect({ socket: path.join(dir, 'missing.socket'), timeoutMs: 60_000 }));
    expect(s).toBeInstanceOf(OperationFailed);
    expect(s.message).toMatch(/missing\.socket/);
    expect(Date.now() - t0).toBeLessThan(30_000); // at once, not at the timeout
  });

  test('a port that accepts and never speaks TLS: Timeout after timeoutMs, not a hang', async () => {
    // A protocol edge the real daemon does not produce: a loopback listener that stays silent.
    const conns: net.Socket[] = [];
    const silent = net.createServer((c) => conns.push(c));
    await new Promise<void>((r) => silent.listen(0, address, r));
    const port = (silent.address() as net.AddressInfo).port;
    try {
      const t0 = Date.now();
      const e = await thrown(Host.connect({ url: `https://${address}:${port}`, ...trusted, serverCert: pinned, timeoutMs: 1000 }));
      expect(e).toBeInstanceOf(Timeout);
      expect(e.message).toMatch(/within 1000 ms/);
      expect(Date.now() - t0).toBeLessThan(30_000); // not hung (no bound on a loaded machine's speed)
    } finally {
      conns.forEach((c) => c.destroy());
      await new Promise((r) => silent.close(r));
    }
  });

  test('a project or a target that does not exist: NotFound / InvalidArgument in the server\'s words, before anything is made', async () => {
    const p = await thrown(Host.connect({ url, ...trusted, serverCert: pinned, project: `nope-${tag}` }));
    console.log(`missing project: ${p.name}: ${p.message}`);
    expect(p).toBeInstanceOf(NotFound);
    expect(lxd(p)?.status).toBe(404);
    expect(p.message).toMatch(/project/i);
    // This server is not clustered: a target names nothing it has.
    const t = await thrown(Host.connect({ url, ...trusted, serverCert: pinned, target: `nope-${tag}` }));
    console.log(`target on a standalone server: ${t.name}: ${t.message}`);
    expect(t).toBeInstanceOf(InvalidArgument);
    expect(t.message).toMatch(/not clustered/);
  });

  test('bad certificates are refused before connecting', () => {
    expect(() => new LxdClient({ url, cert: trusted.cert, key: stranger.key, serverCert: pinned })).toThrow(InvalidArgument);
    expect(() => new LxdClient({ url, cert: 'not a certificate', key: trusted.key, serverCert: pinned })).toThrow(InvalidArgument);
    expect(() => new LxdClient({ url, ...trusted, serverCert: 'not a certificate' })).toThrow(InvalidArgument);
  });
});
