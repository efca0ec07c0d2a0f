import { randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import * as path from 'node:path';

/**
 * Writes a host file so that readers see the old or the new content, never a part: `fill`
 * writes a temporary file beside it, which is synced and renamed over the target.
 */
export async function replaceFile(file: string, mode: number, fill: (handle: FileHandle) => Promise<void>): Promise<void> {
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

/**
 * Copies a tree, preserving modes, symlinks and times, with every uid/gid shifted by `shift`
 * (the base of an unprivileged container's id map). Regular files are cloned where the
 * filesystem allows it.
 */
export async function copyTreeShifted(src: string, dst: string, shift: number): Promise<void> {
  const st = await fs.lstat(src);
  if (st.isDirectory()) {
    await fs.mkdir(dst, { mode: 0o700 });
    const entries = await fs.readdir(src);
    await Promise.all(entries.map((e) => copyTreeShifted(path.join(src, e), path.join(dst, e), shift)));
  } else if (st.isSymbolicLink()) {
    await fs.symlink(await fs.readlink(src), dst);
  } else if (st.isFile()) {
    await fs.copyFile(src, dst, fs.constants.COPYFILE_FICLONE);
  } else {
    return; // device nodes, fifos and sockets are made by the container's init (lxc.autodev)
  }
  await fs.lchown(dst, st.uid + shift, st.gid + shift);
  if (st.isSymbolicLink()) return;
  await fs.chmod(dst, st.mode & 0o7777); // after chown, which clears set-id bits
  await fs.utimes(dst, st.atime, st.mtime);
}
