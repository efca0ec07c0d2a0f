/**
 * A watch on a container start for liblxc 5.0.2's one hang: when the container's first process
 * dies while it and its monitor still talk over their sync socket (say a `security.syscalls.deny`
 * that kills it at the `sendmsg` liblxc makes after loading the filter), the monitor blocks in a
 * read for ever, never reaps it, and the start never returns. Seen from outside: the monitor's
 * child stays a zombie. The watch then kills the monitor, so the start fails (its handler reads
 * the end of the socket), and removes the payload cgroups the dead child was in, which nothing
 * else would.
 */
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

/** How long the monitor's child must stay a zombie: a monitor reaps a child that ends normally at once, even under load. */
const ZOMBIE_FOR_MS = 3_000;
const EVERY_MS = 500;
/** A start that ends before this is never looked at: most do, and the look has a cost. */
const FIRST_LOOK_MS = 2_000;
const CGROUPS = '/sys/fs/cgroup';

export interface StartWatch {
  /** Ends the watch; says whether it killed the monitor (the start's failure is then its doing). */
  stop(): Promise<boolean>;
}

/** Watches the start of container `name` under `lxcpath` until `stop`. */
export function watchStart(lxcpath: string, name: string): StartWatch {
  let killed = false;
  const title = `[lxc monitor] ${lxcpath} ${name}`;
  const stop = new AbortController();
  const loop = (async () => {
    let zombie: { pid: number; since: number } | undefined;
    await sleep(FIRST_LOOK_MS - EVERY_MS, undefined, { signal: stop.signal });
    for (;;) {
      await sleep(EVERY_MS, undefined, { signal: stop.signal });
      const monitor = await findMonitor(name, title);
      const child = monitor === null ? null : await zombieChild(monitor);
      if (monitor === null || child === null) {
        zombie = undefined;
        continue;
      }
      if (zombie?.pid !== child) zombie = { pid: child, since: Date.now() };
      if (Date.now() - zombie.since < ZOMBIE_FOR_MS) continue;
      const payload = await payloadCgroups(monitor);
      killed = true;
      process.kill(monitor, 'SIGKILL');
      await removeCgroups(payload);
      return;
    }
  })().catch(() => undefined);
  return {
    async stop() {
      stop.abort();
      await loop;
      return killed;
    },
  };
}

/** The monitor among the processes of the `lxc.monitor.NAME` cgroups (their names lack the lxcpath: its title has it). */
async function findMonitor(name: string, title: string): Promise<number | null> {
  const pattern = new RegExp(`^lxc\\.monitor\\.${name.replace(/[.]/g, '\\.')}(-\\d+)?$`);
  const root = await oneHierarchy();
  for (const d of await fs.readdir(root).catch(() => [] as string[])) {
    if (!pattern.test(d)) continue;
    const procs = (await fs.readFile(path.join(root, d, 'cgroup.procs'), 'utf8').catch(() => '')).split('\n').filter(Boolean);
    for (const pid of procs) {
      // liblxc writes the title over its argv; what follows it is padding.
      const cmdline = await fs.readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
      if (cmdline.replace(/\0+$/, '') === title || cmdline.startsWith(`${title}\0`)) return Number(pid);
    }
  }
  return null;
}

/** A hierarchy that holds every process: cgroup v2's (alone or beside v1), else v1's pids. */
async function oneHierarchy(): Promise<string> {
  if (await exists(path.join(CGROUPS, 'cgroup.procs'))) return CGROUPS;
  return (await isDir(path.join(CGROUPS, 'unified'))) ? path.join(CGROUPS, 'unified') : path.join(CGROUPS, 'pids');
}

/** The monitor's child (the container's first process) if it is a zombie. */
async function zombieChild(monitor: number): Promise<number | null> {
  const children = (await fs.readFile(`/proc/${monitor}/task/${monitor}/children`, 'utf8').catch(() => '')).trim().split(/\s+/).filter(Boolean);
  for (const pid of children) {
    const stat = await fs.readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '');
    if (stat.slice(stat.lastIndexOf(')') + 2).startsWith('Z')) return Number(pid);
  }
  return null;
}

/**
 * The payload cgroups of the monitor's container, in every mounted hierarchy (v1 and v2): the
 * monitor's own with `lxc.payload.` for `lxc.monitor.` (liblxc gives both the same suffix). A
 * zombie's own /proc/PID/cgroup no longer names them.
 */
async function payloadCgroups(monitor: number): Promise<string[]> {
  const lines = (await fs.readFile(`/proc/${monitor}/cgroup`, 'utf8').catch(() => '')).trim().split('\n');
  const dirs: string[] = [];
  for (const line of lines) {
    const [id, controllers, rel] = line.split(':');
    const at = rel?.indexOf('/lxc.monitor.') ?? -1;
    if (at < 0) continue;
    const payload = `${rel.slice(0, at)}/lxc.payload.${rel.slice(at + '/lxc.monitor.'.length)}`;
    const hierarchy = id === '0' ? ((await isDir('/sys/fs/cgroup/unified')) ? 'unified' : '') : controllers.replace(/^name=/, '');
    dirs.push(path.join(CGROUPS, hierarchy, payload));
  }
  return dirs;
}

const isDir = (p: string) => fs.stat(p).then((s) => s.isDirectory(), () => false);
const exists = (p: string) => fs.access(p).then(() => true, () => false);

/** Each directory and the empty ones under it, deepest first (rmdir refuses a cgroup with processes). */
async function removeCgroups(dirs: string[]): Promise<void> {
  const deadline = Date.now() + 3_000;
  for (const dir of dirs) {
    for (;;) {
      if (await rmTree(dir)) break;
      if (Date.now() > deadline) break;
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}

async function rmTree(dir: string): Promise<boolean> {
  const entries = await fs.readdir(dir, { withFileTypes: true }).catch(() => null);
  if (entries === null) return true;
  for (const e of entries) if (e.isDirectory()) await rmTree(path.join(dir, e.name));
  return fs.rmdir(dir).then(
    () => true,
    (e: NodeJS.ErrnoException) => e.code === 'ENOENT',
  );
}
