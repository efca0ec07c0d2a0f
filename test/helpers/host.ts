/**
 * Each test file gets its own Host in a temporary directory and unique instance names; `dispose`
 * force-deletes whatever the tests left (instances, then networks; also after a failure) and
 * removes the directory.
 * Built images are shared between test files (they are read-only for instances).
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import { Host, type Instance, LxqError } from '../../lib';
import type { ExecResult } from '../../lib/instance/process';

export const SHARED_IMAGES = process.env.LXQ_TEST_IMAGES ?? '/var/tmp/lxq-test-images';

/** Node's arguments that run `lxq --host <hostDir>` from the sources, as a user runs the CLI. */
export function lxqArgv(hostDir: string): string[] {
  return ['-r', path.join(__dirname, 'ts-register.js'), path.join(__dirname, '..', '..', 'lib', 'cli', 'main.ts'), '--host', hostDir, '--images', SHARED_IMAGES];
}

/** A finished process: its exit code and what it printed. */
export interface CliRun {
  code: number;
  stdout: string;
  stderr: string;
}

/** `node ARGV` (e.g. lxqArgv's) with `input` on stdin. */
export function runNode(argv: string[], input = '', env: NodeJS.ProcessEnv = process.env): Promise<CliRun> {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, argv, { env, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d) => (stdout += d));
    p.stderr.on('data', (d) => (stderr += d));
    p.stdin.on('error', () => undefined); // a command that exits before reading its input
    p.stdin.end(input);
    p.on('error', reject);
    p.on('close', (code) => resolve({ code: code ?? -1, stdout, stderr }));
  });
}

export interface TestHost {
  host: Host;
  dir: string;
  /** A name no other test (or earlier run) uses. */
  name(prefix?: string): string;
  dispose(): Promise<void>;
}

export async function tempHost(): Promise<TestHost> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'lxq-test-'));
  const host = await Host.open({ path: dir, images: SHARED_IMAGES });
  const tag = randomBytes(3).toString('hex');
  let n = 0;
  return {
    host,
    dir,
    name: (prefix = 't') => `${prefix}-${tag}-${n++}`,
    async dispose() {
      for (const i of await host.list().catch(() => [])) await i.delete({ force: true }).catch(() => undefined);
      // The networks' parts (bridge, dnsmasq, nftables) live outside the directory: they go first.
      for (const n of await host.networks.list().catch(() => [])) await host.networks.delete(n.name).catch(() => undefined);
      // A host with event listeners keeps the process alive until closed (as a socket would).
      await host.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/**
 * The set-up most test files share: their own host (tempHost) with `images` built, made before
 * the file's tests (or a describe's, if called there) and disposed after them, `tearDown` first
 * (what the file made outside the host's instances). Its fields are read once the host is made.
 */
export function hostPerFile(options: { images?: readonly string[]; setUp?: (t: TestHost) => Promise<unknown>; tearDown?: (t: TestHost) => Promise<unknown> } = {}): TestHost {
  let made: TestHost | undefined;
  const get = (): TestHost => {
    if (!made) throw new Error("the test file's host is made in its beforeAll");
    return made;
  };
  beforeAll(async () => {
    made = await tempHost();
    for (const image of options.images ?? ['busybox']) await made.host.images.ensure(image);
    await options.setUp?.(made);
  }, 300_000);
  afterAll(async () => {
    if (!made) return;
    try {
      await options.tearDown?.(made);
    } finally {
      await made.dispose();
    }
  }, 180_000);
  return {
    get host() {
      return get().host;
    },
    get dir() {
      return get().dir;
    },
    name: (prefix) => get().name(prefix),
    dispose: () => get().dispose(),
  };
}

/** lxc.monitor.* cgroups anywhere under /sys/fs/cgroup (there must be none left by lxq). */
export function monitorCgroups(): string[] {
  const out: string[] = [];
  for (const h of readdirSync('/sys/fs/cgroup')) {
    try {
      for (const d of readdirSync(path.join('/sys/fs/cgroup', h))) if (d.startsWith('lxc.monitor.')) out.push(`${h}/${d}`);
    } catch {
      /* not a directory */
    }
  }
  return out;
}

/** An exec's result with its output as text, for comparing whole results. */
export function execText(r: ExecResult): { exitCode: number | null; stdout: string; stderr: string } {
  return { exitCode: r.exitCode, stdout: r.stdout.toString(), stderr: r.stderr.toString() };
}

/** The error `p` rejects with (fails the test if it resolves), for checking its type and fields. */
export async function thrown(p: Promise<unknown>): Promise<LxqError> {
  try {
    await p;
  } catch (e) {
    return e as LxqError;
  }
  throw new Error('expected a rejection');
}

/** `sh -c SCRIPT` in the instance: its exit code, stdout and stderr as text. */
export async function sh(i: Instance, script: string, timeout = 120_000): Promise<{ code: number | null; out: string; err: string }> {
  const r = await i.exec(['sh', '-c', script], { timeout });
  return { code: r.exitCode, out: r.stdout.toString(), err: r.stderr.toString() };
}

/** How many pidfds process `pid` holds (to see that a process leaves none behind). */
export function pidfdCount(pid: number): number {
  let n = 0;
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      if (readlinkSync(`/proc/${pid}/fd/${fd}`).endsWith('[pidfd]')) n++;
    } catch {
      /* closed meanwhile */
    }
  }
  return n;
}

/** The pid of this process's lxq_runner (liblxc's start and attach calls), or undefined. */
export function runnerPid(): number | undefined {
  for (const p of readdirSync('/proc')) {
    if (!/^\d+$/.test(p)) continue;
    try {
      const stat = readFileSync(`/proc/${p}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid === process.pid && readFileSync(`/proc/${p}/comm`, 'utf8').trim() === 'lxq_runner') return Number(p);
    } catch {
      /* gone meanwhile */
    }
  }
  return undefined;
}
