/**
 * lib/remote's Instance beyond the conformance cases, against a real LXD 5.0 started by this
 * file (its own LXD_DIR, a dir pool, a profile without NIC, lxq's busybox): options and devices
 * through PUT with If-Match (a concurrent change by another client is retried, not lost), a pty
 * with resize, stdin streamed, abort, snapshots, rename, and the host's events websocket: changes
 * made by the raw REST client and by the `lxc` CLI are seen once, and the websocket survives a
 * restart of the daemon.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';

import { Aborted, AlreadyExists, Busy, Host, InvalidArgument, InvalidState, NotFound, NotSupported, Timeout } from '../lib';
import type { LifecycleEvent } from '../lib/events/lifecycle';
import type { StatusEvent } from '../lib/instance/instance';
import type { RemoteHost, RemoteInstance } from '../lib/drivers/remote';
import { LxdClient } from '../lib/drivers/remote/client';
import { execText } from './helpers/host';
import { type LxdFixture, startLxdFixture } from './helpers/lxd';

jest.setTimeout(300_000);
const run = promisify(execFile);

const POOL = 'lxq-ri';
const PROFILE = 'lxq-ri';
const ALIAS = 'lxq-ri-busybox';
const tag = randomBytes(3).toString('hex');
let n = 0;
const name = () => `ri-${tag}-${n++}`;

let lxd: LxdFixture;
let client: LxdClient;
let host: RemoteHost;
const made = new Set<string>();

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** Waits until `check` holds (events arrive asynchronously). */
async function until(check: () => boolean, ms = 60_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await sleep(20);
  }
}

async function launch(): Promise<RemoteInstance> {
  const c = name();
  made.add(c);
  // busybox's init halts on SIGUSR1 (LXD sends SIGPWR unless told).
  const i = await host.create(c, { image: ALIAS, profiles: [PROFILE], config: { 'raw.lxc': 'lxc.signal.halt = SIGUSR1' } });
  await i.start();
  return i;
}

beforeAll(async () => {
  lxd = await startLxdFixture('lxq-lxd-ri-', { pool: POOL, profile: PROFILE, alias: ALIAS });
  client = lxd.client;
  host = await Host.connect({ socket: lxd.daemon.socket });
});

afterAll(async () => {
  try {
    for (const c of made) {
      await client?.call('PUT', `/1.0/instances/${c}/state`, { action: 'stop', force: true }).catch(() => undefined);
      await client?.call('DELETE', `/1.0/instances/${c}`).catch(() => undefined);
    }
  } finally {
    host?.close();
    await lxd?.stop();
  }
});

describe('options and devices', () => {
  let i: RemoteInstance;
  beforeAll(async () => {
    i = await launch();
  });

  test('update() sets and removes lxq options live; LXD keys of its own are kept; bad input changes nothing', async () => {
    await i.update({ 'limits.processes': 50, 'user.note': 'one', 'environment.COLOR': 'blue' });
    expect(i.config).toMatchObject({ 'limits.processes': '50', 'user.note': 'one', 'environment.COLOR': 'blue' });
    // Applied by LXD to the running container: its pids cgroup (v1 or unified), seen from the host.
    const pidsMax = [`/sys/fs/cgroup/pids/lxc.payload.${i.name}/pids.max`, `/sys/fs/cgroup/lxc.payload.${i.name}/pids.max`].find((f) => existsSync(f));
    expect(readFileSync(pidsMax!, 'utf8').trim()).toBe('50');
    expect((await i.exec(['sh', '-c', 'echo $COLOR'])).stdout.toString()).toBe('blue\n');
    await i.update({ 'limits.memory': '256MiB' });
    expect((await i.state()).memory.limitBytes).toBe(256 * 2 ** 20);
    await i.update({ 'user.note': null, 'limits.memory': null });
    expect((await i.state()).memory.limitBytes).toBeNull();
    expect(i.config['user.note']).toBeUndefined();
    const server = (await client.request('GET', `/1.0/instances/${i.name}`)).metadata.config;
    expect(server['user.note']).toBeUndefined();
    expect(server['volatile.base_image']).toBeTruthy(); // LXD's own keys are not lxq's to drop

    const before = (await client.request('GET', `/1.0/instances/${i.name}`)).etag;
    await expect(i.update({ 'limits.proceses': 1 } as never)).rejects.toThrow(InvalidArgument);
    await expect(i.update({ 'limits.memory': 'lots' })).rejects.toThrow(InvalidArgument);
    await expect(i.update({ 'vm.accel': 'tcg' } as never)).rejects.toThrow(InvalidArgument); // a VM option on a container
    expect((await client.request('GET', `/1.0/instances/${i.name}`)).etag).toBe(before);
  });

  test("a concurrent change by another client between lxq's read and its PUT: If-Match refuses, lxq reads again, both changes land", async () => {
    const other = new LxdClient({ socket: lxd.daemon.socket });
    const real = host.client.request.bind(host.client);
    let raced = 0;
    // Another client's change lands just before lxq's first PUT (whose ETag is then stale).
    host.client.request = (async (method: string, p: string, body?: unknown, opts?: object) => {
      if (method === 'PUT' && p.startsWith(`/1.0/instances/${i.name}`) && !p.includes('/state') && raced++ === 0) {
        await other.call('PATCH', `/1.0/instances/${i.name}`, { config: { 'user.other': 'theirs' } });
      }
      return real(method, p, body, opts);
    }) as typeof host.client.request;
    try {
      await i.update({ 'user.mine': 'ours' });
    } finally {
      host.client.request = real;
      other.close();
    }
    expect(raced).toBe(2); // the refused PUT and the one that landed
    const config = (await client.request('GET', `/1.0/instances/${i.name}`)).metadata.config;
    expect(config).toMatchObject({ 'user.other': 'theirs', 'user.mine': 'ours' });
  });

  test('devices: a disk added live, changed (readonly), removed; bad devices refused before any change', async () => {
    const share = mkdtempSync(path.join(os.tmpdir(), 'lxq-ri-share-'));
    chmodSync(share, 0o777);
    writeFileSync(path.join(share, 'f'), 'shared\n');
    try {
      await i.addDevice('data', { type: 'disk', source: share, path: '/mnt/data' });
      expect(i.devices.data).toEqual({ type: 'disk', source: share, path: '/mnt/data' });
      expect((await i.exec(['cat', '/mnt/data/f'])).stdout.toString()).toBe('shared\n');
      expect((await i.exec(['sh', '-c', 'echo w > /mnt/data/w'])).exitCode).toBe(0);
      await i.updateDevice('data', { readonly: true });
      expect(i.devices.data.readonly).toBe('true');
      expect((await i.exec(['sh', '-c', 'echo w > /mnt/data/w2'])).exitCode).not.toBe(0);
      await expect(i.addDevice('data', { type: 'disk', source: share, path: '/mnt/x' })).rejects.toThrow(AlreadyExists);
      await expect(i.addDevice('bad', { type: 'floppy' } as never)).rejects.toThrow(InvalidArgument);
      await expect(i.addDevice('bad', { type: 'disk', source: share, path: 'relative' })).rejects.toThrow(InvalidArgument);
      await expect(i.updateDevice('nope', { readonly: false })).rejects.toThrow(NotFound);
      expect(Object.keys(i.devices)).toEqual(['data']);
      await i.removeDevice('data');
      expect(i.devices).toEqual({});
      expect((await i.exec(['sh', '-c', 'grep -c " /mnt/data " /proc/mounts'])).stdout.toString().trim()).toBe('0');
      await expect(i.removeDevice('data')).rejects.toThrow(NotFound);
    } finally {
      await i.removeDevice('data').catch(() => undefined);
      rmSync(share, { recursive: true, force: true });
    }
  });

  test('waitForAddress without a NIC: Timeout; state() devices; console.log(); export NotSupported', async () => {
    await expect(i.waitForAddress({ timeout: 500 })).rejects.toThrow(Timeout);
    // state() reports the expanded devices: none of its own, the root disk of the fixture's profile.
    expect((await i.state()).devices).toEqual([{ name: 'root', type: 'disk', path: '/' }]);
    expect(await i.console.log()).toMatch(/lxq busybox: up/);
    await expect(i.export('/tmp/x.tar.zst')).rejects.toThrow(NotSupported);
  });

  test("console.follow() polls LXD's log (it has no follow) and sees a line written after the call; since is NotSupported; metrics() is LXD's own /1.0/metrics; stats()", async () => {
    const ac = new AbortController();
    const lines: string[] = [];
    const done = (async () => {
      for await (const line of i.console.follow({ tail: 0, interval: 100, signal: ac.signal })) lines.push(line);
    })();
    await i.exec(['sh', '-c', 'printf "\\nremote-follow-line\\n" > /dev/console']);
    await until(() => lines.includes('remote-follow-line'), 30_000);
    ac.abort();
    await done;
    // LXD's log has no times: since is refused, plainly.
    await expect(i.console.log({ since: '10m' })).rejects.toThrow(NotSupported);
    expect(() => i.console.follow({ since: '10m' })).toThrow(/has no times/);
    expect(await i.console.log({ tail: 0 })).toBe('');
    const metrics = await host.metrics();
    expect(metrics).toMatch(new RegExp(`^lxd_procs_total\\{[^}]*name="${i.name}"[^}]*\\} \\d+$`, 'm'));
    expect(metrics.endsWith('# EOF\n')).toBe(true);
    // stats() from LXD's state: two samples, then the abort ends them.
    const stop = new AbortController();
    const samples = [];
    for await (const s of i.stats({ interval: 200, signal: stop.signal })) if (samples.push(s) === 2) stop.abort();
    expect(samples).toHaveLength(2);
    expect(samples[1]).toMatchObject({ status: 'running', disk: {} });
    expect(samples[1].processes).toBeGreaterThan(0);
    expect(samples[1].cpu.percent).toBeGreaterThanOrEqual(0);
  });

  test('console.attach(): two readers see what is written to /dev/console; what one types reaches it', async () => {
    const a = await i.console.attach();
    const b = await i.console.attach();
    try {
      let outA = '';
      let outB = '';
      a.on('data', (d: Buffer) => (outA += d.toString()));
      b.on('data', (d: Buffer) => (outB += d.toString()));
      // LXD wires the console to its websocket a moment after the websocket is open, and says
      // nothing when: the guest writes until the line comes through.
      for (let k = 0; k < 50 && !(outA.includes('console-out') && outB.includes('console-out')); k++) {
        await i.exec(['sh', '-c', 'echo console-out > /dev/console']);
        await sleep(100);
      }
      await until(() => outA.includes('console-out') && outB.includes('console-out'));
      // The image's console shell (busybox init's askfirst: Enter starts it) runs what a types; b sees it.
      a.write('\n');
      await sleep(500);
      a.write('echo typed-by-$((40 + 2))\n');
      await until(() => outB.includes('typed-by-42'));
      await a.resize(132, 43); // through the control websocket (LXD's /dev/console answers no TIOCGWINSZ inside)
      await expect(a.resize(0, 10)).rejects.toThrow(InvalidArgument);
    } finally {
      a.destroy();
      b.destroy();
    }
    await i.freeze();
    try {
      await expect(i.console.attach()).rejects.toThrow(InvalidState);
    } finally {
      await i.unfreeze();
    }
  });
});

describe('commands', () => {
  let i: RemoteInstance;
  beforeAll(async () => {
    i = await launch();
  });

  test('readiness on LXD: launch with wait, a port listening inside, a command, a console line; Timeout; a stopped instance', async () => {
    const c = name();
    made.add(c);
    const w = await host.launch(ALIAS, c, { profiles: [PROFILE], config: { 'raw.lxc': 'lxc.signal.halt = SIGUSR1' }, wait: { for: 'exec', command: ['test', '-d', '/tmp'] } });
    expect(await w.status()).toBe('running');
    const server = await w.spawn(['sh', '-c', 'sleep 0.5; exec nc -l -p 8090']);
    try {
      await w.wait({ for: 'port', port: 8090, timeout: 60_000 });
    } finally {
      server.kill('SIGKILL');
      await server.exit.catch(() => undefined);
    }
    await w.spawn(['sh', '-c', 'echo remote-ready > /dev/console']);
    await w.wait({ for: 'log', pattern: /remote-ready/, timeout: 60_000 });
    const err = await w.wait({ for: 'port', port: 9, timeout: 5_000 }).catch((e) => e); // one check finishes in it
    expect(err).toBeInstanceOf(Timeout);
    expect(err.message).toMatch(/nothing listens on TCP port 9/);
    await w.stop({ force: true });
    await expect(w.wait({ for: 'agent' })).rejects.toBeInstanceOf(InvalidState);
    await w.delete();
    made.delete(c);
  });

  test('a pty: a terminal of the size asked, resized through the control websocket', async () => {
    const p = await i.spawn(['sh'], { pty: { cols: 90, rows: 20 } });
    expect(p.tty).toBe(true);
    let out = '';
    p.stdout.on('data', (d: Buffer) => (out += d.toString()));
    p.stdin.write('stty size\n');
    await until(() => out.includes('20 90'));
    p.resize(132, 43);
    p.stdin.write('stty size; exit 4\n');
    await until(() => out.includes('43 132'));
    expect(await p.exit).toEqual({ exitCode: 4, signal: null });
    expect(() => p.resize(0, 10)).toThrow(InvalidArgument);
    const pipes = await i.spawn(['true']);
    expect(() => pipes.resize(80, 24)).toThrow(InvalidState);
    await pipes.exit;
  });

  test('stdin is streamed: an answer comes back before the input ends', async () => {
    const p = await i.spawn(['sh', '-c', 'while read l; do echo "got $l"; done']);
    let out = '';
    p.stdout.on('data', (d: Buffer) => (out += d.toString()));
    p.stdin.write('one\n');
    await until(() => out === 'got one\n');
    p.stdin.end('two\n');
    expect(await p.exit).toEqual({ exitCode: 0, signal: null });
    await until(() => out === 'got one\ngot two\n');
  });

  test('an AbortSignal kills the command: Aborted', async () => {
    const ac = new AbortController();
    const t0 = Date.now();
    setTimeout(() => ac.abort(), 300);
    await expect(i.exec(['sleep', '300'], { signal: ac.signal })).rejects.toThrow(Aborted);
    expect(Date.now() - t0).toBeLessThan(120_000); // killed at the abort, not at its end
    expect((await i.exec(['sh', '-c', 'pgrep sleep || echo none'])).stdout.toString()).toBe('none\n');
  });

  test('many commands at once hold no connection each: other requests go on meanwhile', async () => {
    // More running commands than the client has connections (8): their ends come from the events websocket.
    // Each runs until its stdin ends, which it does only after the other requests were answered.
    const procs = await Promise.all(Array.from({ length: 12 }, () => i.spawn(['cat'])));
    let ended = 0;
    procs.forEach((p) => void p.exit.finally(() => ended++));
    expect((await i.state()).status).toBe('running');
    expect((await i.exec(['echo', 'meanwhile'])).stdout.toString()).toBe('meanwhile\n');
    expect(ended).toBe(0);
    procs.forEach((p) => p.stdin.end());
    expect(await Promise.all(procs.map((p) => p.exit))).toEqual(procs.map(() => ({ exitCode: 0, signal: null })));
  });

  test('a plain script whose last await is a command stays alive until it ends (the websocket alone holds nothing)', async () => {
    const c = await launch();
    const script = `
      const { Host } = require(${JSON.stringify(path.resolve(__dirname, '..', 'lib'))});
      (async () => {
        const host = await Host.connect({ socket: ${JSON.stringify(lxd.daemon.socket)} });
        const i = await host.get(${JSON.stringify(c.name)});
        let codes = [];
        for (let k = 0; k < 10; k++) codes.push((await i.exec(['/bin/true'])).exitCode);
        console.log(codes.join(','), 'done');
        host.close();
      })().catch((e) => { console.error(e); process.exit(1); });`;
    const { stdout } = await run(process.execPath, ['-r', path.join(__dirname, 'helpers', 'ts-register.js'), '-e', script], { timeout: 60_000 });
    expect(stdout).toBe('0,0,0,0,0,0,0,0,0,0 done\n');
  });

  test('large output on stdout and stderr at once stays apart', async () => {
    const r = await i.exec(['sh', '-c', 'head -c 2000000 /dev/zero; head -c 1000000 /dev/zero >&2']);
    expect(r.stdout.length).toBe(2_000_000);
    expect(r.stderr.length).toBe(1_000_000);
  });

  test('every byte of large outputs arrives, the first ones too: 20 rounds of three commands at once, exact content', async () => {
    // When the output listeners came after every websocket had opened, 10 MiB outputs lost their
    // first 16 KiB–2 MiB (13 of 45 runs at load 2, exit 0: ws drops a message nobody listens to).
    const seq = (n: number) => Array.from({ length: n }, (_, k) => `${k + 1}\n`).join('');
    const big = seq(300_000);
    const small = seq(20_000);
    for (let round = 0; round < 20; round++) {
      const [xs, lines, one] = await Promise.all([
        i.exec(['sh', '-c', "head -c 10485760 /dev/zero | tr '\\0' x"]),
        i.exec(['sh', '-c', 'seq 1 300000; seq 1 20000 >&2']),
        i.exec(['sh', '-c', 'printf 1']),
      ]);
      expect([xs.exitCode, xs.stdout.length, xs.stderr.length]).toEqual([0, 10_485_760, 0]);
      expect(xs.stdout.every((b) => b === 0x78)).toBe(true);
      expect(lines.exitCode).toBe(0);
      expect(lines.stdout.toString() === big).toBe(true);
      expect(lines.stderr.toString() === small).toBe(true);
      expect(execText(one)).toEqual({ exitCode: 0, stdout: '1', stderr: '' });
    }
  }, 300_000);
});

describe('snapshots and rename', () => {
  test('create (LXD default names), list, get, restore (files back), rename, delete, with events', async () => {
    const i = await launch();
    const seen: string[] = [];
    i.on('snapshot-created', (e) => seen.push(`created ${e.snapshot}`));
    i.on('snapshot-restored', (e) => seen.push(`restored ${e.snapshot}`));
    i.on('snapshot-renamed', (e) => seen.push(`renamed ${e.previous}>${e.snapshot}`));
    i.on('snapshot-deleted', (e) => seen.push(`deleted ${e.snapshot}`));
    await i.files.write('/root/v', 'one');
    await i.update({ 'user.v': 'one' });
    const s0 = await i.snapshots.create();
    expect(s0).toMatchObject({ name: 'snap0', stateful: false, expiresAt: null });
    expect(s0.record.config['user.v']).toBe('one');
    const s1 = await i.snapshots.create('named', { expiresAt: new Date(Date.now() + 3600_000) });
    expect(s1.expiresAt!.getTime()).toBeGreaterThan(Date.now());
    expect((await i.snapshots.list()).map((s) => s.name)).toEqual(['snap0', 'named']);
    await expect(i.snapshots.create('named')).rejects.toThrow(AlreadyExists);
    await expect(i.snapshots.create('a/b')).rejects.toThrow(InvalidArgument);

    await i.files.write('/root/v', 'two');
    await i.update({ 'user.v': 'two' });
    await i.snapshots.restore('snap0');
    expect((await i.files.read('/root/v')).toString()).toBe('one');
    expect(i.config['user.v']).toBe('one');
    expect(await i.status()).toBe('running');

    await i.snapshots.rename('named', 'kept');
    await expect(i.snapshots.rename('kept', 'snap0')).rejects.toThrow(AlreadyExists);
    await i.snapshots.delete('snap0');
    await expect(i.snapshots.get('snap0')).rejects.toThrow(NotFound);
    await expect(i.snapshots.delete('snap0')).rejects.toThrow(NotFound);
    expect((await i.snapshots.list()).map((s) => s.name)).toEqual(['kept']);
    expect(seen).toEqual(['created snap0', 'created named', 'restored snap0', 'renamed named>kept', 'deleted snap0']);
  });

  test('host.copy: the server copies an instance or one snapshot, independent of its source; options over the source\'s; bad input makes nothing', async () => {
    const src = await launch();
    await src.files.write('/root/v', 'at the snapshot');
    await src.snapshots.create('base');
    await src.files.write('/root/v', 'now');
    await src.update({ 'user.origin': 'src' });
    const before = (await host.list()).map((x) => x.name).sort();
    const dst = name();
    await expect(host.copy(src.name, dst, { bogus: 1 } as never)).rejects.toThrow(InvalidArgument);
    await expect(host.copy(src.name, dst, { snapshot: 'nosuch' })).rejects.toThrow(NotFound);
    await expect(host.copy(src.name, dst, { config: { 'no.such.key': '1' } as never })).rejects.toThrow(InvalidArgument);
    await expect(host.copy(src.name, src.name)).rejects.toThrow(AlreadyExists);
    await expect(host.copy(`nosuch-${tag}`, dst)).rejects.toThrow(NotFound);
    expect((await host.list()).map((x) => x.name).sort()).toEqual(before);

    made.add(dst);
    const copy = await host.copy(src.name, dst, { config: { 'user.copy': 'yes' } });
    expect(copy.name).toBe(dst);
    expect(copy.config).toMatchObject({ 'user.origin': 'src', 'user.copy': 'yes' });
    expect((await copy.snapshots.list()).map((s) => s.name)).toEqual(['base']);
    await copy.start();
    expect((await copy.files.read('/root/v')).toString()).toBe('now');
    await copy.files.write('/root/v', 'changed in the copy');
    expect((await src.files.read('/root/v')).toString()).toBe('now');

    const fromSnapshot = name();
    made.add(fromSnapshot);
    const old = await host.copy(src.name, fromSnapshot, { snapshot: 'base', instanceOnly: true });
    expect(await old.snapshots.list()).toEqual([]);
    await old.start();
    expect((await old.files.read('/root/v')).toString()).toBe('at the snapshot');
    // A running instance is not deleted without force: the server's refusal, in lxq's words.
    await expect(old.delete()).rejects.toThrow(/cannot delete .*: it is running; stop it first or pass \{ force: true \}/);
    for (const i of [copy, old]) await i.delete({ force: true });
  });

  test('rename: refused while running (Busy), onto a taken name (AlreadyExists); the same object under its new name', async () => {
    const i = await launch();
    const other = await launch();
    await expect(i.rename('bad_name')).rejects.toThrow(InvalidArgument);
    await expect(i.rename(name())).rejects.toThrow(Busy);
    await i.stop({ force: true });
    await expect(i.rename(other.name)).rejects.toThrow(AlreadyExists);
    const renamed: string[] = [];
    i.on('renamed', (e) => renamed.push(`${e.previous}>${e.name}`));
    const old = i.name;
    const next = name();
    made.add(next);
    await i.rename(next);
    expect(i.name).toBe(next);
    expect(renamed).toEqual([`${old}>${next}`]);
    expect(await host.get(next)).toBe(i);
    await expect(host.get(old)).rejects.toThrow(NotFound);
    await i.start();
    expect((await i.exec(['hostname'])).stdout.toString()).toBe(`${next}\n`);
  });
});

describe('events', () => {
  test("other clients' changes (raw REST, the lxc CLI) are seen once, as external, with the held instance's status events; ours as local", async () => {
    // The events of its own creation and start are not this test's: they are waited for first
    // (they may come late on a loaded machine).
    const early: LifecycleEvent[] = [];
    const before = (e: LifecycleEvent) => early.push(e);
    host.on('lifecycle', before);
    await host.ready();
    const i = await launch();
    await until(() => early.some((e) => e.name === i.name && e.action === 'instance-started'));
    host.off('lifecycle', before);
    const events: LifecycleEvent[] = [];
    const statuses: StatusEvent[] = [];
    const listener = (e: LifecycleEvent) => e.name === i.name && events.push(e);
    host.on('lifecycle', listener);
    await host.ready();
    i.on('status', (e) => statuses.push(e));
    try {
      // The raw REST client: another program on the same server.
      await client.call('PUT', `/1.0/instances/${i.name}/state`, { action: 'freeze' });
      await until(() => events.length === 1);
      expect(events[0]).toMatchObject({ action: 'instance-paused', name: i.name, type: 'container', requestor: 'external' });
      expect(new Date(events[0].at).getTime()).toBeGreaterThan(Date.now() - 60_000);
      await until(() => statuses.length === 1);
      expect(statuses[0]).toEqual({ name: i.name, status: 'frozen', previous: 'running' });

      // lxq itself: local, and the status events come from the operation.
      await i.unfreeze();
      await until(() => events.length === 2);
      expect(events[1]).toMatchObject({ action: 'instance-resumed', requestor: 'local' });
      expect(statuses.map((s) => s.status)).toEqual(['frozen', 'running']);

      // The lxc CLI against the same daemon.
      const env = { ...process.env, LXD_DIR: lxd.daemon.lxdDir, LXD_CONF: path.join(lxd.dir, 'lxc-conf') };
      mkdirSync(env.LXD_CONF, { recursive: true });
      await run('lxc', ['stop', '--force', i.name], { env, timeout: 60_000 });
      await until(() => events.length === 3);
      expect(events[2]).toMatchObject({ action: 'instance-stopped', requestor: 'external' });
      await until(() => statuses.at(-1)?.status === 'stopped');
      expect(await i.status()).toBe('stopped');
      await sleep(1000); // nothing arrives twice
      expect(events.map((e) => `${e.action} ${e.requestor}`)).toEqual(['instance-paused external', 'instance-resumed local', 'instance-stopped external']);
    } finally {
      host.off('lifecycle', listener);
    }
  });

  test('host.events(): the same events as an async iterator, ended by its signal', async () => {
    const ac = new AbortController();
    const it = host.events({ signal: ac.signal });
    await it.ready;
    const c = name();
    made.add(c);
    const seen: string[] = [];
    const reading = (async () => {
      for await (const e of it) if (e.name === c) seen.push(`${e.action} ${e.requestor}`);
    })();
    const i = await host.create(c, { image: ALIAS, profiles: [PROFILE] });
    await i.start();
    await until(() => seen.length === 2);
    ac.abort();
    await reading; // the iteration ends
    expect(seen).toEqual(['instance-created local', 'instance-started local']);
    await i.delete({ force: true });
    made.delete(c);
  });

  test('the events websocket survives a restart of the daemon (reconnect with back-off)', async () => {
    const events: LifecycleEvent[] = [];
    const listener = (e: LifecycleEvent) => events.push(e);
    host.on('lifecycle', listener);
    await host.ready();
    const reconnects = host.eventReconnects;
    try {
      await lxd.restart();
      await until(() => host.eventReconnects > reconnects, 30_000);
      const c = name();
      made.add(c);
      await client.call('POST', '/1.0/instances', { name: c, type: 'container', source: { type: 'image', alias: ALIAS }, profiles: [PROFILE] });
      await until(() => events.some((e) => e.name === c && e.action === 'instance-created'));
      expect(events.filter((e) => e.name === c)).toEqual([expect.objectContaining({ action: 'instance-created', type: 'container', requestor: 'external' })]);
      // And the host's own calls work again on the same client.
      expect(await (await host.get(c)).status()).toBe('stopped');
    } finally {
      host.off('lifecycle', listener);
    }
  });

  test('bad input: an unknown host event is refused; a stopped instance refuses exec with InvalidState', async () => {
    expect(() => host.on('nope' as 'lifecycle', () => undefined)).toThrow(InvalidArgument);
    const c = name();
    made.add(c);
    const i = await host.create(c, { image: ALIAS, profiles: [PROFILE] });
    await expect(i.exec(['true'])).rejects.toThrow(/cannot run a command in .*: it is stopped \(needs running\)/);
    await expect(i.stop({ timeout: -1 })).rejects.toThrow(InvalidArgument);
    await expect(i.freeze()).rejects.toThrow(InvalidState);
    await expect(i.files.read('relative')).rejects.toThrow(InvalidArgument);
    await i.delete();
    made.delete(c);
    await expect(i.status()).rejects.toThrow(NotFound);
  });
});
