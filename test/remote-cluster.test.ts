/**
 * A two-member LXD 5.0 cluster on this machine (two daemons, each its own LXD_DIR, on two
 * loopback addresses of this file's own; m2 joined with a token): `members()` and `target`
 * placement through Host.connect over HTTPS, as a program outside the cluster would drive it.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';

import { Host } from '../lib';
import { LxqError, NotFound } from '../lib/core/errors';
import type { RemoteHost } from '../lib/drivers/remote';
import { ClientCert, LxdCluster, makeClientCert, serverCert, startCluster, trust } from './helpers/lxd-net';
import { ensureBusyboxImage } from './helpers/lxd';
import { execText } from './helpers/host';

jest.setTimeout(300_000);

const run = promisify(execFile);

const POOL = 'lxq-cl';
const PROFILE = 'lxq-cl';
const ALIAS = 'lxq-cl-busybox';
const tag = randomBytes(3).toString('hex');

let dir: string;
let cluster: LxdCluster | undefined;
let me: ClientCert;
let pinned: string;
const made = new Set<string>();

beforeAll(async () => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'lxq-lxd-cl-'));
  chmodSync(dir, 0o711);
  cluster = await startCluster(dir, POOL, PROFILE);
  const m1 = cluster.members[0].client;
  await ensureBusyboxImage(m1, ALIAS, dir);
  me = await makeClientCert(dir, `lxq-cl-${tag}`);
  // The trust store is the cluster's: trusted on m1 is trusted on m2.
  await trust(m1, me.cert, `lxq-cl-${tag}`);
  // Every member serves the cluster's certificate.
  pinned = await serverCert(m1);
});

afterAll(async () => {
  try {
    const m1 = cluster?.members[0].client;
    for (const n of made) {
      await m1?.call('PUT', `/1.0/instances/${n}/state`, { action: 'stop', force: true }).catch(() => undefined);
      await m1?.call('DELETE', `/1.0/instances/${n}`).catch(() => undefined);
    }
  } finally {
    await cluster?.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});

const connect = (member: number, target?: string): Promise<RemoteHost> =>
  Host.connect({ url: cluster!.members[member].url, ...me, serverCert: pinned, ...(target ? { target } : {}) });

/** Which daemon runs a container: its init's parent is the `[lxc monitor] <LXD_DIR>/containers <name>` of that daemon. */
function monitorOf(pid: number): string {
  const ppid = readFileSync(`/proc/${pid}/stat`, 'utf8').replace(/^.*\) /, '').split(' ')[1];
  return readFileSync(`/proc/${ppid}/cmdline`, 'utf8').replace(/\0/g, ' ').trim();
}

describe('a two-member cluster on loopback', () => {
  test('members() lists both members online, from either member', async () => {
    for (const i of [0, 1]) {
      const host = await connect(i);
      try {
        const members = await host.members();
        console.log(`members via m${i + 1}: ${JSON.stringify(members)}`);
        expect(members.map((m) => [m.name, m.status, m.url])).toEqual([
          ['m1', 'online', cluster!.members[0].url],
          ['m2', 'online', cluster!.members[1].url],
        ]);
        expect(members.every((m) => m.architecture === 'x86_64' && m.message.length > 0)).toBe(true);
      } finally {
        host.close();
      }
    }
  });

  test('the daemons listen on their loopback addresses and nowhere else', async () => {
    const { stdout } = await run('ss', ['-Hltnp']);
    const lxd = stdout.split('\n').filter((l) => /users:\(\("lxd",/.test(l)).map((l) => l.trim().split(/\s+/)[3]);
    for (const m of cluster!.members) expect(lxd).toContain(m.url.replace('https://', ''));
    expect(lxd.filter((a) => !a.startsWith('127.'))).toEqual([]);
  });

  test('target m2 through m1: the instance is located on m2, runs under m2\'s daemon, and exec reaches it', async () => {
    const host = await connect(0, 'm2');
    const name = `cl-${tag}-2`;
    made.add(name);
    try {
      const i = await host.create(name, { image: ALIAS, profiles: [PROFILE] });
      expect(i.location).toBe('m2');
      expect((await host.get(name)).location).toBe('m2');
      await i.start();
      const st = await i.state();
      expect(st.status).toBe('running');
      const m2 = cluster!.members[1].lxdDir;
      expect(monitorOf(st.pid!)).toContain(path.join(m2, 'containers'));
      expect(existsSync(path.join(m2, 'containers', name))).toBe(true);
      expect(existsSync(path.join(cluster!.members[0].lxdDir, 'containers', name))).toBe(false);
      // m1 forwards the exec websockets to m2.
      expect(execText(await i.exec(['/bin/sh', '-c', 'echo on $(hostname)']))).toEqual({ exitCode: 0, stdout: `on ${name}\n`, stderr: '' });
      await i.stop({ force: true });
      await i.delete();
      made.delete(name);
      await expect(host.get(name)).rejects.toBeInstanceOf(NotFound);
    } finally {
      host.close();
    }
  });

  test('target m1 through m2 places it on m1', async () => {
    const host = await connect(1, 'm1');
    const name = `cl-${tag}-1`;
    made.add(name);
    try {
      const i = await host.create(name, { image: ALIAS, profiles: [PROFILE] });
      expect(i.location).toBe('m1');
      await i.start();
      expect(monitorOf((await i.state()).pid!)).toContain(path.join(cluster!.members[0].lxdDir, 'containers'));
      await i.delete({ force: true });
      made.delete(name);
    } finally {
      host.close();
    }
  });

  test('a target that is not a member: NotFound in the server\'s words at connect, nothing made', async () => {
    let e: LxqError | undefined;
    await connect(0, `nope-${tag}`).catch((x) => (e = x));
    console.log(`missing target: ${e?.name}: ${e?.message}`);
    expect(e).toBeInstanceOf(NotFound);
    expect((e as unknown as { lxd: { status: number; serverMessage: string } }).lxd).toMatchObject({ status: 404, serverMessage: expect.stringMatching(/not found/i) });
    const host = await connect(0);
    try {
      expect((await host.list()).map((x) => x.name).filter((n) => n.startsWith(`cl-${tag}`))).toEqual([]);
    } finally {
      host.close();
    }
  });
});
