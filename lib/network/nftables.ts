/**
 * NAT for a network: a table of lxq's own per network (`ip lxq_<name>`), never a rule in another
 * table. It masquerades what leaves the subnet and lets the bridge's traffic be forwarded.
 */
import { execFile, spawn } from 'node:child_process';
import { promisify } from 'node:util';

import { OperationFailed } from '../errors';
import { formatIpv4, parseCidr } from './addresses';

const execFileP = promisify(execFile);

export function natTable(network: string): string {
  return `lxq_${network.replace(/[^A-Za-z0-9_]/g, '_')}`;
}

function nft(input: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const p = spawn('nft', ['-f', '-'], { stdio: ['pipe', 'ignore', 'pipe'] });
    let err = '';
    p.stderr.on('data', (d) => (err += d));
    p.once('error', (e) => reject(new OperationFailed(`nft: ${e.message} (install nftables)`, { call: 'nft' })));
    p.once('exit', (code) => (code === 0 ? resolve() : reject(new OperationFailed(`nft: ${err.trim() || `exit code ${code}`}`, { call: 'nft' }))));
    p.stdin.end(input);
  });
}

export async function tableExists(network: string): Promise<boolean> {
  return execFileP('nft', ['list', 'table', 'ip', natTable(network)]).then(() => true, () => false);
}

/** Replaces the network's table in one transaction. */
export async function applyNat(network: string, bridge: string, cidr: string): Promise<void> {
  const c = parseCidr(cidr);
  const subnet = `${formatIpv4(c.network)}/${c.prefix}`;
  const t = natTable(network);
  await nft(
    [
      `table ip ${t}`,
      `delete table ip ${t}`,
      `table ip ${t} {`,
      '  chain postrouting {',
      '    type nat hook postrouting priority srcnat; policy accept;',
      `    ip saddr ${subnet} ip daddr != ${subnet} masquerade`,
      '  }',
      '  chain forward {',
      '    type filter hook forward priority filter; policy accept;',
      `    iifname "${bridge}" accept`,
      `    oifname "${bridge}" ct state related,established accept`,
      '  }',
      '}',
      '',
    ].join('\n'),
  );
}

export async function removeNat(network: string): Promise<void> {
  if (await tableExists(network)) await nft(`delete table ip ${natTable(network)}\n`);
}
