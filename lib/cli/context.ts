/**
 * The host factory: what every command gets. `host()` is the host the command drives, this
 * machine's or the LXD server of `--remote`, both an InstanceHost; `localHost()` is this
 * machine's, for the commands that exist only here (commands/index.ts says which drive a
 * remote; the others are refused before anything is done). The host modules are loaded on
 * first use: `--help` loads neither, a remote command never loads lib/host (nor the liblxc addon).
 */
import type { Command } from 'commander';

import { InvalidArgument, NotSupported } from '../core/errors';
import type { Host } from '../host/host';
import type { InstanceHost } from '../instance/host';
import { REMOTE_COMMANDS } from './commands';
import { connectRemote, type RemoteGlobals } from './remote';
import { LOCAL_VIEW, REMOTE_VIEW, type InstanceView } from './views';

import { DEFAULT_HOST_PATH } from '../host/paths';

export { DEFAULT_HOST_PATH };

export interface Globals extends RemoteGlobals {
  host?: string;
  images?: string;
}

/** A command's name as the user typed it: `list`, `file pull`. */
const commandName = (c: Command): string => (c.parent?.parent ? `${c.parent.name()} ${c.name()}` : c.name());

export class CliContext {
  private opened: Promise<InstanceHost> | undefined;
  private openedLocal: Promise<Host> | undefined;

  constructor(private readonly root: Command) {}

  private get globals(): Globals {
    return this.root.opts<Globals>();
  }

  /** This machine's host directory and image store as given (`--host`, `--images`), for a command that runs lxq again (a systemd unit). */
  get localPaths(): { host: string; images?: string } {
    const g = this.globals;
    return { host: g.host ?? DEFAULT_HOST_PATH, ...(g.images ? { images: g.images } : {}) };
  }

  /** True with `--remote`: the commands drive an LXD server. */
  get remote(): boolean {
    return Boolean(this.globals.remote);
  }

  /** How `list` and `info` show instances of the host driven. */
  get view(): InstanceView {
    return this.remote ? REMOTE_VIEW : LOCAL_VIEW;
  }

  /** Before any action: remote options without `--remote`, or a command `--remote` cannot drive, are refused. */
  refuseMisuse(action: Command): void {
    const g = this.globals;
    if (!g.remote && (g.project || g.remoteCert || g.remoteKey || g.remoteServerCert)) throw new InvalidArgument('--project, --remote-cert, --remote-key and --remote-server-cert go with --remote');
    const name = commandName(action);
    if (g.remote && !REMOTE_COMMANDS.includes(name)) throw new NotSupported(`${name} is not available with --remote (it drives: ${REMOTE_COMMANDS.join(', ')})`);
  }

  /** The host the command drives: the LXD server of `--remote`, else this machine's. */
  host(): Promise<InstanceHost> {
    this.opened ??= this.remote ? connectRemote(this.globals) : this.localHost();
    return this.opened;
  }

  /** This machine's host (`--host`, `--images`): for the commands that exist only here. */
  localHost(): Promise<Host> {
    const g = this.globals;
    // eslint-disable-next-line @typescript-eslint/no-require-imports -- loaded on first use: a remote command or `--help` never loads it
    const { Host } = require('../host/host') as typeof import('../host/host');
    this.openedLocal ??= Host.open({ path: g.host, ...(g.images ? { images: g.images } : {}) });
    return this.openedLocal;
  }
}
