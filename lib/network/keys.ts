/**
 * The keys of a managed bridge network, declared once (LXD's names): validation, defaults,
 * the TypeScript types and the README's table (`describeNetworkKeys`) read this table.
 */
import { InvalidArgument } from '../core/errors';
import { refuseControlChars } from '../core/guard';
import { editDistance } from '../core/units';
import { parseCidr, parseCidr6, parseIpv4 } from './addresses';

export interface NetworkKeySpec {
  readonly default?: string;
  readonly description: string;
  /** Applied to a network in use by `update`: true when lxq can change it in place. */
  readonly live: boolean;
  readonly validate: (value: string) => void;
}

const bool = (v: string) => {
  if (v !== 'true' && v !== 'false') throw new Error(`expected "true" or "false", got ${JSON.stringify(v)}`);
};

/**
 * The keys of an lxq network, declared once (LXD's names): their defaults, whether they change
 * live, and their validation.
 *
 * @example
 * ```ts
 * for (const [key, spec] of Object.entries(NETWORK_KEYS)) console.log(key, spec.default ?? '-', spec.description);
 * ```
 */
export const NETWORK_KEYS = {
  'ipv4.address': {
    default: 'auto',
    live: false,
    description: 'The bridge\'s address and subnet in CIDR ("10.20.30.1/24"), or "auto": a free private /24 that overlaps no route or address of the host.',
    validate: (v: string) => {
      if (v === 'auto') return;
      const c = parseCidr(v);
      if (c.prefix < 8 || c.prefix > 30) throw new Error(`the prefix must be between /8 and /30, got /${c.prefix}`);
      if (c.address === c.network || c.address === c.broadcast) throw new Error(`${v} is the network's own or broadcast address, not a host address`);
    },
  },
  'ipv4.dhcp': { default: 'true', live: true, description: 'Serve DHCP on the bridge.', validate: bool },
  'ipv4.dhcp.ranges': {
    live: true,
    description: 'Comma-separated address ranges ("10.20.30.100-10.20.30.200") DHCP hands out (default: the whole subnet).',
    validate: (v: string) => {
      for (const r of v.split(',')) {
        const [a, b, more] = r.trim().split('-');
        if (!a || !b || more !== undefined) throw new Error(`expected ranges such as "10.0.0.100-10.0.0.200", got ${JSON.stringify(r)}`);
        if (parseIpv4(a) > parseIpv4(b)) throw new Error(`range ${r} ends before it starts`);
      }
    },
  },
  'ipv4.nat': { default: 'true', live: true, description: 'Masquerade traffic leaving the subnet (nftables, in a table of lxq\'s own; enables IPv4 forwarding).', validate: bool },
  'ipv6.address': {
    default: 'none',
    live: false,
    description: 'The bridge\'s IPv6 address and /64 in CIDR ("fd42:1:2:3::1/64"), "auto" (a free unique local /64, RFC 4193) or "none". Instances get their addresses by SLAAC from the router advertisements of the network\'s dnsmasq, and `<instance>.<domain>` an AAAA record.',
    validate: (v: string) => {
      if (v === 'none' || v === 'auto') return;
      const c = parseCidr6(v);
      if (c.prefix !== 64) throw new Error(`the prefix must be /64 (what SLAAC needs), got /${c.prefix}`);
      if (c.address === c.network) throw new Error(`${v} is the subnet's own address, not a host address`);
      const first = Number(c.network >> 112n); // the first 16 bits: ff00::/8 multicast, fe80::/10 link-local
      if (first >= 0xff00 || (first & 0xffc0) === 0xfe80) throw new Error(`${v} is a multicast or link-local address`);
    },
  },
  'ipv6.nat': { default: 'false', live: true, description: 'Masquerade IPv6 traffic leaving the subnet (nftables, in a table of lxq\'s own; enables IPv6 forwarding on the host, which stops the host from taking router advertisements on interfaces with `accept_ra` 1).', validate: bool },
  'dns.domain': {
    default: 'lxq',
    live: false,
    description: 'The DNS domain of the instances: `<instance>.<domain>` resolves on the bridge.',
    validate: (v: string) => {
      if (!/^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$/i.test(v)) throw new Error(`not a DNS domain: ${JSON.stringify(v)}`);
    },
  },
  'bridge.mtu': {
    default: '1500',
    live: true,
    description: 'MTU of the bridge (and the default of its NICs).',
    validate: (v: string) => {
      if (!/^\d+$/.test(v) || Number(v) < 1280 || Number(v) > 65535) throw new Error(`expected an MTU from 1280 to 65535, got ${JSON.stringify(v)}`);
    },
  },
} as const satisfies Record<string, NetworkKeySpec>;

/**
 * A key of a network, such as 'ipv4.address' or 'ipv4.nat'.
 *
 * @example
 * ```ts
 * const key: NetworkKey = 'ipv4.nat';
 * console.log(NETWORK_KEYS[key].default); // 'true'
 * ```
 */
export type NetworkKey = keyof typeof NETWORK_KEYS;
/**
 * A network's keys as `networks.create` takes them: strings, numbers or booleans, stored as strings.
 *
 * @example
 * ```ts
 * const config: NetworkConfigInput = { 'ipv4.address': '10.77.0.1/24', 'ipv4.nat': false };
 * await host.networks.create('lab', config);
 * ```
 */
export type NetworkConfigInput = { [K in NetworkKey]?: string | number | boolean };
/**
 * A network's keys as stored: strings, defaults not filled in.
 *
 * @example
 * ```ts
 * const config: Readonly<NetworkConfig> = (await host.networks.get('lab')).config;
 * console.log(config['ipv4.address'] ?? 'auto');
 * ```
 */
export type NetworkConfig = Partial<Record<NetworkKey, string>>;

/** A key's value, its default where unset ("" for a key that is not one: validation then names it). */
export function networkValue(config: NetworkConfig, key: NetworkKey): string {
  return config[key] ?? (NETWORK_KEYS[key] as NetworkKeySpec | undefined)?.default ?? '';
}

/** Validated and normalized keys; InvalidArgument names the key. */
export function validateNetworkConfig(input: unknown): NetworkConfig {
  if (input === undefined) return {};
  if (input === null || typeof input !== 'object' || Array.isArray(input)) throw new InvalidArgument('network config must be an object of keys to values');
  const out: NetworkConfig = {};
  for (const [key, raw] of Object.entries(input as Record<string, unknown>)) {
    const spec = (NETWORK_KEYS as Record<string, NetworkKeySpec>)[key];
    if (!spec) {
      const near = Object.keys(NETWORK_KEYS).filter((k) => editDistance(k, key) <= 3);
      throw new InvalidArgument(`unknown network key "${key}"` + (near.length ? `; did you mean ${near.map((k) => `"${k}"`).join(', ')}?` : `; known: ${Object.keys(NETWORK_KEYS).join(', ')}`));
    }
    if (typeof raw !== 'string' && typeof raw !== 'number' && typeof raw !== 'boolean') throw new InvalidArgument(`network key "${key}" must be a string, number or boolean`);
    const value = refuseControlChars(`network key "${key}"`, String(raw));
    try {
      spec.validate(value);
    } catch (e) {
      throw new InvalidArgument(`bad value for network key "${key}": ${(e as Error).message}`);
    }
    out[key as NetworkKey] = value;
  }
  return out;
}

export function describeNetworkKeys(): string {
  const rows = Object.entries(NETWORK_KEYS).map(([k, s]: [string, NetworkKeySpec]) => `| \`${k}\` | ${s.default ?? ''} | ${s.live ? 'yes' : 'no'} | ${s.description} |`);
  return ['| key | default | changes in use | description |', '|---|---|---|---|', ...rows].join('\n');
}
