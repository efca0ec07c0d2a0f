/** `autostart start|stop` (LXD's boot.* keys, run at boot and shutdown) and `system install|uninstall` (the systemd unit that runs them). */
import type { Command } from 'commander';

import type { CliContext } from '../context';

interface UnitFlags {
  unit: string;
  unitDir: string;
}

function failures(failed: { name: string; error: string }[]): void {
  for (const f of failed) process.stderr.write(`lxq: ${f.name}: ${f.error}\n`);
  if (failed.length) process.exitCode = 1;
}

export function register(cli: Command, ctx: CliContext): void {
  const autostart = cli.command('autostart').description("Start or stop the host's instances as boot.* say (at boot and shutdown)");
  autostart
    .command('start')
    .description('Start the instances with boot.autostart=true, or unset and running when the host last stopped (by boot.autostart.priority)')
    .action(async () => {
      const report = await (await ctx.localHost()).autostart();
      for (const name of report.started) process.stdout.write(`started ${name}\n`);
      failures(report.failed);
    });
  autostart
    .command('stop')
    .description('Shut the running instances down by boot.stop.priority (by force after boot.host_shutdown_timeout); they start again at the next autostart')
    .action(async () => {
      const report = await (await ctx.localHost()).shutdown();
      for (const name of report.stopped) process.stdout.write(`stopped ${name}\n`);
      failures(report.failed);
    });

  // eslint-disable-next-line @typescript-eslint/no-require-imports -- loaded by these commands only (commands/index.ts)
  const service = (): typeof import('../service') => require('../service');
  const system = cli.command('system').description('The systemd units that run `lxq autostart` at boot and shutdown and the snapshot scheduler');
  system
    .command('serve')
    .description('Hold the host with the snapshot scheduler (snapshots.schedule, .expiry) until SIGTERM or SIGINT')
    .action(async () => {
      // eslint-disable-next-line @typescript-eslint/no-require-imports -- loaded by this command only
      const { Host } = require('../../host/host') as typeof import('../../host/host');
      const { host: dir, images } = ctx.localPaths;
      const host = await Host.open({ path: dir, ...(images ? { images } : {}), scheduler: true });
      process.stdout.write(`scheduling snapshots of ${ctx.localPaths.host}\n`);
      await new Promise<void>((resolve) => ['SIGTERM', 'SIGINT'].forEach((s) => process.once(s, () => resolve())));
      await host.close();
    });
  for (const [verb, what] of [
    ['install', 'Write (and enable) the units: NAME (autostart) and NAME-snapshots (system serve)'],
    ['uninstall', 'Disable and remove the units'],
  ] as const) {
    system
      .command(verb)
      .description(what)
      .option('--unit <name>', 'unit name', 'lxq.service')
      .option('--unit-dir <dir>', 'where units are (systemd is told only for /etc/systemd/system)', '/etc/systemd/system')
      .action(async (o: UnitFlags) => {
        const options = { unit: o.unit, unitDir: o.unitDir, ...ctx.localPaths };
        const done = verb === 'install' ? await service().installUnit(options) : await service().uninstallUnit(options);
        process.stdout.write(done + '\n');
      });
  }
}
