/**
 * Commands in a VM through the guest agent: `guest-exec` with the argv, the full environment and
 * the whole standard input up front (`input-data`), output captured by the agent, then
 * `guest-exec-status` polled (5 ms, growing to 50 ms) until the process has exited.
 *
 * What differs from a container, by the agent's design:
 * - Output arrives all at once, when the process has exited (the agent hands out captured output
 *   only then, at most 16 MiB per stream): `stdout`/`stderr` are Readables that get it then.
 * - Standard input is given when the command starts: `exec` reads `stdin` (string, Buffer or a
 *   Readable, read to its end first) and passes it as input-data. A process from `spawn` has an
 *   empty stdin: ending it is fine, writing data to it fails with NotSupported.
 * - Commands run as root without a terminal: `user`/`group` other than 0 and `pty` are refused
 *   with NotSupported.
 * - The command runs through the guest's `/bin/sh` (busybox), which changes to `cwd` (default
 *   `$HOME`, else `/`) and `exec`s the argv with the PATH of the environment, so a command that
 *   does not exist exits 127 with "lxq: cannot run <cmd>: No such file or directory" on stderr, as in
 *   a container. The pid is that of the command itself (the shell `exec`s it).
 * - `kill(signal)` runs busybox `kill -<n> <pid>` in the guest (the agent has no kill command).
 */
import { Readable, Writable } from 'node:stream';

import { InvalidState, NotSupported } from '../../core/errors';
import { ExitStatus, InstanceProcess, SpawnOptions, signalName, signalNumber } from '../../instance/process';
import type { GuestAgent } from './agent';

const POLL_FIRST_MS = 5;
const POLL_MAX_MS = 50;

/** Changes to the directory ($1, or $HOME) and execs the rest, as a container's exec would. */
const WRAPPER =
  'if [ -n "$1" ]; then cd "$1" || exit 126; else cd "$HOME" 2>/dev/null || cd /; fi; shift; ' +
  'case "$1" in */*) [ -e "$1" ] ;; *) command -v "$1" >/dev/null ;; esac || ' +
  '{ echo "lxq: cannot run $1: No such file or directory" >&2; exit 127; }; exec "$@"';

interface ExecStatus {
  exited: boolean;
  exitcode?: number;
  signal?: number;
  'out-data'?: string;
  'err-data'?: string;
}

export function notInVm(condition: string): NotSupported {
  return new NotSupported(`${condition} is not supported in a vm: the guest agent runs commands as root without a terminal`);
}

/** Refuses what the agent cannot do (after checkSpawn validated the options). */
export function checkAgentSpawn(options: SpawnOptions): void {
  if (options.pty !== undefined && options.pty !== false) throw notInVm('pty');
  if ((options.user ?? 0) !== 0) throw notInVm(`user ${options.user}`);
  if ((options.group ?? 0) !== 0) throw notInVm(`group ${options.group}`);
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Starts `argv` in the guest; `env` is the full "K=V" environment, `input` the whole stdin. */
export async function agentSpawn(agent: GuestAgent, argv: string[], env: string[], cwd: string | undefined, input: Buffer | undefined): Promise<InstanceProcess> {
  const args: Record<string, unknown> = {
    path: '/bin/sh',
    arg: ['-c', WRAPPER, 'sh', cwd ?? '', ...argv],
    env,
    'capture-output': true,
  };
  if (input && input.length) args['input-data'] = input.toString('base64');
  let pid: number;
  try {
    ({ pid } = await agent.execute<{ pid: number }>('guest-exec', args));
  } catch (e) {
    // The agent could not start /bin/sh at all: report it as a shell would.
    if ((e as { command?: string }).command === 'guest-exec') return failedProcess(`lxq: cannot run ${argv[0]}: ${(e as Error).message}`);
    throw e;
  }
  return new AgentProcess(agent, pid);
}

class AgentProcess implements InstanceProcess {
  readonly stdin: Writable;
  readonly stdout = new Readable({ read() {} });
  readonly stderr = new Readable({ read() {} });
  readonly tty = false;
  readonly exit: Promise<ExitStatus>;
  private exited = false;

  constructor(
    private readonly agent: GuestAgent,
    readonly pid: number,
  ) {
    this.stdin = new Writable({
      write(_chunk, _enc, cb) {
        cb(new NotSupported('writing to the stdin of a spawned VM process is not supported: the guest agent takes standard input only when the command starts; use exec({ stdin })'));
      },
    });
    this.exit = this.poll();
    this.exit.catch(() => undefined);
  }

  private async poll(): Promise<ExitStatus> {
    let wait = POLL_FIRST_MS;
    try {
      for (;;) {
        const s = await this.agent.execute<ExecStatus>('guest-exec-status', { pid: this.pid });
        if (s.exited) {
          this.exited = true;
          this.stdout.push(Buffer.from(s['out-data'] ?? '', 'base64'));
          this.stderr.push(Buffer.from(s['err-data'] ?? '', 'base64'));
          const signal = s.signal !== undefined && s.signal > 0 ? signalName(s.signal) : null;
          return { exitCode: signal ? null : (s.exitcode ?? 0), signal };
        }
        await sleep(wait);
        wait = Math.min(POLL_MAX_MS, Math.ceil(wait * 1.5));
      }
    } finally {
      this.stdout.push(null);
      this.stderr.push(null);
    }
  }

  kill(signal: NodeJS.Signals | number = 'SIGTERM'): boolean {
    const n = signalNumber(signal);
    if (this.exited) return false;
    void this.agent.execute('guest-exec', { path: '/bin/sh', arg: ['-c', `kill -${n} ${this.pid}`] }).catch(() => undefined);
    return true;
  }

  resize(): void {
    throw new InvalidState('this process has no terminal (a VM command never has one)');
  }
}

/** A process that has already failed to start (exit 127, the reason on stderr). */
function failedProcess(message: string): InstanceProcess {
  const stdout = Readable.from([]);
  const stderr = Readable.from([Buffer.from(message + '\n')]);
  return {
    pid: 0,
    stdin: new Writable({ write: (_c, _e, cb) => cb() }),
    stdout,
    stderr,
    tty: false,
    kill: () => false,
    resize: () => {
      throw new InvalidState('this process has no terminal');
    },
    exit: Promise.resolve({ exitCode: 127, signal: null }),
  };
}
