/**
 * `host.networks`: managed bridge networks. Each is a record in `<host>/networks/<name>/` plus
 * real parts that lxq starts and finds again, with no daemon of its own: the bridge (named as
 * the network), a dnsmasq (dnsmasq.ts) and, with `ipv4.nat`, an nftables table (nftables.ts).
 * A network outlives the Node process; after a host reboot its parts are brought back when an
 * instance on it starts (`ensureUp`). `delete` leaves no link, rule, process or file.
 */
import { randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import * as path from 'node:path';

import { AlreadyExists, Busy, InvalidArgument, NotFound } from '../core/errors';
import { readJson, writeJsonAtomic } from '../core/fs';
import { SerialQueue } from '../core/serial';
import { contains, formatCidr, formatCidr6, formatIpv4, formatIpv6, overlaps, overlaps6, parseCidr, parseCidr6, parseIpv4, pickFreeSubnet, pickFreeUla } from './addresses';
import { dnsmasqFile, dnsmasqPid, type Lease, readLeases, releaseLeases, startDnsmasq, stopDnsmasq, writeHosts } from './dnsmasq';
import { createBridge, deleteLink, hostSubnets, hostSubnets6, link, setMtu } from './iproute';
import { type NetworkConfig, type NetworkConfigInput, type NetworkKey, NETWORK_KEYS, networkValue, validateNetworkConfig } from './keys';
import { applyNat, enableForwarding, type NatFamily, removeNat, tableExists } from './nftables';

const RECORD = 'network.json';
/** Interface names: at most 15 bytes (IFNAMSIZ), and safe as a file and nftables name. */
const NETWORK_NAME = /^[A-Za-z][A-Za-z0-9_-]{0,14}$/;

export interface NetworkRecord {
  version: 1;
  name: string;
  type: 'bridge';
  /** The keys as given, with `ipv4.address`/`ipv6.address` `auto` replaced by the subnets picked at create. */
  config: NetworkConfig;
  createdAt: string;
}

/** A NIC on a network, as the instances' records say (for static leases, names and `Busy`). */
export interface NetworkUser {
  instance: string;
  device: string;
  hwaddr: string;
  address?: string;
}

/** What the networks need to know of the instances: who uses which network. */
export type NetworkUsers = (network: string) => Promise<NetworkUser[]>;

export function validateNetworkName(name: unknown): string {
  if (typeof name !== 'string' || !NETWORK_NAME.test(name)) {
    throw new InvalidArgument(`invalid network name ${JSON.stringify(name)}: a network is a bridge, named as an interface: 1-15 letters, digits, "_" and "-", starting with a letter`);
  }
  return name;
}

/**
 * An lxq network: a bridge with its own subnets, dnsmasq (DHCP, DNS) and NAT, as LXD's managed bridges.
 *
 * @example
 * ```ts
 * const net = await host.networks.get('lxqbr0');
 * console.log(net.bridge, net.cidr, net.cidr6, net.config['ipv4.nat']);
 * ```
 */
export class Network {
  constructor(
    readonly dir: string,
    private record: NetworkRecord,
    private readonly users: NetworkUsers,
  ) {}

  get name(): string {
    return this.record.name;
  }
  /** The bridge: a link named as the network. */
  get bridge(): string {
    return this.record.name;
  }
  get config(): Readonly<NetworkConfig> {
    return this.record.config;
  }
  get createdAt(): Date {
    return new Date(this.record.createdAt);
  }
  /** The bridge's address and prefix ("10.1.2.1/24"). */
  get cidr(): string {
    return networkValue(this.record.config, 'ipv4.address');
  }
  /** The bridge's own address ("10.1.2.1"). */
  get address(): string {
    return this.cidr.split('/')[0];
  }
  /** The bridge's IPv6 address and prefix ("fd42:1:2:3::1/64"), or undefined where the network has no IPv6. */
  get cidr6(): string | undefined {
    const v = networkValue(this.record.config, 'ipv6.address');
    return v === 'none' ? undefined : v;
  }
  /** The bridge's own IPv6 address, or undefined. */
  get address6(): string | undefined {
    return this.cidr6?.split('/')[0];
  }
  get domain(): string {
    return networkValue(this.record.config, 'dns.domain');
  }
  get mtu(): number {
    return Number(networkValue(this.record.config, 'bridge.mtu'));
  }

  /** The leases dnsmasq handed out. */
  leases(): Promise<Lease[]> {
    return readLeases(this.dir);
  }

  /** Which of its parts run now. */
  async parts(): Promise<{ bridge: boolean; dnsmasq: number | null; nat: boolean; nat6: boolean }> {
    const [l, pid, nat, nat6] = await Promise.all([link(this.bridge), dnsmasqPid(this.dir), tableExists(this.name, 'ip'), tableExists(this.name, 'ip6')]);
    return { bridge: l !== undefined, dnsmasq: pid, nat, nat6 };
  }

  /** @internal Brings back what is missing (after a host reboot, or a part killed): bridge, dnsmasq, NAT. */
  async ensureUp(): Promise<void> {
    if (!(await link(this.bridge))) await createBridge(this.bridge, this.cidr, this.mtu, this.cidr6);
    await this.writeHosts();
    // dnsmasq serves DNS for the instances' names even where DHCP is off.
    if ((await dnsmasqPid(this.dir)) === null) {
      await startDnsmasq({
        dir: this.dir,
        bridge: this.bridge,
        cidr: this.cidr,
        cidr6: this.cidr6,
        dhcp: networkValue(this.config, 'ipv4.dhcp') === 'true',
        ranges: (this.config['ipv4.dhcp.ranges'] ?? '').split(',').map((r) => r.trim()).filter(Boolean),
        domain: this.domain,
      });
    }
    await this.ensureNat('ip');
    await this.ensureNat('ip6');
  }

  /** The NAT table of `family` as the keys say; forwarding, which NAT needs, is enabled as LXD does. */
  private async ensureNat(family: NatFamily): Promise<void> {
    const v4 = family === 'ip';
    const subnet = v4 ? this.subnet : this.subnet6;
    if (subnet && networkValue(this.config, v4 ? 'ipv4.nat' : 'ipv6.nat') === 'true') {
      await applyNat(this.name, this.bridge, subnet, family);
      await enableForwarding(family);
    } else {
      await removeNat(this.name, family);
    }
  }

  /** The subnets, as nftables writes them ("10.1.2.0/24", "fd42:1:2:3::/64"). */
  private get subnet(): string {
    const c = parseCidr(this.cidr);
    return `${formatIpv4(c.network)}/${c.prefix}`;
  }
  private get subnet6(): string | undefined {
    const c = this.cidr6 ? parseCidr6(this.cidr6) : undefined;
    return c && `${formatIpv6(c.network)}/${c.prefix}`;
  }

  /** @internal Static leases and names of the NICs on this network, for dnsmasq (re-read at once); the leases of NICs gone are released. */
  async writeHosts(): Promise<void> {
    const users = await this.users(this.name);
    await writeHosts(this.dir, users.map((u) => ({ hwaddr: u.hwaddr, address: u.address, name: u.instance })));
    await releaseLeases(this.dir, this.bridge, new Set(users.map((u) => u.hwaddr.toLowerCase())));
  }

  /** @internal Stops and removes every part; the record stays (see Networks.delete). */
  async tearDown(): Promise<void> {
    await stopDnsmasq(this.dir);
    await removeNat(this.name, 'ip');
    await removeNat(this.name, 'ip6');
    await deleteLink(this.bridge);
  }

  /** @internal Checks a NIC's static address against the subnet and the other NICs; InvalidArgument names it. */
  async checkStaticAddress(address: string, owner: { instance: string; device: string }): Promise<void> {
    const c = parseCidr(this.cidr);
    const n = parseIpv4(address);
    if (!contains(c, n) || n === c.address) {
      throw new InvalidArgument(`ipv4.address ${address} is not a free host address of network ${this.name} (${formatIpv4(c.network)}/${c.prefix}, the bridge is ${this.address})`);
    }
    const other = (await this.users(this.name)).find((u) => u.address === address && !(u.instance === owner.instance && u.device === owner.device));
    if (other) throw new InvalidArgument(`ipv4.address ${address} on network ${this.name} is already given to device "${other.device}" of ${other.instance}`);
  }
}

/**
 * The host's lxq networks (`host.networks`): create, list, change and delete them.
 *
 * @example
 * ```ts
 * await host.networks.create('lab', { 'ipv4.address': '10.77.0.1/24', 'ipv6.address': 'none' });
 * await host.create('web1', { image: 'busybox', devices: { eth0: { type: 'nic', network: 'lab' } } });
 * ```
 */
export class Networks {
  /** Creations, changes and deletions of networks, one at a time. */
  private readonly changes = new SerialQueue();

  constructor(
    /** `<host>/networks`. */
    readonly dir: string,
    private readonly users: NetworkUsers,
  ) {}

  private open(name: string, record: NetworkRecord): Network {
    return new Network(path.join(this.dir, name), record, this.users);
  }

  async get(name: string): Promise<Network> {
    validateNetworkName(name);
    const record = await readJson<NetworkRecord>(path.join(this.dir, name, RECORD)).catch(() => undefined);
    if (!record) throw new NotFound(`no network named "${name}" on this host`);
    return this.open(name, record);
  }

  async list(): Promise<Network[]> {
    const names = (await fs.readdir(this.dir).catch(() => [] as string[])).filter((n) => NETWORK_NAME.test(n)).sort();
    const found = await Promise.all(names.map((n) => this.get(n).catch(() => undefined)));
    return found.filter((n): n is Network => n !== undefined);
  }

  /**
   * A new bridge network, up at once. Everything is checked first (name, keys, a subnet that
   * overlaps no route or address of the host and no other lxq network); a failure leaves nothing.
   */
  create(name: string, input: NetworkConfigInput = {}): Promise<Network> {
    return this.changes.run(async () => {
      validateNetworkName(name);
      const config = validateNetworkConfig(input);
      if (await fs.stat(path.join(this.dir, name, RECORD)).then(() => true, () => false)) throw new AlreadyExists(`a network named "${name}" already exists`);
      if (await link(name)) throw new AlreadyExists(`the host already has a link named "${name}" (not an lxq network): choose another name`);
      config['ipv4.address'] = await this.subnetFor(name, config['ipv4.address'] ?? 'auto');
      if (config['ipv6.address']) config['ipv6.address'] = await this.subnet6For(name, config['ipv6.address']);
      const record: NetworkRecord = { version: 1, name, type: 'bridge', config, createdAt: new Date().toISOString() };
      await fs.mkdir(this.dir, { recursive: true, mode: 0o711 });
      const tmp = path.join(this.dir, `.${name}.tmp-${randomBytes(4).toString('hex')}`);
      await fs.mkdir(tmp, { mode: 0o755 });
      const network = this.open(name, record);
      try {
        await writeJsonAtomic(path.join(tmp, RECORD), record);
        await fs.rename(tmp, network.dir);
        await network.ensureUp();
      } catch (e) {
        await network.tearDown().catch(() => undefined);
        await fs.rm(tmp, { recursive: true, force: true });
        await fs.rm(network.dir, { recursive: true, force: true });
        throw e;
      }
      return network;
    });
  }

  /** "auto": a free /24; a given subnet: refused if it overlaps the host's or another network's. */
  private async subnetFor(name: string, wanted: string): Promise<string> {
    const others = (await this.list()).filter((n) => n.name !== name).map((n) => ({ name: n.name, c: parseCidr(n.cidr) }));
    const host = await hostSubnets();
    if (wanted === 'auto') return formatCidr(pickFreeSubnet([...host, ...others.map((o) => o.c)]));
    const c = parseCidr(wanted);
    const clash = others.find((o) => overlaps(o.c, c));
    if (clash) throw new InvalidArgument(`ipv4.address ${wanted} overlaps network ${clash.name} (${formatCidr(clash.c)})`);
    const route = host.find((h) => overlaps(h, c));
    if (route) throw new InvalidArgument(`ipv4.address ${wanted} overlaps a route or address of the host (${formatIpv4(route.network)}-${formatIpv4(route.broadcast)})`);
    return wanted;
  }

  /** "none" stays; "auto": a free ULA /64; a given subnet: refused if it overlaps the host's or another network's. */
  private async subnet6For(name: string, wanted: string): Promise<string> {
    if (wanted === 'none') return wanted;
    const others = (await this.list()).flatMap((n) => (n.name !== name && n.cidr6 ? [{ name: n.name, c: parseCidr6(n.cidr6) }] : []));
    const host = await hostSubnets6();
    if (wanted === 'auto') return formatCidr6(pickFreeUla([...host, ...others.map((o) => o.c)]));
    const c = parseCidr6(wanted);
    const clash = others.find((o) => overlaps6(o.c, c));
    if (clash) throw new InvalidArgument(`ipv6.address ${wanted} overlaps network ${clash.name} (${formatCidr6(clash.c)})`);
    const route = host.find((h) => overlaps6(h, c));
    if (route) throw new InvalidArgument(`ipv6.address ${wanted} overlaps a route or address of the host (${formatCidr6(route)})`);
    return wanted;
  }

  /** Changes keys; the ones that cannot change in place are refused (Busy) while instances use the network. */
  update(name: string, patch: Record<string, string | number | boolean | null>): Promise<Network> {
    return this.changes.run(async () => {
      const network = await this.get(name);
      const sets = validateNetworkConfig(Object.fromEntries(Object.entries(patch ?? {}).filter(([, v]) => v !== null)));
      for (const [k, v] of Object.entries(patch ?? {})) if (v === null) validateNetworkConfig({ [k]: networkValue({}, k as NetworkKey) });
      const next: NetworkConfig = { ...network.config, ...sets };
      for (const [k, v] of Object.entries(patch ?? {})) if (v === null) delete next[k as NetworkKey];
      const changed = (Object.keys(NETWORK_KEYS) as NetworkKey[]).filter((k) => networkValue(next, k) !== networkValue(network.config, k));
      if (!changed.length) return network;
      const fixed = changed.filter((k) => !NETWORK_KEYS[k].live);
      if (fixed.length) {
        const users = await this.users(name);
        if (users.length) throw new Busy(`network ${name} is used by ${[...new Set(users.map((u) => u.instance))].join(', ')}: ${fixed.join(', ')} cannot change while instances use it`, users.map((u) => u.instance));
        if (changed.includes('ipv4.address')) next['ipv4.address'] = await this.subnetFor(name, next['ipv4.address'] ?? 'auto');
        if (changed.includes('ipv6.address')) next['ipv6.address'] = await this.subnet6For(name, next['ipv6.address'] ?? 'none');
      }
      const record: NetworkRecord = { ...(await readJson<NetworkRecord>(path.join(network.dir, RECORD))), config: next };
      const updated = this.open(name, record);
      // The parts are made again from the new record (dnsmasq re-reads nothing but its hosts file).
      await stopDnsmasq(network.dir);
      if (fixed.length) await deleteLink(network.bridge);
      await writeJsonAtomic(path.join(network.dir, RECORD), record);
      if (changed.includes('bridge.mtu') && (await link(updated.bridge))) await setMtu(updated.bridge, updated.mtu);
      await updated.ensureUp();
      return updated;
    });
  }

  /** Removes the network and every part of it; Busy while an instance has a NIC on it. */
  delete(name: string): Promise<void> {
    return this.changes.run(async () => {
      const network = await this.get(name);
      const users = await this.users(name);
      if (users.length) {
        throw new Busy(`network ${name} is used by ${[...new Set(users.map((u) => `${u.instance} (device "${u.device}")`))].join(', ')}: remove those NICs first`, users.map((u) => u.instance));
      }
      await network.tearDown();
      await fs.rm(network.dir, { recursive: true, force: true });
    });
  }
}

export { dnsmasqFile };
