/** Helpers of the image builds: host tools (run, shared with lib/storage), digests. */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { promisify } from 'node:util';

export const execFileP = promisify(execFile);

export { run } from '../util/run';

export function sha256(b: Buffer | string): string {
  return createHash('sha256').update(b).digest('hex');
}
