/**
 * `lxq --remote WHERE …`: where the LXD server is and how to reach it. Its instances are
 * `Instance`s, driven by the same commands as local ones (commands/index.ts says which).
 */
import { promises as fs } from 'node:fs';

import { InvalidArgument } from '../core/errors';
import type { ConnectOptions, RemoteHost } from '../drivers/remote/host';

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
  // lib/drivers/remote alone: a remote command never loads lib/host nor the liblxc addon (Host.connect is the same call).
  // eslint-disable-next-line @typescript-eslint/no-require-imports -- loaded on first use (see above)
  const { RemoteHost } = require('../drivers/remote/host') as typeof import('../drivers/remote/host');
  return RemoteHost.connect(await remoteEndpoint(g));
}
