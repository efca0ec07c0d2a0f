/** `console NAME [--show-log]` and `monitor`: an instance's console and the host's lifecycle events (this machine's host). */
import { type Command, Option } from 'commander';

import { InvalidArgument } from '../../core/errors';
import type { StorageEvent } from '../../events/lifecycle';
import type { Instance } from '../../instance/instance';
import type { CliContext } from '../context';

export function register(cli: Command, ctx: CliContext): void {
  cli
    .command('console <name>')
    .description("Attach to an instance's console (detach with Ctrl-a q)")
    .option('--show-log', 'print the console log and exit')
    .option('-f, --follow', 'with --show-log: keep printing new lines, across restarts (Ctrl-C to stop)')
    .option('--tail <n>', 'with --show-log: only the last n lines', (v) => wholeNumber('--tail', v))
    .option('--since <time>', "with --show-log: only the lines written since then: a duration back from now ('10m', '1h30m', '30s') or a time ('2026-12-05T06:00:00Z'), as docker logs --since")
    .action(async (name: string, o: { showLog?: boolean; follow?: boolean; tail?: number; since?: string }) => {
      if (!o.showLog && (o.follow || o.tail !== undefined || o.since !== undefined)) throw new InvalidArgument('--follow, --tail and --since go with --show-log');
      const i = await (await ctx.localHost()).get(name);
      if (o.showLog) return showLog(i, o.follow ?? false, { tail: o.tail, since: o.since });
      await attachConsole(i);
    });

  cli
    .command('monitor')
    .description('Follow lifecycle events on this host (Ctrl-C to stop)')
    .addOption(new Option('--format <format>', 'output format').choices(['text', 'json']).default('text'))
    .action(async (o: { format: string }) => {
      const ac = new AbortController();
      process.once('SIGINT', () => ac.abort());
      process.once('SIGTERM', () => ac.abort());
      const host = await ctx.localHost();
      const stream = host.events({ signal: ac.signal });
      // Storage pools' changes too, as `lxc monitor` shows every kind.
      const onStorage = (e: StorageEvent) => process.stdout.write(o.format === 'json' ? JSON.stringify(e) + '\n' : `${e.at} ${e.action} ${e.name} (${e.requestor})\n`);
      host.on('storage', onStorage);
      ac.signal.addEventListener('abort', () => host.off('storage', onStorage));
      await stream.ready;
      // Tests wait for this line before they make the changes they expect to see.
      if (process.env.LXQ_MONITOR_READY) process.stderr.write('ready\n');
      for await (const e of stream) {
        process.stdout.write(o.format === 'json' ? JSON.stringify(e) + '\n' : `${e.at} ${e.action} ${e.name} (${e.type}, ${e.requestor})${e.dropped ? ` [${e.dropped} missed]` : ''}\n`);
      }
    });
}

function wholeNumber(option: string, v: string): number {
  if (!/^\d+$/.test(v)) throw new InvalidArgument(`${option} takes a whole number, got ${JSON.stringify(v)}`);
  return Number(v);
}

/** The console log, or its last lines, or those since a time; with `follow`, then every new line until Ctrl-C. */
async function showLog(i: Instance, follow: boolean, o: { tail?: number; since?: string }): Promise<void> {
  const options = { ...(o.tail !== undefined ? { tail: o.tail } : {}), ...(o.since !== undefined ? { since: o.since } : {}) };
  if (!follow) return void process.stdout.write(await i.console.log(options));
  const ac = new AbortController();
  process.once('SIGINT', () => ac.abort());
  process.once('SIGTERM', () => ac.abort());
  for await (const line of i.console.follow({ ...options, signal: ac.signal })) process.stdout.write(line + '\n');
}

/** Ctrl-a, the console's escape key (as `lxc console`): Ctrl-a q detaches, Ctrl-a Ctrl-a sends one Ctrl-a. */
const ESCAPE = 0x01;
const DETACH = 0x71; // q

/** The keys typed, less the escapes: calls `detach` on Ctrl-a q. */
function keyFilter(detach: () => void): (keys: Buffer) => Buffer {
  let escaped = false;
  return (keys) => {
    const out: number[] = [];
    for (const k of keys) {
      if (escaped) {
        escaped = false;
        if (k === DETACH) {
          detach();
          break;
        }
        out.push(ESCAPE);
        if (k !== ESCAPE) out.push(k);
      } else if (k === ESCAPE) escaped = true;
      else out.push(k);
    }
    return Buffer.from(out);
  };
}

/** The terminal as the console: raw keys in (Ctrl-a q leaves), console output out, window size followed. */
async function attachConsole(i: Instance): Promise<void> {
  const c = await i.console.attach();
  const tty = Boolean(process.stdin.isTTY);
  process.stderr.write(`To detach from the console, press: <ctrl>+a q\r\n`);
  const resize = () => {
    if (process.stdout.columns) c.resize(process.stdout.columns, process.stdout.rows).catch(() => undefined); // a serial port has no size
  };
  resize();
  const done = new Promise<void>((resolve) => {
    let detached = false;
    const filter = keyFilter(() => {
      detached = true;
      resolve();
    });
    process.stdin.on('data', (keys: Buffer) => {
      const out = filter(keys);
      if (!detached && out.length) c.write(out);
    });
    process.stdin.once('end', resolve);
    c.once('end', resolve);
    c.once('close', resolve);
  });
  if (tty) process.stdin.setRawMode(true);
  process.stdout.on('resize', resize);
  c.pipe(process.stdout, { end: false });
  process.stdin.resume();
  try {
    await done;
  } finally {
    process.stdout.off('resize', resize);
    if (tty) process.stdin.setRawMode(false);
    process.stdin.pause();
    c.unpipe(process.stdout);
    c.destroy();
    process.stderr.write('\r\n');
  }
}
