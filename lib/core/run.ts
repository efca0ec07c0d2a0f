/**
 * Running host tools (cp, tar, qemu-img, mmdebstrap…) off the event loop, with their own error
 * output in the failure. Every helper is started through `setpriv --pdeathsig KILL`: it dies with
 * the Node process that started it (a killed process leaves no `cp` finishing a copy, no `tar`
 * writing into a directory the next process clears). PR_SET_PDEATHSIG follows the thread that
 * forked; libuv forks from the thread that calls spawn (the main thread), so it holds for the
 * process's life. Daemons meant to outlive the process (QEMU, virtiofsd, dnsmasq) are spawned
 * directly, never through here.
 */
import { type ChildProcess, type ExecFileOptions, execFile, spawn, type SpawnOptions } from 'node:child_process';

import { joinOperation } from './abort';
import { NoSpace, OperationFailed } from './errors';

const SETPRIV = '/usr/bin/setpriv';

/** The argv that runs `cmd args…` so that it is killed when this process dies. */
export function boundArgv(cmd: string, args: readonly string[]): [string, string[]] {
  return [SETPRIV, ['--pdeathsig', 'KILL', '--', cmd, ...args]];
}

/**
 * The argv that runs `cmd args…` in a process group of its own (spawn it `detached`) that is
 * killed whole when this process dies: for helpers with children of their own (mmdebstrap's apt
 * and dpkg), which a signal to the helper alone would leave running. Standard input is passed on.
 */
export function boundGroupArgv(cmd: string, args: readonly string[]): [string, string[]] {
  const script = 'trap "trap - TERM; kill -KILL 0" TERM; "$@" <&0 & wait $!; s=$?; exit $s';
  return [SETPRIV, ['--pdeathsig', 'TERM', '--', 'sh', '-c', script, 'sh', cmd, ...args]];
}

/** setpriv could not start the command: the ENOENT spawn would have given. */
function notStarted(cmd: string, stderr: unknown): boolean {
  return String(stderr ?? '').startsWith(`setpriv: failed to execute ${cmd}:`);
}

type Output<E> = E extends 'buffer' ? Buffer : string;

/** execFile of a helper bound to this process (see boundArgv); errors as execFile's (ENOENT for a missing command). */
export function execHelper<E extends BufferEncoding | 'buffer' = 'utf8'>(
  cmd: string,
  args: readonly string[],
  options: Omit<ExecFileOptions, 'encoding'> & { encoding?: E } = {},
): Promise<{ stdout: Output<E>; stderr: Output<E> }> {
  const [file, argv] = boundArgv(cmd, args);
  return new Promise((resolve, reject) => {
    const child = execFile(file, argv, { maxBuffer: 64 * 1024 * 1024, ...options, encoding: options.encoding ?? 'utf8' } as ExecFileOptions & { encoding: BufferEncoding }, (error, stdout, stderr) => {
      if (!error) return resolve({ stdout: stdout as Output<E>, stderr: stderr as Output<E> });
      const e = error as NodeJS.ErrnoException & { stdout?: unknown; stderr?: unknown; cmd?: string };
      if (e.code === (127 as never) && notStarted(cmd, stderr)) {
        const missing = Object.assign(new Error(`spawn ${cmd} ENOENT`), { code: 'ENOENT', errno: -2, syscall: `spawn ${cmd}`, path: cmd, spawnargs: [...args], stdout, stderr });
        return reject(missing);
      }
      e.cmd = [cmd, ...args].join(' ');
      e.message = e.message.replace(`${file} ${argv.slice(0, argv.length - args.length - 1).join(' ')} `, '');
      reject(Object.assign(e, { stdout, stderr }));
    });
    // Killed if the long operation it serves is aborted, counted by its progress (lib/core/abort.ts).
    joinOperation(child);
  });
}

/** spawn of a helper bound to this process (`group`: with its children, see boundGroupArgv). */
export function spawnHelper(cmd: string, args: readonly string[], options: SpawnOptions & { group?: boolean } = {}): ChildProcess {
  const { group, ...rest } = options;
  const [file, argv] = group ? boundGroupArgv(cmd, args) : boundArgv(cmd, args);
  const child = spawn(file, argv, group ? { ...rest, detached: true } : rest);
  joinOperation(child, group);
  return child;
}

/** The path a "No space left on device" line of a tool's stderr names (cp, tar, qemu-img, mkfs), if any. */
function noSpacePath(stderr: string): string | undefined {
  const line = stderr.split('\n').find((l) => /No space left on device|ENOSPC/.test(l));
  if (line === undefined) return undefined;
  // The last path quoted is the one written ("cp: error copying 'from' to 'to': …").
  const quoted = [...line.matchAll(/['‘"]([^'’"]+)['’"]/g)].map((m) => m[1]);
  return quoted.pop() ?? /^[\w.-]+: (\/[^:]+):/.exec(line)?.[1] ?? '';
}

/**
 * A helper's failure as lxq's error: NoSpace when it ran out of space (naming the path it was
 * writing and the filesystem's room left), OperationFailed with the last lines of its stderr
 * otherwise.
 */
export function helperFailure(cmd: string, args: readonly string[], e: unknown): OperationFailed | NoSpace {
  const err = e as NodeJS.ErrnoException & { stderr?: string; code?: string | number };
  const stderr = String(err.stderr ?? '').trim().split('\n').slice(-5).join('\n');
  const full = `${cmd} ${args.join(' ')}`;
  const where = err.code === 'ENOSPC' ? (err.path ?? '') : noSpacePath(String(err.stderr ?? ''));
  if (where !== undefined) {
    return new NoSpace(`no space left on the device${where ? ` writing ${where}` : ''} (${full.slice(0, 200)}): ${stderr || err.message}`, where || undefined, { cause: e });
  }
  const hint = err.code === 'ENOENT' ? ` (is ${cmd} installed?)` : '';
  return new OperationFailed(`${full} failed${hint}: ${stderr || err.message}`, { call: cmd, log: stderr }, { cause: e });
}

/** A Node fs error ENOSPC as NoSpace naming its path; anything else as it is. */
export function noSpaceOr(e: unknown): unknown {
  const err = e as NodeJS.ErrnoException;
  if (err?.code !== 'ENOSPC') return e;
  return new NoSpace(`no space left on the device${err.path ? ` writing ${err.path}` : ''}: ${err.message}`, err.path, { cause: e });
}

/** Runs `cmd` (bound to this process); its stdout, or OperationFailed with the last lines of its stderr (NoSpace when out of space). */
export async function run(cmd: string, args: string[], options: { cwd?: string; maxBuffer?: number } = {}): Promise<string> {
  try {
    const { stdout } = await execHelper(cmd, args, { cwd: options.cwd, maxBuffer: options.maxBuffer ?? 64 * 1024 * 1024 });
    return stdout;
  } catch (e) {
    throw helperFailure(cmd, args, e);
  }
}
