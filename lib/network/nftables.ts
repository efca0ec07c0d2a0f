/**
 * NAT for a network: a table of lxq's own per network and family (`ip lxq_<name>`, `ip6 lxq_<name>`), never a rule in another
 * table. It masquerades what leaves the subnet and lets the bridge's traffic be forwarded.
 */
import { execFile, spawn } from 'node:child_process';
import { promises as fs } from 'node:fs';
import { promisify } from 'node:util';

import { InvalidArgument, OperationFailed } from '../core/errors';
import { refuseControlChars } from '../core/guard';

const execFileP = promisify(execFile);

export function natTable(network: string): string {
  return `lxq_${network.replace(/[^A-Za-z0-9_]/g, '_')}`;
}

/** Runs an nftables script (`nft -f -`) as one transaction. */
export function nft(input: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const p = spawn('nft', ['-f', '-'], { stdio: ['pipe', 'ignore', 'pipe'] });
    let err = '';
    p.stderr.on('data', (d) => (err += d));
    p.once('error', (e) => reject(new OperationFailed(`nft: ${e.message} (install nftables)`, { call: 'nft' })));
    p.once('exit', (code) => (code === 0 ? resolve() : reject(new OperationFailed(`nft: ${err.trim() || `exit code ${code}`}`, { call: 'nft' }))));
    p.stdin.end(input);
  });
}

export type NatFamily = 'ip' | 'ip6';

/**
 * Turns the host's forwarding of `family` on, as LXD's bridges do: DNAT and masquerade rules
 * only rewrite packets that the kernel then routes between links (a nat proxy reached from
 * another instance on its bridge included), which it does not while forwarding is off.
 */
export async function enableForwarding(family: NatFamily): Promise<void> {
  await fs.writeFile(family === 'ip' ? '/proc/sys/net/ipv4/ip_forward' : '/proc/sys/net/ipv6/conf/all/forwarding', '1');
}

/** `nft list table FAMILY NAME`'s text; rejects when there is no such table. */
export async function listTable(family: string, table: string): Promise<string> {
  return (await execFileP('nft', ['list', 'table', family, table])).stdout;
}

export async function tableExists(network: string, family: NatFamily = 'ip'): Promise<boolean> {
  return execFileP('nft', ['list', 'table', family, natTable(network)]).then(() => true, () => false);
}

/** Replaces the network's table of `family` in one transaction; `subnet` is the network's ("10.1.2.0/24", "fd42:1:2:3::/64"). */
export async function applyNat(network: string, bridge: string, subnet: string, family: NatFamily = 'ip'): Promise<void> {
  await nft(natRuleset(network, bridge, subnet, family));
}

/**
 * The network's NAT table as an nftables script. Each value is checked here: no control
 * character, the bridge an interface name (it is quoted in the script), the subnet an address
 * and prefix; anything else (a `"`, `;`, `{`, `#`) would change the ruleset, and is refused.
 */
export function natRuleset(network: string, bridge: string, subnet: string, family: NatFamily): string {
  const where = (key: string) => `the nftables ruleset of network ${JSON.stringify(network)}: ${key}`;
  if (family !== 'ip' && family !== 'ip6') throw new InvalidArgument(`${where('family')}: expected "ip" or "ip6", got ${JSON.stringify(family)}`);
  refuseControlChars(where('network'), network);
  if (!/^[A-Za-z0-9_.-]{1,15}$/.test(refuseControlChars(where('bridge'), bridge))) throw new InvalidArgument(`${where('bridge')}: ${JSON.stringify(bridge)} is not an interface name`);
  if (!/^[0-9A-Fa-f.:]+\/\d{1,3}$/.test(refuseControlChars(where('subnet'), subnet))) throw new InvalidArgument(`${where('subnet')}: ${JSON.stringify(subnet)} is not an address and prefix`);
  const t = `${family} ${natTable(network)}`;
  return [
    `table ${t}`,
    `delete table ${t}`,
    `table ${t} {`,
    '  chain postrouting {',
    '    type nat hook postrouting priority srcnat; policy accept;',
    `    ${family} saddr ${subnet} ${family} daddr != ${subnet} masquerade`,
    '  }',
    '  chain forward {',
    '    type filter hook forward priority filter; policy accept;',
    `    iifname "${bridge}" accept`,
    `    oifname "${bridge}" ct state related,established accept`,
    '  }',
    '}',
    '',
  ].join('\n');
}

export async function removeNat(network: string, family: NatFamily = 'ip'): Promise<void> {
  if (await tableExists(network, family)) await nft(`delete table ${family} ${natTable(network)}\n`);
}
