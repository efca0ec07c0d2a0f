/** Helpers of the image builds: host tools (run and execFileP, bound to this process: lib/core/run), digests. */
import { createHash } from 'node:crypto';

export { execHelper as execFileP } from '../core/run';

export { run } from '../core/run';

export function sha256(b: Buffer | string): string {
  return createHash('sha256').update(b).digest('hex');
}
