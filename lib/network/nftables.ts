/**
 * NAT for a network: a table of lxq's own per network and family (`ip lxq_<name>`, `ip6 lxq_<name>`), never a rule in another
 * table. It masquerades what leaves the subnet and lets the bridge's traffic be forwarded.
 */
import { execFile, spawn } from 'node:child_process';
import { promisify } from 'node:util';

import { OperationFailed } from '../errors';

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

export type NatFamily = 'ip' | 'ip6';

export async function tableExists(network: string, family: NatFamily = 'ip'): Promise<boolean> {
  return execFileP('nft', ['list', 'table', family, natTable(network)]).then(() => true, () => false);
}

/** Replaces the network's table of `family` in one transaction; `subnet` is the network's ("10.1.2.0/24", "fd42:1:2:3::/64"). */
export async function applyNat(network: string, bridge: string, subnet: string, family: NatFamily = 'ip'): Promise<void> {
  const t = `${family} ${natTable(network)}`;
  await nft(
    [
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
    ].join('\n'),
  );
}

export async function removeNat(network: string, family: NatFamily = 'ip'): Promise<void> {
  if (await tableExists(network, family)) await nft(`delete table ${family} ${natTable(network)}\n`);
}
