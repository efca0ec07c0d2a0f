/**
 * The virtual filesystems mounted inside an instance (procfs, sysfs, devpts, cgroups…), which a
 * tree pull archives as empty directories instead of walking: their files are the kernel's view
 * of the instance, not its data (/proc alone holds every process's tree, and some of its files
 * never end). `tar --one-file-system` and backup tools do the same; LXD's `lxc file pull -r /`
 * walks into them.
 */
import type { InstanceFiles } from './files';

/** Kernel filesystems whose content is generated: never data to archive. */
const VIRTUAL_TYPES = new Set([
  'proc', 'sysfs', 'devtmpfs', 'devpts', 'cgroup', 'cgroup2', 'securityfs', 'debugfs', 'tracefs', 'configfs', 'fusectl',
  'pstore', 'bpf', 'mqueue', 'binfmt_misc', 'efivarfs', 'hugetlbfs', 'autofs', 'rpc_pipefs', 'nsfs', 'selinuxfs', 'fuse.lxcfs',
]);

/** A mount point's path as mountinfo escapes it (space, tab, newline, backslash as \ooo). */
function unescape(p: string): string {
  return p.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
}

/**
 * The mount points of virtual filesystems in `mountinfo` (proc(5)'s format, as init's root sees
 * them), and a tmpfs at /dev (liblxc's and LXD's autodev: device nodes and links to /proc).
 */
export function virtualMountPoints(mountinfo: string): Set<string> {
  const out = new Set<string>();
  for (const line of mountinfo.split('\n')) {
    const [left, right] = line.split(' - ');
    if (!right) continue;
    const point = unescape(left.split(' ')[4] ?? '');
    const type = right.split(' ')[0];
    if (point.startsWith('/') && (VIRTUAL_TYPES.has(type) || (type === 'tmpfs' && point === '/dev'))) out.add(point);
  }
  return out;
}

/** The virtual mount points of a running instance (its init's mountinfo); none when it cannot be read (a stopped container's root has nothing mounted). */
export async function virtualMounts(files: Pick<InstanceFiles, 'read'>): Promise<Set<string>> {
  const mountinfo = await files.read('/proc/1/mountinfo').catch(() => undefined);
  return mountinfo ? virtualMountPoints(mountinfo.toString('utf8')) : new Set();
}
