/**
 * Copies of a root filesystem. GNU cp, in a child process (the event loop never waits on the
 * copy), keeps what a root filesystem needs and Node's fs.cp does not: ownership as stored
 * (shifted ids of an unprivileged container included), modes with set-id bits, times, hard
 * links, device nodes, fifos, sockets, sparse files (holes found with SEEK_HOLE), every xattr
 * (security.capability and POSIX ACLs among them, set after the chown that would clear them),
 * and reflinks (FICLONE) where the filesystem offers them, a plain copy elsewhere.
 */
import { promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import { run } from '../core/run';

/** Copies the tree `src` (a directory) to `dst`, which must not exist. */
export async function copyTree(src: string, dst: string): Promise<void> {
  await run('cp', ['-a', '--reflink=auto', '--sparse=auto', '--no-target-directory', '--', src, dst]);
}

/** Bytes the tree occupies on disk (hard links counted once, holes not at all); with `oneFileSystem`, not below mount points (an overlay's merged root). */
export async function diskUsage(target: string, oneFileSystem = false): Promise<number> {
  const stdout = await run('du', ['-s', '-B1', ...(oneFileSystem ? ['-x'] : []), '--', target]);
  return Number(stdout.split('\t')[0]) || 0;
}

/**
 * Copies an image's root filesystem into a new container with every uid/gid shifted by `shift`
 * (the base of an unprivileged container's id map): `copyTree`, then the ids moved in place, each
 * inode once (hard links stay links). chown clears file capabilities and set-id bits, so the
 * capabilities are saved first (`getfattr`) and restored after (`setfattr`), and the modes set
 * again. Device nodes are dropped: the container's init makes /dev (lxc.autodev), and a node in an
 * image is not for a container to open.
 */
export async function copyTreeShifted(src: string, dst: string, shift: number): Promise<void> {
  await copyTreeThrough(src, dst, shift === 0 ? undefined : { uid: (id) => id + shift, gid: (id) => id + shift });
}

/** Host uids and gids moved from one map of a container's to another (the same inside ids). */
export interface IdMapper {
  uid(id: number): number;
  gid(id: number): number;
}

/** The uid/gid nobody has on Debian: what an id outside a container's map becomes in an image. */
export const OVERFLOW_ID = 65534;

/**
 * The reverse of copyTreeShifted, for an image made of an unprivileged container (publish): ids
 * of the container's range `[base, base + size)` go back to 0-based; an id outside it (a host
 * file the container saw as nobody) becomes nobody, as the container saw it.
 */
export async function copyTreeUnshifted(src: string, dst: string, map: { base: number; size: number } | null): Promise<void> {
  const back = (id: number) => (id >= map!.base && id < map!.base + map!.size ? id - map!.base : OVERFLOW_ID);
  await copyTreeThrough(src, dst, map ? { uid: back, gid: back } : undefined);
}

/** copyTreeShifted through any id mapper (an image seen through a container's whole map, raw.idmap's extents included). */
export async function copyTreeThrough(src: string, dst: string, ids: IdMapper | undefined): Promise<void> {
  await fs.mkdir(dst, { mode: 0o700 }); // EEXIST: never a copy into something already there
  await copyTree(src, dst);
  await mapTreeIds(dst, ids, true);
}

/**
 * Moves a container's tree from its id range `from` to `to`, in place (an imported container
 * given a range of its own): an id outside `from` (a host file the container saw as nobody)
 * becomes nobody, as the container saw it.
 */
export async function remapTree(dir: string, from: { base: number; size: number }, to: { base: number; size: number }): Promise<void> {
  const move = (id: number) => (id >= from.base && id < from.base + Math.min(from.size, to.size) ? id - from.base + to.base : OVERFLOW_ID);
  await remapTreeWith(dir, { uid: move, gid: move });
}

/** Moves a container's tree in place through `ids` (a copy into a range of its own, a raw.idmap change); device nodes (whiteouts) kept. */
export async function remapTreeWith(dir: string, ids: IdMapper): Promise<void> {
  await mapTreeIds(dir, ids, false);
}

/**
 * Changes every id in `dst` through `mapId`, keeping file capabilities (which a chown clears) and
 * modes. A namespaced (v3) capability's root id is moved too, as LXD's shifting does: it names
 * the host id of the root of the namespace it applies in, which moves with the tree. So are the
 * named users and groups of POSIX ACLs (access, and directories' default ACLs), as LXD's shift
 * rewrites them: they hold host ids, which a chown leaves as they were.
 */
async function mapTreeIds(dst: string, ids: IdMapper | undefined, dropDevices: boolean): Promise<void> {
  const dump = path.join(await fs.mkdtemp(path.join(os.tmpdir(), 'lxq-caps-')), 'caps');
  try {
    const match = ids ? '--match=^(security\\.capability|system\\.posix_acl_(access|default))$' : '--match=^security\\.capability$';
    const stdout = await run('getfattr', ['--recursive', '--physical', '--no-dereference', '--absolute-names', '--dump', '--encoding=hex', match, '--', dst]);
    await shiftIds(dst, ids, new Set(), dropDevices);
    if (stdout.trim()) {
      await fs.writeFile(dump, ids ? stdout.replace(/^(security\.capability|system\.posix_acl_access|system\.posix_acl_default)=0x([0-9a-f]+)$/gm, (_all, key: string, hex: string) => `${key}=0x${key === 'security.capability' ? mapCapRoot(hex, ids.uid) : mapAcl(hex, ids)}`) : stdout);
      await run('setfattr', ['--no-dereference', `--restore=${dump}`]);
    }
  } finally {
    await fs.rm(path.dirname(dump), { recursive: true, force: true });
  }
}

/** vfs_ns_cap_data: magic_etc (revision in the top byte), two 32-bit permitted/inheritable pairs, the root id; little-endian. */
const VFS_CAP_REVISION_3 = 0x03000000;
const VFS_CAP_V3_SIZE = 24;

/** A security.capability value (hex) with a v3 root id moved through `mapId`; v1/v2 (no root id) as they are. */
function mapCapRoot(hex: string, mapId: (id: number) => number): string {
  const cap = Buffer.from(hex, 'hex');
  if (cap.length !== VFS_CAP_V3_SIZE || (cap.readUInt32LE(0) & 0xff000000) >>> 0 !== VFS_CAP_REVISION_3) return hex;
  cap.writeUInt32LE(mapId(cap.readUInt32LE(20)), 20);
  return cap.toString('hex');
}

/** posix_acl_xattr: a 4-byte version header, then 8-byte entries (tag u16, perm u16, id u32), little-endian. */
const ACL_USER = 0x02;
const ACL_GROUP = 0x08;

/** A POSIX ACL xattr value (hex) with its named users' and groups' ids moved through `ids`; one of another layout as it is. */
function mapAcl(hex: string, ids: IdMapper): string {
  const acl = Buffer.from(hex, 'hex');
  if (acl.length < 4 || (acl.length - 4) % 8 !== 0) return hex;
  for (let at = 4; at < acl.length; at += 8) {
    const tag = acl.readUInt16LE(at);
    if (tag === ACL_USER) acl.writeUInt32LE(ids.uid(acl.readUInt32LE(at + 4)), at + 4);
    else if (tag === ACL_GROUP) acl.writeUInt32LE(ids.gid(acl.readUInt32LE(at + 4)), at + 4);
  }
  return acl.toString('hex');
}

async function shiftIds(p: string, ids: IdMapper | undefined, seen: Set<number>, dropDevices: boolean): Promise<void> {
  const st = await fs.lstat(p, { bigint: false });
  if (dropDevices && (st.isBlockDevice() || st.isCharacterDevice())) return fs.rm(p);
  if (st.nlink > 1 && !st.isDirectory()) {
    if (seen.has(st.ino)) return;
    seen.add(st.ino);
  }
  if (ids) {
    await fs.lchown(p, ids.uid(st.uid), ids.gid(st.gid));
    if (!st.isSymbolicLink()) await fs.chmod(p, st.mode & 0o7777);
  }
  if (st.isDirectory()) {
    const entries = await fs.readdir(p);
    // In batches: a whole tree at once would open more files than the process may.
    for (let i = 0; i < entries.length; i += 64) await Promise.all(entries.slice(i, i + 64).map((e) => shiftIds(path.join(p, e), ids, seen, dropDevices)));
  }
}
