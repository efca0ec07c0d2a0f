/** `start|stop|restart|freeze|unfreeze|delete NAME…`, on either host: every name is found before any is acted on. */
import type { Command } from 'commander';

import type { Instance } from '../../instance/instance';
import { parseMilliseconds } from '../args';
import type { CliContext } from '../context';

interface LifecycleFlags {
  force?: boolean;
  timeout?: number;
}

const stopOptions = (o: LifecycleFlags) => ({ force: o.force === true, ...(o.timeout !== undefined ? { timeout: o.timeout } : {}) });

const VERBS: [string, (i: Instance, o: LifecycleFlags) => Promise<void>][] = [
  ['start', (i) => i.start()],
  ['stop', (i, o) => i.stop(stopOptions(o))],
  ['restart', (i, o) => i.restart(stopOptions(o))],
  ['freeze', (i) => i.freeze()],
  ['unfreeze', (i) => i.unfreeze()],
  ['delete', (i, o) => i.delete({ force: o.force === true })],
];

export function register(cli: Command, ctx: CliContext): void {
  for (const [verb, run] of VERBS) {
    cli
      .command(`${verb} <names...>`)
      .description(`${verb[0].toUpperCase()}${verb.slice(1)} instances`)
      .option('-f, --force', 'force it (stop: kill at once; delete: a running instance too)')
      .option('--timeout <ms>', 'how long a graceful stop may take (ms)', parseMilliseconds)
      .action(async (names: string[], o: LifecycleFlags) => {
        const host = await ctx.host();
        const instances = await Promise.all(names.map((n) => host.get(n))); // all exist, or nothing is done
        for (const i of instances) await run(i, o);
      });
  }
}
