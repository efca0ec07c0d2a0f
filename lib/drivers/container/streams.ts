/**
 * The streams of what liblxc hands back as file descriptors: an attached command (pipes, or a
 * terminal) and the console (its pty, behind the monitor's console proxy).
 */
import { close as closeFd, constants as fsConstants, readSync } from 'node:fs';
import { Socket } from 'node:net';
import { Readable } from 'node:stream';
import { ReadStream as TtyStream } from 'node:tty';

import { InvalidState } from '../../core/errors';
import type { ConsoleEndpoint } from '../../instance/console';
import { checkPty, checkSpawn, checkWindowSize, instanceEnvironment, type InstanceProcess, signalName, signalNumber, type SpawnOptions } from '../../instance/process';
import type { LxcContainer } from '../../native/lxc';
import { sys } from '../../native/sys';

const { O_RDWR, O_NOCTTY, O_NONBLOCK } = fsConstants;

/**
 * A terminal master as one duplex stream. Reading it fails with EIO once every process on the
 * terminal has exited: that is the terminal's end of file, not an error, and what was read before
 * it is still there to be read (Node would destroy the stream and drop it).
 * It reads only when asked (as Node's terminals do): a console nobody reads must not hold the
 * event loop. A command's terminal is asked at the command's exit (attachedProcess).
 * Its end reads what the kernel still holds first (readRest): libuv ends the stream at the
 * master's POLLHUP (the other side closed) after a read shorter than asked, which for a socket
 * means nothing is left, but a pty's reads are all short (at most its 4 KiB line buffer) while
 * more waits behind: a command's last output was lost, 1-8 KiB of 300 in 15 of 20 runs under load.
 */
function openTerminal(master: number): TtyStream {
  const terminal = new TtyStream(master, { readable: true, writable: true, readableHighWaterMark: TERMINAL_BUFFER } as never);
  const push = terminal.push.bind(terminal);
  let rest = true;
  terminal.push = ((chunk: unknown, encoding?: BufferEncoding) => {
    if (chunk === null && rest) {
      rest = false;
      for (const b of readRest(master)) push(b);
    }
    return push(chunk, encoding);
  }) as typeof terminal.push;
  const destroy = terminal.destroy.bind(terminal);
  terminal.destroy = ((error?: Error) => {
    if ((error as NodeJS.ErrnoException | undefined)?.code !== 'EIO' || terminal.readableEnded) return destroy(error);
    terminal.once('end', () => destroy());
    terminal.push(null);
    terminal.read(0); // ends it now if nothing is left to read
    return terminal;
  }) as typeof terminal.destroy;
  return terminal;
}

/**
 * What the kernel still holds for the terminal master `fd` at its end, read up to its EIO. Only
 * once the other side has closed (the stream's end comes from that EIO or that POLLHUP): the fd
 * is blocking (libuv leaves a master so), and a read then returns what is left or EIO at once.
 */
function readRest(fd: number): Buffer[] {
  const rest: Buffer[] = [];
  const buffer = Buffer.allocUnsafe(TERMINAL_BUFFER);
  for (;;) {
    let n: number;
    try {
      n = readSync(fd, buffer, 0, buffer.length, null);
    } catch {
      return rest; // EIO: nothing left
    }
    if (n <= 0) return rest;
    rest.push(Buffer.from(buffer.subarray(0, n)));
  }
}

/** What a terminal holds read ahead (its kernel buffer holds less), as a pipe's stream does. */
const TERMINAL_BUFFER = 64 * 1024;

/**
 * Runs `argv` in the container of `h` (the runner's attach, from its saved config) with the
 * instance's `environment.*` (`config`) under `options`; `refuse` turns the runner's refusal into
 * the caller's error. The one way a command starts in a container: the driver's spawn and the
 * CLI's quick path (lib/host/quick.ts).
 */
export async function attachCommand(h: LxcContainer, config: Readonly<Record<string, string>>, argv: string[], options: SpawnOptions, refuse: (e: unknown) => Promise<never>): Promise<InstanceProcess> {
  const env = checkSpawn(argv, options, instanceEnvironment(config));
  const pty = checkPty(options.pty);
  // The runner refuses (ESRCH) unless the container is RUNNING: a frozen one would hold the
  // command until it thaws.
  const fds = await h.attach(argv, env, options.cwd ?? null, options.user ?? 0, options.group ?? options.user ?? 0, pty).catch(refuse);
  return attachedProcess(fds, pty !== null);
}

/** What the runner's attach gives: the command's pid and pidfd, its stdio, and where its exit status comes. */
export type AttachedFds = [pid: number, pidfd: number, stdinFd: number, stdoutFd: number, stderrFd: number, exitChannel: number];

/** An attached command as an InstanceProcess: on a terminal (`pty`, stdin is its master) or on three pipes. */
export function attachedProcess([pid, pidfd, stdinFd, stdoutFd, stderrFd, exitChannel]: AttachedFds, pty: boolean): InstanceProcess {
  let exited = false;
  let ended = () => undefined as void;
  const exit = sys()
    .waitExit(exitChannel, pidfd)
    .then(({ code, signal }) => {
      exited = true;
      ended();
      return { exitCode: code, signal: signal === null ? null : signalName(signal) };
    });
  const kill = (signal: NodeJS.Signals | number = 'SIGTERM') => !exited && sys().signalPidfd(pidfd, signalNumber(signal));
  if (pty) {
    const terminal = openTerminal(stdinFd);
    // Read what is left up to the terminal's end of file, which closes it (as a pipe does), even if nobody reads it.
    ended = () => void terminal.read(0);
    return {
      pid,
      stdin: terminal,
      stdout: terminal,
      stderr: Readable.from([]),
      tty: true,
      kill,
      resize: (cols, rows) => {
        checkWindowSize(cols, rows);
        if (!terminal.destroyed) sys().setWindowSize(stdinFd, cols, rows);
      },
      exit,
    };
  }
  const stdin = new Socket({ fd: stdinFd, readable: false, writable: true });
  // Nothing reads it any more (Node's child_process does the same at a child's exit).
  ended = () => void stdin.destroy();
  return {
    pid,
    stdin,
    stdout: new Socket({ fd: stdoutFd, readable: true, writable: false }),
    stderr: new Socket({ fd: stderrFd, readable: true, writable: false }),
    tty: false,
    kill,
    resize: () => {
      throw new InvalidState('resize needs a process spawned with { pty: true }');
    },
    exit,
  };
}

/**
 * The console from the monitor's proxy: `sock` holds tty 0 until closed, `ptx` is the proxy's
 * pty. The window size is set on the console's own pty too (found in the root of `initPid()`),
 * which is what the container's programs see.
 */
export function consoleEndpoint(sock: number, ptx: number, initPid: () => Promise<number>): ConsoleEndpoint {
  const stream = openTerminal(ptx);
  stream.once('close', () => closeFd(sock, () => undefined));
  return {
    stream,
    resize: async (cols, rows) => {
      checkWindowSize(cols, rows);
      sys().setWindowSize(ptx, cols, rows);
      const pid = await initPid();
      const fd = await sys().openInRoot(`/proc/${pid}/root`, '/dev/console', O_RDWR | O_NOCTTY | O_NONBLOCK, 0);
      try {
        sys().setWindowSize(fd, cols, rows);
      } finally {
        closeFd(fd, () => undefined);
      }
    },
  };
}
