/**
 * Proxy devices served by lxq's proxy process (detached, one per running instance): it outlives
 * the Node process that started the container, ends with the container's stop, is started again
 * by any lxq process that finds it gone; `bind: instance` reaches a host loopback server from
 * inside; unix sockets with their mode and owner, port lists, the PROXY line, security.uid; and
 * the keys' checks. Traffic goes to the loopback only (the host's and the container's own).
 */
import { execFileSync } from 'node:child_process';
import { statSync } from 'node:fs';
import * as http from 'node:http';
import * as net from 'node:net';
import * as path from 'node:path';

import { Host, type Instance, InvalidArgument, NotFound } from '../lib';
import { runNode, sh, SHARED_IMAGES, tempHost, type TestHost } from './helpers/host';

jest.setTimeout(240_000);

let t: TestHost;
beforeAll(async () => {
  t = await tempHost();
});
afterAll(async () => {
  await t.dispose();
});

const freePort = () =>
  new Promise<number>((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => resolve(port));
    });
  });
/** An HTTP GET over a fresh connection (no agent: nothing stays open), on a port or a unix socket. */
const get = (where: { port: number } | { socketPath: string }) =>
  new Promise<string>((resolve, reject) => {
    const options = 'port' in where ? { host: '127.0.0.1', port: where.port } : { socketPath: where.socketPath };
    http.get({ ...options, path: '/', agent: false, timeout: 10_000 }, (res) => {
      let body = '';
      res.on('data', (d) => (body += d));
      res.on('end', () => resolve(body));
    }).on('error', reject);
  });
/** The proxy process of an instance (its pid, from the lock it writes), or null if none runs. */
const proxyPid = (i: Instance): number | null => {
  const dir = (i as unknown as { dir: string }).dir;
  try {
    const [pid] = execFileSync('cat', [path.join(dir, 'proxy.lock')]).toString().trim().split(' ').map(Number);
    return pid > 0 && execFileSync('ps', ['-o', 'args=', '-p', String(pid)], { stdio: ['ignore', 'pipe', 'ignore'] }).toString().includes('proxy-process') ? pid : null;
  } catch {
    return null;
  }
};
async function until(what: string, check: () => Promise<boolean> | boolean, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
const refused = (p: Promise<unknown>) => p.then(() => 'answered', (e: NodeJS.ErrnoException) => e.code ?? e.message);

test('a container started by a Node process that has exited: its proxies keep serving (tcp, unix, abstract unix, a port list), end with its stop, come back when killed', async () => {
  const [port, a, b, count] = [await freePort(), await freePort(), await freePort(), await freePort()];
  const sock = path.join(t.dir, 'web.sock');
  const name = t.name('pxc');
  const script = `
    const lxq = require(${JSON.stringify(path.join(__dirname, '..', 'lib'))});
    (async () => {
      const host = await lxq.Host.open({ path: ${JSON.stringify(t.dir)}, images: ${JSON.stringify(SHARED_IMAGES)} });
      const c = await host.create(${JSON.stringify(name)}, { image: 'busybox', devices: {
        web: { type: 'proxy', listen: 'tcp:127.0.0.1:${port}', connect: 'tcp:127.0.0.1:80' },
        sock: { type: 'proxy', listen: 'unix:${sock}', connect: 'tcp:127.0.0.1:80', mode: '0660', gid: '${process.getgid!()}' },
        list: { type: 'proxy', listen: 'tcp:127.0.0.1:${a},${b}', connect: 'tcp:127.0.0.1:80' },
        abs: { type: 'proxy', listen: 'unix:@lxq-${name}', connect: 'tcp:127.0.0.1:80' },
        count: { type: 'proxy', listen: 'tcp:127.0.0.1:${count}', connect: 'tcp:127.0.0.1:81' },
      } });
      await c.start();
      const r = await c.exec(['sh', '-c', 'mkdir -p /www && echo "inside $(hostname)" > /www/index.html && httpd -p 127.0.0.1:80 -h /www && (nc -ll -p 81 -e wc -c </dev/null >/dev/null 2>&1 &) && until netstat -ltn | grep -q :81; do sleep 0.1; done && echo up']);
      process.stdout.write(r.stdout.toString());
    })().catch((e) => { console.error(e); process.exit(1); });`;
  const child = await runNode(['-r', path.join(__dirname, 'helpers', 'ts-register.js'), '-e', script]);
  expect(child.stderr).toBe('');
  expect(child.stdout).toBe('up\n');
  const c = await t.host.get(name);
  try {
    // The process that started it has exited; the proxy process serves on.
    const pid = proxyPid(c);
    expect(pid).not.toBeNull();
    expect(await get({ port })).toBe(`inside ${name}\n`);
    expect(await get({ socketPath: sock })).toBe(`inside ${name}\n`);
    expect(await get({ port: a })).toBe(`inside ${name}\n`);
    expect(await get({ port: b })).toBe(`inside ${name}\n`);
    expect(await get({ socketPath: `\0lxq-${name}` })).toBe(`inside ${name}\n`); // the host's abstract namespace
    expect(statSync(sock).mode & 0o777).toBe(0o660);
    // Killed: any lxq process that opens the instance starts it again.
    process.kill(pid!, 'SIGKILL');
    await until('the killed proxy process to be gone', () => proxyPid(c) === null);
    expect(await refused(get({ port }))).toBe('ECONNREFUSED');
    const other = await Host.open({ path: t.dir, images: SHARED_IMAGES });
    await other.get(name);
    expect(proxyPid(c)).not.toBeNull();
    expect(await get({ port })).toBe(`inside ${name}\n`);
    // A live change opens and closes only its own device's listeners: the same process serves on,
    // and a connection through another proxy, open across the changes, still gets its answer. Its
    // server inside (wc -c) answers only after the client's FIN: the proxy keeps each direction
    // open until its own side ends (half-close), as a TCP connection would.
    const serving = proxyPid(c);
    const held = net.connect(count, '127.0.0.1');
    await new Promise((r) => held.once('connect', r));
    const more = await freePort();
    await c.addDevice('more', { type: 'proxy', listen: `tcp:127.0.0.1:${more}`, connect: 'tcp:127.0.0.1:80' });
    expect(await get({ port: more })).toBe(`inside ${name}\n`);
    const holder = net.createServer().listen(0, '127.0.0.1');
    await new Promise((r) => holder.once('listening', r));
    const taken = (holder.address() as net.AddressInfo).port;
    await expect(c.addDevice('taken', { type: 'proxy', listen: `tcp:127.0.0.1:${taken}`, connect: 'tcp:127.0.0.1:80' })).rejects.toThrow(/"listen" tcp:127.0.0.1:\d+ is already in use/);
    await new Promise((r) => holder.close(r));
    await c.removeDevice('more');
    expect(await refused(get({ port: more }))).toBe('ECONNREFUSED');
    expect(proxyPid(c)).toBe(serving);
    const answer = new Promise<string>((resolve) => {
      let text = '';
      held.on('data', (d) => (text += d));
      held.on('close', () => resolve(text));
    });
    held.end('0123456789');
    expect(await answer).toBe('10\n');
    expect(await get({ port })).toBe(`inside ${name}\n`);
    // Ended with the stop: nothing listens, the socket is gone, no process is left.
    await c.stop({ force: true });
    expect(proxyPid(c)).toBeNull();
    expect(await refused(get({ port }))).toBe('ECONNREFUSED');
    expect(await refused(get({ socketPath: sock }))).toBe('ENOENT');
    expect(await refused(get({ socketPath: `\0lxq-${name}` }))).toBe('ECONNREFUSED');
  } finally {
    await c.delete({ force: true });
  }
});

test('bind: instance: a server on the host\'s loopback reached from inside (tcp and a unix socket made inside), with the PROXY line and security.uid', async () => {
  const lines: string[] = [];
  const server = http.createServer((req, res) => res.end(`host ${req.url}\n`));
  // A raw server that keeps each connection's first bytes (the PROXY line) and answers as HTTP.
  const raw = net.createServer((s) => s.once('data', (d) => (lines.push(d.toString().split('\r\n')[0]), s.end('HTTP/1.0 200 OK\r\n\r\nraw\n'))));
  const hostSock = path.join(t.dir, 'root-only.sock');
  const secret = http.createServer((_req, res) => res.end('secret\n'));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  await new Promise<void>((r) => raw.listen(0, '127.0.0.1', r));
  await new Promise<void>((r) => secret.listen(hostSock, r));
  execFileSync('chmod', ['0600', hostSock]);
  const [hp, rp] = [(server.address() as net.AddressInfo).port, (raw.address() as net.AddressInfo).port];
  const c = await t.host.create(t.name('pxi'), {
    image: 'busybox',
    devices: {
      up: { type: 'proxy', bind: 'instance', listen: 'tcp:127.0.0.1:8080', connect: `tcp:127.0.0.1:${hp}` },
      sock: { type: 'proxy', bind: 'instance', listen: 'unix:/host.sock', connect: `tcp:127.0.0.1:${hp}`, uid: '1000', mode: '0600' },
      pp: { type: 'proxy', bind: 'instance', listen: 'tcp:127.0.0.1:8081', connect: `tcp:127.0.0.1:${rp}`, proxy_protocol: 'true' },
      asroot: { type: 'proxy', bind: 'instance', listen: 'tcp:127.0.0.1:8082', connect: `unix:${hostSock}` },
      asuser: { type: 'proxy', bind: 'instance', listen: 'tcp:127.0.0.1:8083', connect: `unix:${hostSock}`, 'security.uid': '1000', 'security.gid': '1000' },
    },
  });
  try {
    await c.start();
    await until('the listeners inside', async () => (await sh(c, 'netstat -ltn | grep -c ":808[0-3] "')).out.trim() === '4');
    expect((await sh(c, 'wget -qO- http://127.0.0.1:8080/x')).out).toBe('host /x\n');
    // Made inside, owned by uid 1000 inside (a high id on the host: the container is unprivileged), mode 0600.
    expect((await sh(c, 'stat -c "%u %g %a %F" /host.sock')).out).toBe('1000 0 600 socket\n');
    expect((await sh(c, 'wget -qO- http://127.0.0.1:8081/')).out).toBe('raw\n');
    expect(lines[0]).toMatch(/^PROXY TCP4 127\.0\.0\.1 127\.0\.0\.1 \d+ 8081$/);
    // A root-only socket of the host: the proxy's connection as root reaches it, as uid 1000 it is refused.
    expect((await sh(c, 'wget -qO- http://127.0.0.1:8082/')).out).toBe('secret\n');
    expect((await sh(c, 'wget -qO- http://127.0.0.1:8083/')).code).not.toBe(0);
    // The socket made inside (on the container's root filesystem) goes with the stop.
    await c.stop({ force: true });
    await expect(c.files.stat('/host.sock')).rejects.toThrow(NotFound);
  } finally {
    await c.delete({ force: true });
    await Promise.all([server, raw, secret].map((s) => new Promise((r) => s.close(r))));
  }
});

test('the keys are checked before anything is made: an InvalidArgument naming the device and the key', async () => {
  const before = (await t.host.list()).length;
  const bad: Array<[Record<string, string>, RegExp]> = [
    [{ listen: 'tcp:127.0.0.1:80', connect: 'tcp:127.0.0.1:80', bind: 'sideways' }, /device "p": bad value for "bind": expected one of "host", "instance"/],
    [{ listen: 'udp:127.0.0.1:53', connect: 'udp:127.0.0.1:53', proxy_protocol: 'true' }, /"proxy_protocol": the PROXY header can only be sent to tcp servers/],
    [{ listen: 'tcp:127.0.0.1:80', connect: 'tcp:127.0.0.1:80', mode: '0600' }, /"mode": only a proxy listening on a unix socket path/],
    [{ listen: 'unix:@abs', connect: 'tcp:127.0.0.1:80', uid: '5' }, /"uid": only a proxy listening on a unix socket path \(not an abstract one\)/],
    [{ listen: 'tcp:127.0.0.1:80-82', connect: 'tcp:127.0.0.1:80,81' }, /"connect" has 2 ports and "listen" 3/],
    [{ listen: 'tcp:127.0.0.1:90-80', connect: 'tcp:127.0.0.1:80' }, /bad port or port range "90-80"/],
    [{ listen: 'unix:relative.sock', connect: 'tcp:127.0.0.1:80' }, /a unix socket path must be absolute/],
    [{ listen: 'tcp:127.0.0.1:80', connect: 'tcp:127.0.0.1:80', nat: 'maybe' }, /device "p": bad value for "nat"/],
    [{ listen: 'unix:/run/x.sock', connect: 'tcp:127.0.0.1:80', nat: 'true' }, /"nat": proxying unix <-> tcp is not supported when using NAT/],
    [{ listen: 'tcp:127.0.0.1:80', connect: 'tcp:127.0.0.1:80', 'security.uid': 'root' }, /device "p": bad value for "security.uid"/],
  ];
  for (const [device, why] of bad) {
    const made = t.host.create(t.name('pxbad'), { image: 'busybox', devices: { p: { type: 'proxy', ...device } as never } });
    await expect(made).rejects.toThrow(InvalidArgument);
    await expect(made).rejects.toThrow(why);
  }
  await expect(t.host.create(t.name('pxbad'), { type: 'vm', image: 'vm/default', devices: { p: { type: 'proxy', listen: 'tcp:127.0.0.1:80', connect: 'tcp:127.0.0.1:80', bind: 'instance' } } })).rejects.toThrow(
    /"bind": a VM's proxy listens on the host/,
  );
  // nat from a loopback address: the kernel would drop it (test/proxy-nat has the rest of nat).
  await expect(t.host.create(t.name('pxbad'), { image: 'busybox', devices: { p: { type: 'proxy', listen: 'tcp:127.0.0.1:80', connect: 'tcp:127.0.0.1:80', nat: true } } })).rejects.toThrow(
    /"listen": 127.0.0.1 is a loopback address, which nat mode cannot forward/,
  );
  expect((await t.host.list()).length).toBe(before);
});
