/**
 * `lxq --remote WHERE …`: the commands that make sense on an LXD server (list, info, launch,
 * start/stop/restart/freeze/unfreeze/delete, exec), driven through lib/remote's RemoteHost, whose
 * instances are `Instance`s (exec gets a pty the same way).
 * The rest are refused before anything is sent.
 */
import { promises as fs } from 'node:fs';

import { InvalidArgument, NotSupported } from '../core/errors';
import type { ConnectOptions, RemoteHost } from '../drivers/remote/host';
import type { RemoteInstance } from '../drivers/remote/instance';
import { checkFormat, formatRows } from './format';

/** The commands `--remote` drives; any other is refused with NotSupported. */
export const REMOTE_COMMANDS = ['list', 'info', 'launch', 'start', 'stop', 'restart', 'freeze', 'unfreeze', 'delete', 'exec'];

export interface RemoteGlobals {
  remote?: string;
  remoteCert?: string;
  remoteKey?: string;
  remoteServerCert?: string;
  project?: string;
}

/** `/path/unix.socket` (or `unix:///path`) or `https://host:8443` with our certificate, key and the server's certificate. */
export async function remoteEndpoint(g: RemoteGlobals): Promise<ConnectOptions> {
  const where = g.remote ?? '';
  const tls = [g.remoteCert, g.remoteKey, g.remoteServerCert];
  const project = g.project ? { project: g.project } : {};
  if (where.startsWith('https://')) {
    if (tls.some((f) => !f)) throw new InvalidArgument('an https remote needs --remote-cert, --remote-key and --remote-server-cert (PEM files)');
    const [cert, key, serverCert] = await Promise.all(tls.map((f) => fs.readFile(f!)));
    return { url: where, cert, key, serverCert, ...project };
  }
  if (tls.some((f) => f)) throw new InvalidArgument('--remote-cert, --remote-key and --remote-server-cert are for an https:// remote');
  const socket = where.replace(/^unix:\/\//, '');
  if (!socket.startsWith('/')) throw new InvalidArgument(`bad --remote "${where}": expected an LXD unix socket path (e.g. /var/lib/lxd/unix.socket) or https://host:8443`);
  return { socket, ...project };
}

export async function connectRemote(g: RemoteGlobals): Promise<RemoteHost> {
  // lib/remote alone: a remote command never loads the liblxc addon (Host.connect is the same call).
  // eslint-disable-next-line @typescript-eslint/no-require-imports -- loaded on first use (see above)
  const { RemoteHost } = require('../drivers/remote/host') as typeof import('../drivers/remote/host');
  return RemoteHost.connect(await remoteEndpoint(g));
}

export function refuseUnlessRemote(command: string): void {
  if (!REMOTE_COMMANDS.includes(command)) throw new NotSupported(`${command} is not available with --remote (it drives: ${REMOTE_COMMANDS.join(', ')})`);
}

export async function remoteList(h: RemoteHost, format: string): Promise<string> {
  const f = checkFormat(format);
  const rows = await Promise.all(
    (await h.list()).map(async (i) => ({ name: i.name, type: i.type, status: await i.status(), location: i.location ?? '', created: i.createdAt.toISOString() })),
  );
  return formatRows(rows, ['name', 'type', 'status', 'location', 'created'], f);
}

export async function remoteInfo(i: RemoteInstance): Promise<string> {
  const s = await i.state();
  return [
    `name: ${i.name}`,
    `type: ${i.type}`,
    `location: ${i.location ?? '-'}`,
    `created: ${i.createdAt.toISOString()}`,
    `status: ${s.status}`,
    `pid: ${s.pid ?? '-'}`,
    `processes: ${s.processes}`,
    `cpu: ${(s.cpu.usageNs / 1e9).toFixed(2)} s`,
    `memory: ${s.memory.usageBytes === null ? 'unknown (LXD had no figure)' : `${(s.memory.usageBytes / 2 ** 20).toFixed(1)} MiB`}`,
    `addresses: ${s.network.addresses.join(' ') || '-'}`,
  ].join('\n') + '\n';
}

