/**
 * lxq's proxy process (LXD's forkproxy): one per running instance with proxy devices (or a
 * container's unix-hotplug devices, drivers/container/hotplug.ts), detached
 * from the Node program that started it (a session of its own), so its forwards outlive that
 * program. Started by lib/instance/proxies.ts with the devices as its argument: it takes the
 * instance's proxy lock (a second one exits), listens on the host side at once and says "ready"
 * (or "error …") on stdout, then reads "PID STARTTICKS" on stdin: the instance's long-lived
 * process (a container's monitor, a VM's QEMU). It ends when that process ends or at SIGTERM
 * (the instance's stop), so it never outlives the instance.
 *
 * A Node process rather than a native helper: it reuses the forwarding lxq already had and has
 * tested (tcp, unix, udp with a socket per peer) and the addon's namespace sockets, and a VM's
 * guest address is found as every lxq process finds it; a native one would be a second copy of
 * all of that. Its cost is Node's memory (~40 MiB) per instance with proxies, not per proxy. The
 * bytes of stream connections do not pass through Node: the addon splices them (native/splice.cc).
 */
import { ftruncateSync, openSync, promises as fsp, writeSync } from 'node:fs';
import * as path from 'node:path';

import type { DeviceConfig } from '../devices/declarations';
import { ContainerInit, containerConnector, containerListenFd, hostConnector, type Ids, removeContainerSocket, unixListenFd } from '../drivers/container/proxy-ways';
import { processStartedAt, processStartTicks } from '../core/proc';
import { HotplugServer } from '../drivers/container/hotplug';
import { leasedAddress } from '../instance/addresses';
import { Networks } from '../network/networks';
import { sys } from '../native/sys';
import { type Connector, type ListenFd, ProxyServer } from '../network/proxy';
import { RestartNeeded, serveControl } from '../network/proxy-control';
import { type Endpoint, parseProxy, type ProxySpec } from '../network/proxy-address';
import type { ProxyJob } from '../instance/proxies';

/** Which side of an instance a proxy process reaches, once it knows the instance's process. */
interface Sides {
  /** Connections for a proxy bound on the host (connect inside). */
  inside(spec: ProxySpec): Connector;
  /** A listener inside, for a proxy bound inside the instance. */
  listenInside(at: Endpoint, spec: ProxySpec): Promise<number>;
  /** Removes a unix socket path listenInside made (while the instance runs). */
  removeInside(path: string): Promise<void>;
}

/** Host-side listeners: a unix path through the addon (its mode and owner set as it is made), anything else by Node. */
function hostListenFd(at: Endpoint, spec: ProxySpec): ListenFd {
  if (at.proto !== 'unix' || at.abstract) return undefined;
  return async () => {
    if ((await fsp.lstat(at.path).catch(() => undefined))?.isSocket()) await fsp.unlink(at.path); // a killed listener's, as LXD's forkproxy removes it
    return unixListenFd(at.path, { uid: spec.owner.uid ?? 0, gid: spec.owner.gid ?? 0 }, spec.owner.mode);
  };
}

function containerSides(init: ContainerInit): Sides {
  return {
    inside: (spec) => containerConnector(init, { uid: spec.securityUid, gid: spec.securityGid }),
    listenInside: (at, spec) => containerListenFd(init, at, spec.owner),
    removeInside: (at) => removeContainerSocket(init, at),
  };
}

/**
 * A VM is reached over its network: "127.0.0.1" (or ::1, 0.0.0.0) is the guest's address, the
 * lease an lxq network gave the VM's NICs since its QEMU started (the proxy process never talks
 * to QEMU or the agent: those have one client, the instance's process).
 */
function vmSides(job: ProxyJob, qemu: number): Sides {
  const networks = new Networks(path.join(job.hostPath, 'networks'), async () => []);
  const started = processStartedAt(qemu);
  const guest = async (host: string): Promise<string> => {
    if (!['127.0.0.1', '::1', '0.0.0.0', '::'].includes(host)) return host;
    const family = host.includes(':') ? 'inet6' : 'inet';
    const since = await started;
    const deadline = Date.now() + 5_000;
    for (;;) {
      const leased = since ? await leasedAddress(job.nics ?? {}, networks, family, since) : undefined;
      if (leased) return leased;
      if (Date.now() > deadline) throw new Error(`${job.name} has no ${family} address leased yet`);
      await new Promise((r) => setTimeout(r, 250));
    }
  };
  return {
    inside: (spec) => {
      const ids: Ids = { uid: spec.securityUid, gid: spec.securityGid };
      const host = hostConnector(ids);
      return {
        stream: async (to) => host.stream(to.proto === 'tcp' ? { ...to, host: await guest(to.host) } : to),
        datagram: async (to) => host.datagram({ ...to, host: await guest(to.host) }),
      };
    },
    listenInside: () => Promise.reject(new Error('a VM has no listener inside')),
    removeInside: async () => undefined,
  };
}

/** The device's servers (one per listen port), not started; `bound` resolves to the instance's sides. */
function servers(name: string, d: DeviceConfig, job: ProxyJob, sides: Promise<Sides>): ProxyServer[] {
  const spec = parseProxy(`device "${name}"`, d as unknown as Record<string, string | undefined>, job.type === 'vm');
  if (spec.nat) return []; // nftables serves it (lib/network/proxy-nat.ts)
  return spec.pairs.map(({ listen, connect }) => {
    if (spec.bind === 'host') {
      const connector: Connector = {
        stream: async (to) => (await sides).inside(spec).stream(to),
        datagram: async (to) => (await sides).inside(spec).datagram(to),
      };
      return new ProxyServer(name, listen, connect, connector, { listenFd: hostListenFd(listen, spec), proxyProtocol: spec.proxyProtocol });
    }
    const connector = hostConnector({ uid: spec.securityUid, gid: spec.securityGid });
    return new ProxyServer(name, listen, connect, connector, { listenFd: async () => (await sides).listenInside(listen, spec), proxyProtocol: spec.proxyProtocol });
  });
}

/** The instance's process from the first line on stdin; null if the stream ends without one (the start failed). */
function boundLine(): Promise<string | null> {
  return new Promise((resolve) => {
    let text = '';
    const done = (v: string | null) => {
      process.stdin.removeAllListeners('data');
      process.stdin.destroy();
      resolve(v);
    };
    process.stdin.on('data', (b: Buffer) => {
      text += b.toString();
      if (text.includes('\n')) done(text.slice(0, text.indexOf('\n')));
    });
    process.stdin.once('end', () => done(null));
    process.stdin.once('error', () => done(null));
  });
}

async function main(): Promise<void> {
  const job = JSON.parse(process.argv[2]) as ProxyJob;
  const say = (line: string) => new Promise<void>((r) => process.stdout.write(`${line}\n`, () => r()));
  // A plain fd, held until the process ends (a FileHandle would be closed, and its lock let go, when collected).
  const lock = openSync(path.join(job.dir, 'proxy.lock'), 'a+', 0o600);
  if (!sys().flock(lock, 'ex')) return say('held');
  ftruncateSync(lock);
  writeSync(lock, `${process.pid} ${await processStartTicks(process.pid)}\n`);
  let setSides!: (s: Sides) => void;
  const sides = new Promise<Sides>((r) => (setSides = r));
  const host: ProxyServer[] = [];
  const inside: ProxyServer[] = [];
  const all = () => [...host, ...inside];
  let hotplugServer: HotplugServer | undefined;
  let bound: Sides | undefined = undefined; // once bound to the instance
  const end = async (code: number) => {
    hotplugServer?.stop(); // the nodes it made stay for the next process to put in line (a restart for a change must find them)
    await Promise.all(all().map((s) => s.close().catch(() => undefined)));
    for (const [, d] of Object.entries(job.devices)) await removeHostSocket(d);
    // Sockets made inside go while the instance still runs (its stop ends this process first); after a stop from inside, the next listener replaces them.
    for (const p of bound ? insideSockets(job.devices) : []) await bound!.removeInside(p).catch(() => undefined);
    process.exit(code);
  };
  process.on('SIGTERM', () => void end(0));
  process.on('SIGINT', () => void end(0));
  process.on('SIGHUP', () => undefined); // the session it was started from may end
  try {
    for (const [name, d] of Object.entries(job.devices)) {
      if (d.type !== 'proxy') continue;
      const made = servers(name, d, job, sides);
      for (const s of made) ((d.bind ?? 'host') === 'host' ? host : inside).push(s);
    }
    for (const s of host) await s.start();
  } catch (e) {
    await say(`error ${JSON.stringify({ message: (e as Error).message, name: (e as Error).name })}`);
    return end(1);
  }
  await say('ready');
  const line = await boundLine();
  const [pid, ticks] = (line ?? '').split(' ').map(Number);
  if (!pid || (await processStartTicks(pid)) !== ticks) return end(0);
  sys().watchPid(pid, () => void end(0));
  const init = job.type === 'container' ? new ContainerInit(pid) : undefined;
  bound = init ? containerSides(init) : vmSides(job, pid);
  setSides(bound);
  for (const s of inside) {
    await s.start().catch((e: Error) => process.stderr.write(`proxy ${s.name}: ${e.message}\n`));
  }
  const hotplug = Object.fromEntries(Object.entries(job.devices).filter(([, d]) => d.type === 'unix-hotplug'));
  if (init && Object.keys(hotplug).length) {
    hotplugServer = new HotplugServer(job.dir, hotplug, init, (l) => process.stderr.write(`${l}\n`));
    hotplugServer.start();
  }
  // Live changes, one device's listeners at a time; the process is then kept alive by its control socket too.
  await serveControl<Record<string, DeviceConfig>>(path.join(job.dir, 'proxy.sock'), (devices) => changeLive({ job, host, inside, sides, bound: bound! }, devices)).catch(() => undefined);
}

interface Running {
  job: ProxyJob;
  host: ProxyServer[];
  inside: ProxyServer[];
  sides: Promise<Sides>;
  bound: Sides;
}

/**
 * A live change of the served devices: the listeners of the devices that changed are closed (their
 * sockets removed) and the new ones opened; the others' listeners and connections are left alone.
 * A new listener that fails (an address in use) refuses the change, with the old ones put back.
 * unix-hotplug devices are not changed here (RestartNeeded: the caller restarts the process).
 */
async function changeLive(r: Running, next: Record<string, DeviceConfig>): Promise<void> {
  const before = r.job.devices;
  const names = [...new Set([...Object.keys(before), ...Object.keys(next)])].filter((n) => JSON.stringify(before[n]) !== JSON.stringify(next[n]));
  if (names.some((n) => (before[n] ?? next[n]).type !== 'proxy')) throw new RestartNeeded();
  const swap = async (from: Record<string, DeviceConfig>, to: Record<string, DeviceConfig>) => {
    for (const list of [r.host, r.inside]) {
      const going = list.filter((s) => names.includes(s.name));
      await Promise.all(going.map((s) => s.close()));
      list.splice(0, list.length, ...list.filter((s) => !going.includes(s)));
    }
    for (const n of names.filter((n) => from[n])) {
      await removeHostSocket(from[n]);
      for (const p of insideSockets({ [n]: from[n] })) await r.bound.removeInside(p).catch(() => undefined);
    }
    for (const n of names.filter((n) => to[n])) {
      for (const s of servers(n, to[n], r.job, r.sides)) {
        ((to[n].bind ?? 'host') === 'host' ? r.host : r.inside).push(s);
        await s.start();
      }
    }
  };
  try {
    await swap(before, next);
    r.job.devices = next;
  } catch (e) {
    await swap(next, before).catch(() => undefined);
    throw e;
  }
}

/** The unix socket paths of listeners made inside the instance. */
function insideSockets(devices: Record<string, DeviceConfig>): string[] {
  return Object.values(devices)
    .map((d) => d as { bind?: string; listen?: string })
    .filter((d) => d.bind !== undefined && d.bind !== 'host' && d.listen?.startsWith('unix:/'))
    .map((d) => d.listen!.slice(5));
}

/** A host-side unix listener's path (made from an fd, so libuv does not unlink it at close). */
async function removeHostSocket(d: DeviceConfig): Promise<void> {
  const listen = (d as { listen?: string }).listen;
  if ((d as { bind?: string }).bind === 'instance' || !listen?.startsWith('unix:/')) return;
  const p = listen.slice(5);
  if ((await fsp.lstat(p).catch(() => undefined))?.isSocket()) await fsp.unlink(p).catch(() => undefined);
}

if (require.main === module) {
  main().catch((e) => {
    process.stderr.write(`lxq proxy: ${(e as Error).stack}\n`);
    process.exit(1);
  });
}
