/** Runs an example as users run it: a Node process of its own, on a temp host of its own, removed after. */
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';

import { SHARED_IMAGES } from './host';

const execFileP = promisify(execFile);

export async function runExample(file: string): Promise<string> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'lxq-example-host-'));
  try {
    const { stdout } = await execFileP(process.execPath, ['-r', path.join(__dirname, 'ts-register.js'), path.join(__dirname, '..', '..', 'examples', file)], {
      env: { ...process.env, LXQ_HOST: dir, LXQ_IMAGES: SHARED_IMAGES },
      timeout: 180_000,
    });
    return stdout;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
