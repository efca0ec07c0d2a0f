/** Helpers of the image builds: host tools (run and execFileP, bound to this process: lib/util/run), digests. */
import { createHash } from 'node:crypto';

export { execHelper as execFileP } from '../util/run';

export { run } from '../util/run';

export function sha256(b: Buffer | string): string {
  return createHash('sha256').update(b).digest('hex');
}
