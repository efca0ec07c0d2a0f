/** Child processes of the storage layer: off the event loop, failures as OperationFailed with the tool's own words. */
import { execFile } from 'node:child_process';

import { OperationFailed } from '../errors';

export interface RunResult {
  stdout: string;
  stderr: string;
}

export function run(cmd: string, args: string[], options: { cwd?: string } = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { cwd: options.cwd, maxBuffer: 64 * 1024 * 1024, encoding: 'utf8' }, (error, stdout, stderr) => {
      if (!error) return resolve({ stdout, stderr });
      const err = error as NodeJS.ErrnoException;
      const hint = err.code === 'ENOENT' ? ` (is ${cmd} installed?)` : '';
      const said = String(stderr ?? '').trim().split('\n').slice(-5).join('\n');
      reject(new OperationFailed(`${cmd} ${args.join(' ')} failed${hint}: ${said || err.message}`, { call: cmd, log: said }, { cause: error }));
    });
  });
}
