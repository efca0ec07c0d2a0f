/**
 * Copies of a root filesystem. GNU cp, in a child process (the event loop never waits on the
 * copy), keeps what a root filesystem needs and Node's fs.cp does not: ownership as stored
 * (shifted ids of an unprivileged container included), modes with set-id bits, times, hard
 * links, device nodes, fifos, sockets, sparse files (holes found with SEEK_HOLE), every xattr
 * (security.capability and POSIX ACLs among them, set after the chown that would clear them),
 * and reflinks (FICLONE) where the filesystem offers them, a plain copy elsewhere.
 */
import { run } from './run';

/** Copies the tree `src` (a directory) to `dst`, which must not exist. */
export async function copyTree(src: string, dst: string): Promise<void> {
  await run('cp', ['-a', '--reflink=auto', '--sparse=auto', '--no-target-directory', '--', src, dst]);
}

/** Bytes the tree occupies on disk (hard links counted once, holes not at all). */
export async function diskUsage(target: string): Promise<number> {
  const { stdout } = await run('du', ['-s', '-B1', '--', target]);
  return Number(stdout.split('\t')[0]) || 0;
}
