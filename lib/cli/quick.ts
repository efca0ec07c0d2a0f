/**
 * The quick path of the two commands a person or a script runs most: `lxq list` and `lxq exec
 * NAME -- CMD…` on this machine's host, without commander, Host or the instance classes (start-up
 * is most of their time: BENCHMARKS.md, "CLI start-up"). It serves only their plain forms
 * (`--host`, `--images`; `list [--format F]`; `exec [-t|-T|--env K=V|--cwd DIR]… NAME -- CMD…`) on
 * a host Host.open would leave as it is, whose instances are plain containers
 * (lib/host/quick.ts), through the same functions as the full path (views.ts, interactive.ts,
 * the driver's status and attach). Anything else, an error before the command runs included (a
 * container not running, an unknown name), goes to the whole CLI (program.ts), which then does
 * and prints what it always did: both paths give the same bytes and exit codes
 * (test/cli-quick.test.ts). `LXQ_NO_QUICK=1` turns it off.
 */
import type { Format } from './format';
import { exitFlushed, FAILED, failureLine } from './exit';
import type { QuickHost, QuickInstance } from '../host/quick';
import type { ExecFlags } from './interactive';

interface Globals {
  host?: string;
  images?: string;
}
type Line = Globals & ({ command: 'list'; format: Format } | { command: 'exec'; name: string; argv: string[]; flags: ExecFlags });

/** The global options the quick path takes (each with a value), as commander sets them. */
const GLOBALS: Record<string, keyof Globals> = { '--host': 'host', '--images': 'images' };

/** `argv` (process.argv's form) as a line the quick path serves, or undefined. */
export function quickLine(argv: string[]): Line | undefined {
  if (process.env.LXQ_REMOTE || process.env.LXQ_NO_QUICK) return undefined;
  const args = argv.slice(2);
  const g: Globals = { host: process.env.LXQ_HOST, images: process.env.LXQ_IMAGES };
  let i = 0;
  for (; i < args.length && args[i].startsWith('-'); i += 2) {
    const key = GLOBALS[args[i]];
    if (!key || !taken(args[i + 1])) return undefined;
    g[key] = args[i + 1];
  }
  const [word, ...rest] = args.slice(i);
  if (word === 'list' || word === 'ls') {
    if (rest.length === 0) return { ...g, command: 'list', format: 'table' };
    const format = rest[1] as Format;
    // eslint-disable-next-line @typescript-eslint/no-require-imports -- `exec` never loads it (each module is a cost of every start)
    const { FORMATS } = require('./format') as typeof import('./format');
    return rest.length === 2 && rest[0] === '--format' && FORMATS.includes(format) ? { ...g, command: 'list', format } : undefined;
  }
  return word === 'exec' ? execLine(g, rest) : undefined;
}

/** An option's value as the quick path takes it (commander may read a "-…" word otherwise). */
const taken = (v: string | undefined): v is string => v !== undefined && !v.startsWith('-');

function execLine(g: Globals, rest: string[]): Line | undefined {
  const end = rest.indexOf('--');
  if (end < 0 || end === rest.length - 1) return undefined;
  const flags: ExecFlags = { env: [] };
  let name: string | undefined;
  for (let j = 0; j < end; j++) {
    const a = rest[j];
    if (a === '-t' || a === '--tty') flags.tty = true;
    else if (a === '-T' || a === '--no-tty') flags.tty = false;
    else if ((a === '--env' || a === '--cwd') && j + 1 < end && taken(rest[j + 1])) {
      if (a === '--env') flags.env.push(rest[++j]);
      else flags.cwd = rest[++j];
    } else if (name === undefined && !a.startsWith('-')) name = a;
    else return undefined;
  }
  return name === undefined ? undefined : { ...g, command: 'exec', name, argv: rest.slice(end + 1), flags };
}

/** Serves `argv` and exits, or resolves false (nothing done, nothing printed): the whole CLI runs it. */
export async function quick(argv: string[]): Promise<boolean> {
  const line = quickLine(argv);
  if (!line) return false;
  // eslint-disable-next-line @typescript-eslint/no-require-imports -- loaded only for a line served here
  const { quickHost } = require('../host/quick') as typeof import('../host/quick');
  let host: QuickHost | undefined;
  try {
    host = quickHost(line.host, line.images || undefined);
  } catch {
    return false;
  }
  if (!host) return false;
  const served = line.command === 'list' ? await list(host, line.format) : await exec(host, line.name, line.argv, line.flags);
  if (served) exitFlushed();
  return served;
}

async function list(host: QuickHost, format: Format): Promise<boolean> {
  // eslint-disable-next-line @typescript-eslint/no-require-imports -- see quick()
  const { listText, LOCAL_VIEW } = require('./views') as typeof import('./views');
  const text = await listText(LOCAL_VIEW, host.instances, format).catch(() => undefined);
  if (text === undefined) return false;
  process.stdout.write(text);
  return true;
}

/**
 * Falls back until the command runs (the runner refuses a container not running); from then on,
 * as the full path. A command without a terminal, on none (fds 0-2), is handed over: this process
 * becomes the runner, as lxc-attach runs one (the driver's quickHandOver), with the same exit
 * status, signals passed on, and the whole CLI run in its place if the container refuses it.
 */
async function exec(host: QuickHost, name: string, argv: string[], flags: ExecFlags): Promise<boolean> {
  const target = host.get(name);
  if (!target) return false;
  // eslint-disable-next-line @typescript-eslint/no-require-imports -- see quick()
  const { execRequest, execution } = require('./interactive') as typeof import('./interactive');
  let run: ReturnType<typeof execution>;
  try {
    const request = execRequest(argv, flags);
    if (request.tty !== true) target.handOver(argv, request.options, [process.execPath, ...process.execArgv, ...process.argv.slice(1)]);
    run = execution(argv, request);
  } catch {
    return false;
  }
  let started = false;
  const spawn: QuickInstance['spawn'] = async (a, o) => {
    const p = await target.spawn(a, o);
    started = true;
    return p;
  };
  try {
    process.exitCode = await run({ spawn });
  } catch (e) {
    if (!started) return false;
    process.stderr.write(failureLine(e));
    process.exitCode = FAILED;
  }
  return true;
}
