/**
 * One dnsmasq per network (Debian's dnsmasq-base), bound to its bridge only, serving DHCP and
 * DNS for `<instance>.<domain>`. It runs detached (it outlives Node, as QEMU does) and is found
 * again by its pid file in the network's directory:
 *
 *   <host>/networks/<name>/
 *     dnsmasq.pid     its pid file (checked against /proc/<pid>/cmdline: no pid reuse)
 *     dnsmasq.hosts   `mac,[ip,]name` per NIC on the network (dhcp-hostsfile: static leases and
 *                     names), written by lxq, re-read on SIGHUP
 *     dnsmasq.leases  the leases dnsmasq handed out
 *     dnsmasq.log     what it logged
 */
import { execFile, spawn } from 'node:child_process';
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { promisify } from 'node:util';

import { InvalidArgument, OperationFailed } from '../core/errors';
import { writeFileAtomic } from '../core/fs';
import { refuseControlChars, refuseInField } from '../core/guard';
import { formatIpv4, netmask, parseCidr } from './addresses';

export const DNSMASQ = 'dnsmasq';
/** How long a lease lasts: a lease's grant time is its expiry less this. */
export const LEASE_SECONDS = 3600;
const FILES = { pid: 'dnsmasq.pid', hosts: 'dnsmasq.hosts', leases: 'dnsmasq.leases', log: 'dnsmasq.log' } as const;

export interface DnsmasqSettings {
  dir: string;
  bridge: string;
  cidr: string;
  /** The bridge's IPv6 address and /64, where the network has IPv6: router advertisements for SLAAC. */
  cidr6?: string;
  dhcp: boolean;
  /** "a-b" ranges; empty for the whole subnet but the bridge's address. */
  ranges: string[];
  domain: string;
}

/**
 * A DHCP lease of an lxq network, as its dnsmasq handed it out.
 *
 * @example
 * ```ts
 * for (const l of await (await host.networks.get('lxqbr0')).leases()) console.log(l.hostname, l.address, l.expiresAt);
 * ```
 */
export interface Lease {
  hwaddr: string;
  address: string;
  hostname: string | null;
  expiresAt: Date;
  /** When it was granted or last renewed. */
  grantedAt: Date;
}

export const dnsmasqFile = (dir: string, which: keyof typeof FILES) => path.join(dir, FILES[which]);

/** The pid of the network's running dnsmasq, or null. */
export async function dnsmasqPid(dir: string): Promise<number | null> {
  const pidfile = dnsmasqFile(dir, 'pid');
  const pid = Number((await fs.readFile(pidfile, 'utf8').catch(() => '')).trim());
  if (!Number.isInteger(pid) || pid <= 0) return null;
  const argv = await fs.readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
  return argv.split('\0').includes(`--pid-file=${pidfile}`) ? pid : null;
}

/**
 * dnsmasq's command line (its whole configuration: no file is read). Each value is checked here:
 * no control character anywhere, no "," inside a field of a comma-separated option, no "/" in
 * the domain of `--local=/<domain>/`.
 */
export function dnsmasqArgs(s: DnsmasqSettings): string[] {
  const where = (key: string) => `dnsmasq's configuration for ${JSON.stringify(s.bridge)}: ${key}`;
  if (/[,/\s]/.test(refuseControlChars(where('domain'), s.domain))) throw new InvalidArgument(`${where('domain')}: ${JSON.stringify(s.domain)} is not a domain name`);
  for (const r of s.ranges) refuseInField(where('DHCP range'), r);
  const a = args(s);
  for (const arg of a) refuseControlChars(where('command line'), arg);
  return a;
}

function args(s: DnsmasqSettings): string[] {
  const c = parseCidr(s.cidr);
  const a = [
    '--conf-file=/dev/null', // none of the host's dnsmasq settings
    `--pid-file=${dnsmasqFile(s.dir, 'pid')}`,
    `--log-facility=${dnsmasqFile(s.dir, 'log')}`,
    '--bind-interfaces',
    `--interface=${s.bridge}`,
    '--except-interface=lo',
    `--listen-address=${formatIpv4(c.address)}`,
    '--strict-order',
    `--domain=${s.domain}`,
    `--local=/${s.domain}/`, // names under the domain are never forwarded
    '--expand-hosts',
    '--domain-needed',
    '--bogus-priv',
  ];
  if (s.dhcp) {
    const ranges = s.ranges.length ? s.ranges : [`${formatIpv4(c.network + (c.address === c.network + 1 ? 2 : 1))}-${formatIpv4(c.broadcast - 1)}`];
    for (const r of ranges) {
      const [from, to] = r.split('-');
      a.push(`--dhcp-range=${from.trim()},${to.trim()},${netmask(c.prefix)},${LEASE_SECONDS}`);
    }
    // --no-ping: no ICMP probe of an address before it is offered (it holds every new lease ~3 s).
    a.push('--dhcp-authoritative', '--dhcp-no-override', '--no-ping', `--dhcp-hostsfile=${dnsmasqFile(s.dir, 'hosts')}`);
  }
  if (s.cidr6) {
    // Router advertisements of the bridge's /64 (SLAAC, with the DNS server in them) and stateless
    // DHCPv6 for the clients that ask it for DNS. ra-names: the AAAA record of a DHCPv4 client's
    // name is its SLAAC address, once that answers a ping. (Names in an addn-hosts file would
    // instead take the dhcp-host entries' names away from their IPv4 leases.)
    a.push(`--listen-address=${s.cidr6.split('/')[0]}`, '--enable-ra', `--dhcp-range=::,constructor:${s.bridge},ra-stateless,ra-names,64,${LEASE_SECONDS}`);
  }
  // Always its own lease file: dnsmasq would otherwise write the host's (/var/lib/misc).
  if (s.dhcp || s.cidr6) a.push(`--dhcp-leasefile=${dnsmasqFile(s.dir, 'leases')}`);
  return a;
}

/** Starts the network's dnsmasq (it daemonizes); resolves once its pid file names it. */
export async function startDnsmasq(s: DnsmasqSettings): Promise<number> {
  await fs.writeFile(dnsmasqFile(s.dir, 'hosts'), '', { flag: 'a' });
  await fs.writeFile(dnsmasqFile(s.dir, 'leases'), '', { flag: 'a' });
  const child = spawn(DNSMASQ, dnsmasqArgs(s), { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d) => (stderr += d));
  const code = await new Promise<number | null>((resolve) => {
    child.once('error', (e) => {
      stderr += e.message;
      resolve(-1);
    });
    child.once('exit', (c) => resolve(c));
  });
  const pid = await dnsmasqPid(s.dir);
  if (code !== 0 || pid === null) throw new OperationFailed(`dnsmasq for ${s.bridge} did not start: ${stderr.trim() || `exit code ${code}`}`, { call: DNSMASQ });
  return pid;
}

export async function stopDnsmasq(dir: string): Promise<void> {
  const pid = await dnsmasqPid(dir);
  if (pid === null) return;
  process.kill(pid, 'SIGTERM');
  const deadline = Date.now() + 5_000;
  while ((await dnsmasqPid(dir)) !== null) {
    if (Date.now() > deadline) {
      process.kill(pid, 'SIGKILL');
      break;
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  await fs.rm(dnsmasqFile(dir, 'pid'), { force: true });
}

/** Writes the NICs' entries (static leases and names) and has dnsmasq read them again. */
export async function writeHosts(dir: string, entries: Array<{ hwaddr: string; address?: string; name: string }>): Promise<void> {
  const text = hostsText(entries);
  await writeFileAtomic(dnsmasqFile(dir, 'hosts'), text);
  const pid = await dnsmasqPid(dir);
  if (pid !== null) process.kill(pid, 'SIGHUP');
}

/**
 * The `dhcp-hostsfile` text, `mac,[ip,]name` per line: each field is refused (InvalidArgument)
 * if it holds a control character or a ",", which would add a line or a field.
 */
export function hostsText(entries: Array<{ hwaddr: string; address?: string; name: string }>): string {
  const lines = entries.map((e) =>
    [e.hwaddr, e.address, e.name]
      .filter(Boolean)
      .map((f) => refuseInField(`dnsmasq's hosts file: the entry of ${JSON.stringify(e.name)}`, f!))
      .join(','),
  );
  return lines.length ? lines.join('\n') + '\n' : '';
}

/**
 * Releases the leases of MACs no NIC has any more (an instance deleted, a NIC removed), so that
 * `leases()` tells the truth and the address is free again at once: `dhcp_release` (Debian's
 * dnsmasq-utils) sends dnsmasq the DHCPRELEASE the client itself never sent.
 */
export async function releaseLeases(dir: string, bridge: string, keep: Set<string>): Promise<void> {
  if ((await dnsmasqPid(dir)) === null) return;
  for (const lease of await readLeases(dir)) {
    if (keep.has(lease.hwaddr.toLowerCase())) continue;
    // A lease left is only stale information: not worth failing the delete that asked.
    await promisify(execFile)('dhcp_release', [bridge, lease.address, lease.hwaddr]).catch(() => undefined);
  }
}

/** dnsmasq's lease file: `expiry mac ip hostname client-id` per line. */
export async function readLeases(dir: string): Promise<Lease[]> {
  const text = await fs.readFile(dnsmasqFile(dir, 'leases'), 'utf8').catch(() => '');
  const out: Lease[] = [];
  for (const line of text.split('\n')) {
    const [expiry, hwaddr, address, hostname] = line.trim().split(/\s+/);
    if (!address) continue;
    out.push({ hwaddr, address, hostname: hostname && hostname !== '*' ? hostname : null, expiresAt: new Date(Number(expiry) * 1000), grantedAt: new Date((Number(expiry) - LEASE_SECONDS) * 1000) });
  }
  return out;
}
