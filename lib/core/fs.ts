import { promises as fs } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import * as path from 'node:path';

/**
 * Writes a host file so that readers see the old or the new content, never a part: `fill`
 * writes a temporary file beside it, which is synced and renamed over the target.
 */
export async function replaceFile(file: string, mode: number, fill: (handle: FileHandle) => Promise<void>): Promise<void> {
  // node:crypto (OpenSSL's start-up) only when a file is written: a command that only reads (`lxq list`) never loads it.
  // eslint-disable-next-line @typescript-eslint/no-require-imports -- see above
  const { randomBytes } = require('node:crypto') as typeof import('node:crypto');
  const tmp = path.join(path.dirname(file), `.${path.basename(file)}.${randomBytes(6).toString('hex')}.tmp`);
  const handle = await fs.open(tmp, 'wx', mode);
  try {
    try {
      await fill(handle);
      await handle.sync();
    } finally {
      await handle.close();
    }
    await fs.rename(tmp, file);
  } catch (e) {
    await fs.rm(tmp, { force: true });
    throw e;
  }
}

export async function writeFileAtomic(file: string, data: string | Buffer, mode = 0o644): Promise<void> {
  await replaceFile(file, mode, (handle) => handle.writeFile(data));
}

export async function writeJsonAtomic(file: string, value: unknown): Promise<void> {
  await writeFileAtomic(file, JSON.stringify(value, null, 2) + '\n');
}

export async function readJson<T>(file: string): Promise<T> {
  return JSON.parse(await fs.readFile(file, 'utf8')) as T;
}

export async function exists(p: string): Promise<boolean> {
  try {
    await fs.lstat(p);
    return true;
  } catch {
    return false;
  }
}

