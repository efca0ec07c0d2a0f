/** Running a host tool off the event loop, with its own error output in the failure. */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';

import { OperationFailed } from '../errors';

const execFileP = promisify(execFile);

/** Runs `cmd`; its stdout, or OperationFailed with the last lines of its stderr. */
export async function run(cmd: string, args: string[], options: { cwd?: string; maxBuffer?: number } = {}): Promise<string> {
  try {
    const { stdout } = await execFileP(cmd, args, { cwd: options.cwd, maxBuffer: options.maxBuffer ?? 64 * 1024 * 1024, encoding: 'utf8' });
    return stdout;
  } catch (e) {
    const err = e as NodeJS.ErrnoException & { stderr?: string; code?: string | number };
    const hint = err.code === 'ENOENT' ? ` (is ${cmd} installed?)` : '';
    const stderr = String(err.stderr ?? '').trim().split('\n').slice(-5).join('\n');
    throw new OperationFailed(`${cmd} ${args.join(' ')} failed${hint}: ${stderr || err.message}`, { call: cmd, log: stderr }, { cause: e });
  }
}
