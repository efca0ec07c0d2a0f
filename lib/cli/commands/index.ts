/**
 * Every command family: the module that registers it, the names (and aliases) a user types,
 * and which of them also drive an LXD server (`--remote`; the others are refused there). A run
 * loads only the family it names (`lxq list` never loads the file or image commands); `--help`,
 * a mistyped command or none loads them all, in the order `lxq --help` lists them.
 *
 * A new command (start-up is most of a command's time, BENCHMARKS.md "CLI start-up"):
 * - a new family is a module here exporting `register(cli, ctx)` and one line in FAMILIES with
 *   every name and alias it registers (a name missing there is only found by `--help`'s full
 *   load, and `lxq NAME` would fail as unknown);
 * - its module imports only commander, ../context (types), ../args and ../format at its top; what
 *   it drives comes from `ctx.host()` / `ctx.localHost()` inside the action, and anything heavy
 *   (yaml, cli-progress, a library module only this command uses) is required in the action;
 * - in lib/, code a command reaches but `list` and `exec` do not use is required on first use
 *   (lib/host/on-demand.ts, the `const x = (): typeof import('…') => require('…')` accessors of
 *   base.ts, common.ts, container.ts), so that an import added at the top of those modules does
 *   not slow every command.
 */
import type { Command } from 'commander';

import type { CliContext } from '../context';

interface Family {
  /** The module in this folder; it exports `register(cli, ctx)`. */
  module: string;
  names: string[];
  /** The commands that drive a remote host too. */
  remote?: string[];
}

const LIFECYCLE = ['start', 'stop', 'restart', 'freeze', 'unfreeze', 'delete'];

const FAMILIES: Family[] = [
  { module: 'instances', names: ['list', 'ls', 'info'], remote: ['list', 'info'] },
  { module: 'launch', names: ['launch', 'create', 'init', 'wait'], remote: ['launch', 'create', 'init', 'wait'] },
  { module: 'lifecycle', names: LIFECYCLE, remote: LIFECYCLE },
  { module: 'transfer', names: ['copy', 'rename', 'move', 'export', 'import'] },
  { module: 'exec', names: ['exec', 'shell'], remote: ['exec'] },
  { module: 'file', names: ['file'] },
  { module: 'config', names: ['config'] },
  { module: 'image', names: ['image'] },
  { module: 'snapshot', names: ['snapshot'] },
  { module: 'network', names: ['network'] },
  { module: 'profile', names: ['profile'], remote: ['profile'] },
  { module: 'storage', names: ['storage'] },
  { module: 'console', names: ['console', 'monitor'] },
  { module: 'metrics', names: ['metrics'], remote: ['metrics'] },
  { module: 'autostart', names: ['autostart', 'system'] },
];

/** The commands `--remote` drives, in `--help`'s order. */
export const REMOTE_COMMANDS = FAMILIES.flatMap((f) => f.remote ?? []);

export type Register = (cli: Command, ctx: CliContext) => void;

/** Registers the family of `word` (the command the user typed), or every family when it names none. */
export function registerCommands(cli: Command, ctx: CliContext, word?: string): void {
  const named = FAMILIES.filter((f) => word !== undefined && f.names.includes(word));
  for (const family of named.length ? named : FAMILIES) {
    // eslint-disable-next-line @typescript-eslint/no-require-imports -- one family loaded on demand (see above)
    (require(`./${family.module}`) as { register: Register }).register(cli, ctx);
  }
}
