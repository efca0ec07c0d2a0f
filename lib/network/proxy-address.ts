/**
 * A proxy device's addresses and keys as LXD has them (lxd/network ProxyParseAddr, lxd/device
 * proxy.go validateConfig): `tcp:<address>:<ports>`, `udp:<address>:<ports>` (ports "80",
 * "8000-8010" or a list of both) and `unix:<path>` or `unix:@<abstract name>`; checked before
 * anything listens, each error naming the device and the key.
 */
import { InvalidArgument } from '../core/errors';
import { parseIpv4 } from './addresses';

export type InetEndpoint = { proto: 'tcp' | 'udp'; host: string; port: number };
/** `abstract`: a name in the abstract namespace (LXD's `unix:@name`), scoped by network namespace. */
export type UnixEndpoint = { proto: 'unix'; path: string; abstract?: boolean };
export type Endpoint = InetEndpoint | UnixEndpoint;
/** Where a stream (tcp or unix) connection goes. */
export type StreamEndpoint = (InetEndpoint & { proto: 'tcp' }) | UnixEndpoint;
/** Where a udp proxy's datagrams go. */
export type DatagramEndpoint = InetEndpoint & { proto: 'udp' };

/** An address with all its ports (a unix one has none). */
type Address = { proto: 'tcp' | 'udp'; host: string; ports: number[] } | UnixEndpoint;

/** At most this many ports per address: each is a listener of the proxy's process. */
const MAX_PORTS = 1024;

/** A proxy device's keys, as parsed (LXD's names in the comments). */
export interface ProxySpec {
  /** One listener per pair (a port range gives several). */
  pairs: Array<{ listen: Endpoint; connect: Endpoint }>;
  /** `bind`: which side listens. */
  bind: 'host' | 'instance';
  nat: boolean;
  /** `proxy_protocol`: a PROXY (v1) line before the client's bytes, as LXD's forkproxy sends. */
  proxyProtocol: boolean;
  /** `security.uid` / `security.gid`: whom the connecting side acts as (ids on the connecting side). */
  securityUid?: number;
  securityGid?: number;
  /** `uid`, `gid`, `mode` of a listening unix socket (ids on the listening side). */
  owner: { uid?: number; gid?: number; mode?: number };
}

function parseAddress(key: string, text: string): Address {
  const bad = (why: string) => new InvalidArgument(`bad value for "${key}": ${why}`);
  if (text.startsWith('unix:')) {
    const p = text.slice(5);
    if (p.includes('\0')) throw bad('a unix socket path cannot hold a NUL byte');
    if (p.startsWith('@')) {
      if (p.length < 2 || p.length > 107) throw bad(`an abstract unix socket name is 1 to 106 bytes, got ${JSON.stringify(p)}`);
      return { proto: 'unix', path: p.slice(1), abstract: true };
    }
    if (!p.startsWith('/')) throw bad(`a unix socket path must be absolute (or @name for an abstract one), got ${JSON.stringify(p)}`);
    if (Buffer.byteLength(p) > 107) throw bad(`a unix socket path is at most 107 bytes, got ${Buffer.byteLength(p)}`);
    return { proto: 'unix', path: p };
  }
  const m = /^(tcp|udp):(\[[0-9a-fA-F:.]+\]|[\d.]+|localhost):([\d,-]+)$/.exec(text);
  if (!m) throw bad(`expected "tcp:<address>:<port>", "udp:<address>:<port>" (ports: 80, 8000-8010 or a list of both) or "unix:<path>", got ${JSON.stringify(text)}`);
  const host = m[2] === 'localhost' ? '127.0.0.1' : m[2].replace(/^\[|\]$/g, '');
  if (!host.includes(':')) {
    try {
      parseIpv4(host);
    } catch (e) {
      throw bad((e as Error).message);
    }
  }
  const ports: number[] = [];
  for (const part of m[3].split(',')) {
    const r = /^(\d{1,5})(?:-(\d{1,5}))?$/.exec(part);
    const first = r ? Number(r[1]) : NaN;
    const last = r?.[2] !== undefined ? Number(r[2]) : first;
    if (!r || first < 1 || last > 65535 || last < first) throw bad(`bad port or port range ${JSON.stringify(part)} (1-65535, "first-last")`);
    for (let p = first; p <= last; p++) ports.push(p);
    if (ports.length > MAX_PORTS) throw bad(`more than ${MAX_PORTS} ports`);
  }
  return { proto: m[1] as 'tcp' | 'udp', host, ports };
}

/** LXD's endpoint form, one port: what a key naming a single endpoint takes. */
export function parseEndpoint(key: string, text: string): Endpoint {
  const a = parseAddress(key, text);
  if (a.proto === 'unix') return a;
  if (a.ports.length !== 1) throw new InvalidArgument(`bad value for "${key}": one port expected, got ${a.ports.length}`);
  return { proto: a.proto, host: a.host, port: a.ports[0] };
}

const TRUE = ['true', '1', 'yes', 'on'];
const FALSE = ['false', '0', 'no', 'off', ''];

function flag(where: string, key: string, v: string | undefined): boolean {
  if (v === undefined || FALSE.includes(v)) return false;
  if (TRUE.includes(v)) return true;
  throw new InvalidArgument(`${where}: "${key}" must be true or false, got ${JSON.stringify(v)}`);
}

function id(where: string, key: string, v: string | undefined): number | undefined {
  if (v === undefined || v === '') return undefined;
  if (!/^\d{1,10}$/.test(v) || Number(v) > 0xfffffffe) throw new InvalidArgument(`${where}: "${key}" must be a user or group id (0-4294967294), got ${JSON.stringify(v)}`);
  return Number(v);
}

/**
 * A proxy device's keys checked and parsed, with LXD's rules: udp to udp only, as many connect
 * ports as listen ports or one, the PROXY line to tcp only and not in nat mode, uid/gid/mode for
 * a listening unix path only, nat only host-bound between two ip addresses of one family.
 * `vm`: a VM's proxy listens on the host and connects to the guest over its network.
 */
export function parseProxy(where: string, d: Record<string, string | undefined>, vm: boolean): ProxySpec {
  if (d.listen === undefined || d.listen === '') throw new InvalidArgument(`${where}: "listen" is required: where the proxy listens, e.g. "tcp:127.0.0.1:8080"`);
  if (d.connect === undefined || d.connect === '') throw new InvalidArgument(`${where}: "connect" is required: where it connects, e.g. "tcp:127.0.0.1:80"`);
  const listen = parseAddress(`${where}: listen`, d.listen);
  const connect = parseAddress(`${where}: connect`, d.connect);
  const bind = d.bind ?? 'host';
  if (!['host', 'instance', 'guest', 'container'].includes(bind)) throw new InvalidArgument(`${where}: "bind" must be "host" or "instance", got ${JSON.stringify(bind)}`);
  const spec: ProxySpec = {
    pairs: [],
    bind: bind === 'host' ? 'host' : 'instance',
    nat: flag(where, 'nat', d.nat),
    proxyProtocol: flag(where, 'proxy_protocol', d.proxy_protocol),
    securityUid: id(where, 'security.uid', d['security.uid']),
    securityGid: id(where, 'security.gid', d['security.gid']),
    owner: { uid: id(where, 'uid', d.uid), gid: id(where, 'gid', d.gid) },
  };
  if (d.mode !== undefined && d.mode !== '') {
    if (!/^0?[0-7]{3,4}$/.test(d.mode)) throw new InvalidArgument(`${where}: "mode" must be an octal file mode such as 0660, got ${JSON.stringify(d.mode)}`);
    spec.owner.mode = parseInt(d.mode, 8);
  }
  checkRules(where, d, listen, connect, spec, vm);
  spec.pairs = pairs(where, listen, connect);
  return spec;
}

function checkRules(where: string, d: Record<string, string | undefined>, listen: Address, connect: Address, spec: ProxySpec, vm: boolean): void {
  if ((listen.proto === 'udp') !== (connect.proto === 'udp')) {
    throw new InvalidArgument(`${where}: "listen" is ${listen.proto} and "connect" is ${connect.proto}: udp is forwarded to udp only`);
  }
  if (spec.proxyProtocol && (connect.proto !== 'tcp' || spec.nat)) throw new InvalidArgument(`${where}: "proxy_protocol": the PROXY header can only be sent to tcp servers in non-nat mode`);
  const ownerKeys = (['uid', 'gid', 'mode'] as const).filter((k) => d[k] !== undefined && d[k] !== '');
  if (ownerKeys.length && (listen.proto !== 'unix' || listen.abstract)) {
    throw new InvalidArgument(`${where}: "${ownerKeys[0]}": only a proxy listening on a unix socket path (not an abstract one) has uid, gid or mode`);
  }
  if (vm && !spec.nat && spec.bind !== 'host') throw new InvalidArgument(`${where}: "bind": a VM's proxy listens on the host ("bind: host"); lxq has no listener inside a VM`);
  if (vm && !spec.nat && connect.proto === 'unix') throw new InvalidArgument(`${where}: "connect": a VM's proxy connects over its network; a unix socket inside a VM cannot be reached`);
  if (!spec.nat) return;
  if (spec.bind !== 'host') throw new InvalidArgument(`${where}: "nat": only host-bound proxies can use NAT`);
  if (listen.proto === 'unix' || connect.proto === 'unix' || listen.proto !== connect.proto) throw new InvalidArgument(`${where}: "nat": proxying ${listen.proto} <-> ${connect.proto} is not supported when using NAT`);
  if (listen.host === '0.0.0.0' || listen.host === '::') throw new InvalidArgument(`${where}: "listen": cannot listen on the wildcard address ${listen.host} in nat mode`);
  if (listen.host.includes(':') !== connect.host.includes(':')) throw new InvalidArgument(`${where}: "nat": cannot mix IP versions between listen and connect`);
  if (spec.securityUid !== undefined || spec.securityGid !== undefined) throw new InvalidArgument(`${where}: "security.uid"/"security.gid" have no meaning in nat mode (no process connects)`);
}

/** Each listen endpoint with its connect endpoint: port i to port i, or every port to the one connect port (LXD's forkproxy). */
function pairs(where: string, listen: Address, connect: Address): Array<{ listen: Endpoint; connect: Endpoint }> {
  const lPorts = listen.proto === 'unix' ? [0] : listen.ports;
  const cPorts = connect.proto === 'unix' ? [0] : connect.ports;
  if (cPorts.length > 1 && cPorts.length !== lPorts.length) {
    throw new InvalidArgument(`${where}: "connect" has ${cPorts.length} ports and "listen" ${lPorts.length}: give as many as listen, or one`);
  }
  const at = (a: Address, port: number): Endpoint => (a.proto === 'unix' ? a : { proto: a.proto, host: a.host, port });
  return lPorts.map((p, i) => ({ listen: at(listen, p), connect: at(connect, cPorts.length > 1 ? cPorts[i] : cPorts[0]) }));
}

/** The PROXY protocol (v1) line LXD's forkproxy writes before a client's bytes: its source and the address it reached. */
export function proxyLine(client: { remoteAddress?: string; remotePort?: number; localAddress?: string; localPort?: number }): string {
  const { remoteAddress: src, remotePort: sport, localAddress: dst, localPort: dport } = client;
  if (!src || !dst || sport === undefined || dport === undefined) return 'PROXY UNKNOWN\r\n';
  const plain = (a: string) => a.replace(/^::ffff:(?=\d+\.)/, '');
  const s = plain(src);
  return `PROXY TCP${s.includes(':') ? 6 : 4} ${s} ${plain(dst)} ${sport} ${dport}\r\n`;
}
