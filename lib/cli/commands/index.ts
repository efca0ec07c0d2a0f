/** Every command, in the order `lxq --help` lists them. A new family adds its file here. */
import type { Command } from 'commander';

import type { CliContext } from '../context';
import { registerConfig } from './config';
import { registerConsole } from './console';
import { registerExec } from './exec';
import { registerFile } from './file';
import { registerImage } from './image';
import { registerInstances } from './instances';
import { registerLaunch } from './launch';
import { registerLifecycle } from './lifecycle';
import { registerNetwork } from './network';
import { registerSnapshot } from './snapshot';
import { registerTransfer } from './transfer';

const FAMILIES: ((cli: Command, ctx: CliContext) => void)[] = [
  registerInstances, // list, info
  registerLaunch, // launch, wait
  registerLifecycle, // start, stop, restart, freeze, unfreeze, delete
  registerTransfer, // copy, rename, export, import
  registerExec, // exec, shell
  registerFile,
  registerConfig,
  registerImage,
  registerSnapshot,
  registerNetwork,
  registerConsole, // console, monitor
];

export function registerCommands(cli: Command, ctx: CliContext): void {
  for (const register of FAMILIES) register(cli, ctx);
}
