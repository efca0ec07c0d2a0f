/**
 * A Node process killed (SIGKILL) in the middle of an operation: a snapshot, copy or export of a
 * running container does not leave it frozen (the next process to open the host thaws it), a
 * create leaves the whole instance or none (list, get and create agree), its helper processes
 * (cp, tar, zstd) die with it, and its partial output is gone after the next Host.open. Also: a
 * full disk is NoSpace, and freeze holds under CPU load.
 */
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import { AlreadyExists, Host, Instance, NoSpace, NotFound } from '../lib';
import { FREEZE_MARK } from '../lib/storage/freeze-mark';
import { SHARED_IMAGES, tempHost, TestHost, thrown } from './helpers/host';

jest.setTimeout(300_000);

const LIB = path.resolve(__dirname, '..', 'lib');
const BIG_MB = 512;

let t: TestHost;
let big: Instance;
const bigDir = () => path.join(t.host.instancesDir, big.name);

beforeAll(async () => {
  t = await tempHost();
  big = await t.host.create(t.name('big'), { image: 'busybox' });
  // A rootfs whose copy takes long enough to be killed in the middle of.
  execFileSync('dd', ['if=/dev/zero', `of=${path.join(bigDir(), 'rootfs', 'big')}`, 'bs=1M', `count=${BIG_MB}`, 'status=none']);
  await big.start();
});
afterAll(async () => {
  await t?.dispose();
});

interface Proc {
  pid: number;
  ppid: number;
  comm: string;
  state: string;
  cmdline: string;
}

function proc(pid: number): Proc | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').join(' ');
    return { pid, ppid: Number(rest[1]), comm: stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')')), state: rest[0], cmdline };
  } catch {
    return undefined;
  }
}

/** Every process descended from `root` (not the runner: it has its own way out). */
function descendants(root: number): Proc[] {
  const all = readdirSync('/proc')
    .filter((n) => /^\d+$/.test(n))
    .map((n) => proc(Number(n)))
    .filter((p): p is Proc => p !== undefined);
  const out: Proc[] = [];
  const walk = (pid: number) => {
    for (const p of all) {
      if (p.ppid !== pid || p.comm === 'lxq_runner') continue;
      out.push(p);
      walk(p.pid);
    }
  };
  walk(root);
  return out;
}

/** The processes that have `file` open. */
function openers(file: string): Proc[] {
  return readdirSync('/proc')
    .filter((n) => /^\d+$/.test(n))
    .filter((n) => {
      try {
        return readdirSync(`/proc/${n}/fd`).some((fd) => {
          try {
            return readlinkSync(`/proc/${n}/fd/${fd}`) === file;
          } catch {
            return false; // closed meanwhile
          }
        });
      } catch {
        return false; // exited meanwhile
      }
    })
    .map((n) => proc(Number(n)))
    .filter((p): p is Proc => p !== undefined);
}

const alive = (p: Proc) => {
  const now = proc(p.pid);
  return now !== undefined && now.state !== 'Z' && now.comm === p.comm;
};

/**
 * Runs `body` (with `host` opened on the test's host, `images` its image store) in a child Node
 * process and SIGKILLs it as soon as a helper matching `helper` runs under it; resolves to the
 * helper processes it had then, once none of them is left (fails after a second). With `ready`,
 * the kill waits for it too.
 */
async function killDuring(body: string, helper: (p: Proc) => boolean, images = SHARED_IMAGES, ready: () => boolean = () => true): Promise<Proc[]> {
  const script = `
    const { Host } = require(${JSON.stringify(LIB)});
    (async () => {
      const host = await Host.open({ path: ${JSON.stringify(t.dir)}, images: ${JSON.stringify(images)} });
      ${body}
      console.error('the operation ended before it was killed');
    })().catch((e) => { console.error(e); process.exit(1); });`;
  const child = spawn(process.execPath, ['-r', path.join(__dirname, 'helpers', 'ts-register.js'), '-e', script], { stdio: ['ignore', 'inherit', 'inherit'] });
  const exited = new Promise((resolve) => child.once('exit', resolve));
  let helpers: Proc[] = [];
  const deadline = Date.now() + 120_000;
  while (!helpers.some(helper) || !ready()) {
    if (Date.now() > deadline || child.exitCode !== null) {
      child.kill('SIGKILL');
      throw new Error('the helper never ran');
    }
    await new Promise((r) => setTimeout(r, 5));
    helpers = descendants(child.pid!);
  }
  child.kill('SIGKILL');
  await exited;
  const until = Date.now() + 1_000;
  while (helpers.some(alive) && Date.now() < until) await new Promise((r) => setTimeout(r, 20));
  expect(helpers.filter(alive).map((p) => `${p.pid} ${p.cmdline}`)).toEqual([]);
  return helpers;
}

const isCp = (p: Proc) => p.comm === 'cp';
const isTar = (flag: string) => (p: Proc) => p.comm === 'tar' && p.cmdline.includes(flag);

/** What the instances directory holds beyond instances: staging entries, marks (dot names). */
const hidden = () => readdirSync(t.host.instancesDir).filter((n) => n.startsWith('.lxq-tmp-'));

test('killed during a snapshot of a running container: not left frozen, thawed by the next open; no cp left', async () => {
  const killed = await killDuring(`const c = await host.get(${JSON.stringify(big.name)}); await c.snapshots.create('killed');`, isCp);
  expect(killed.some(isCp)).toBe(true);
  // As the killed process left it: frozen, with the mark naming the dead process.
  expect(existsSync(path.join(bigDir(), FREEZE_MARK))).toBe(true);
  expect(execFileSync('lxc-info', ['-P', t.host.instancesDir, '-n', big.name, '-s'], { encoding: 'utf8' })).toMatch(/FROZEN/);
  const next = await Host.open({ path: t.dir, images: SHARED_IMAGES });
  try {
    const c = await next.get(big.name);
    expect(await c.status()).toBe('running');
    expect(existsSync(path.join(bigDir(), FREEZE_MARK))).toBe(false);
    expect(await c.snapshots.list()).toEqual([]);
    expect(readdirSync(path.join(bigDir(), 'snapshots')).filter((n) => n.startsWith('.'))).toEqual([]);
    expect((await c.exec(['true'])).exitCode).toBe(0);
  } finally {
    await next.close();
  }
});

test("a user's freeze stays frozen across processes; an orphaned operation mark does not thaw it", async () => {
  // A mark left by a dead process before the user's freeze (say, the container was unfrozen by hand since).
  writeFileSync(path.join(bigDir(), FREEZE_MARK), JSON.stringify({ pid: 999_999_999, startedAt: 1, operation: 'snapshot' }));
  await big.freeze();
  expect(existsSync(path.join(bigDir(), FREEZE_MARK))).toBe(false);
  const next = await Host.open({ path: t.dir, images: SHARED_IMAGES });
  try {
    expect(await (await next.get(big.name)).status()).toBe('frozen');
  } finally {
    await next.close();
  }
  await big.unfreeze();
  expect(await big.status()).toBe('running');
});

test('killed during a copy of a running container: the source runs, the copy is not there and its name is free', async () => {
  const target = t.name('copy');
  await killDuring(`await host.copy(${JSON.stringify(big.name)}, ${JSON.stringify(target)});`, isCp);
  // This process's host reads the instance again: thawed at once.
  expect(await (await t.host.get(big.name)).status()).toBe('running');
  const next = await Host.open({ path: t.dir, images: SHARED_IMAGES });
  try {
    expect(await thrown(next.get(target))).toBeInstanceOf(NotFound);
    expect((await next.list()).map((i) => i.name)).not.toContain(target);
    expect(hidden()).toEqual([]);
    const made = await next.create(target, { image: 'busybox' });
    expect((await next.list()).map((i) => i.name)).toContain(target);
    await made.delete();
  } finally {
    await next.close();
  }
});

test('killed during an export: no tar left writing, the partial file is removed by the next open, the container runs', async () => {
  const out = mkdtempSync(path.join(os.tmpdir(), 'lxq-crash-export-'));
  try {
    const file = path.join(out, 'big.tar.zst');
    const partials = () => readdirSync(out).filter((n) => n.includes('.partial-'));
    const body = `const c = await host.get(${JSON.stringify(big.name)}); await c.export(${JSON.stringify(file)});`;
    const killed = await killDuring(body, isTar('--create'), SHARED_IMAGES, () => partials().length === 1);
    expect(partials().length).toBe(1);
    // zstd, tar's child, ends at the end of its input: once nothing holds the file open.
    const partial = path.join(out, partials()[0]);
    for (const end = Date.now() + 60_000; openers(partial).length > 0; ) {
      if (Date.now() > end) throw new Error(`${partial} still open: ${openers(partial).map((p) => `${p.pid} ${p.cmdline}`)}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    const size = readFileSync(partial).length;
    await new Promise((r) => setTimeout(r, 500));
    expect(readFileSync(path.join(out, partials()[0])).length).toBe(size); // nobody writes it any more
    expect(killed.map((p) => p.comm)).toContain('tar');
    const next = await Host.open({ path: t.dir, images: SHARED_IMAGES });
    try {
      expect(readdirSync(out)).toEqual([]);
      expect(await (await next.get(big.name)).status()).toBe('running');
    } finally {
      await next.close();
    }
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
});

test('killed during an import: no tar left extracting, nothing imported, the name free', async () => {
  const out = mkdtempSync(path.join(os.tmpdir(), 'lxq-crash-import-'));
  try {
    const file = path.join(out, 'big.tar.zst');
    await big.export(file);
    const target = t.name('imported');
    await killDuring(`await host.import(${JSON.stringify(file)}, { name: ${JSON.stringify(target)} });`, isTar('--extract'));
    const next = await Host.open({ path: t.dir, images: SHARED_IMAGES });
    try {
      expect(hidden()).toEqual([]);
      expect(await thrown(next.get(target))).toBeInstanceOf(NotFound);
      expect((await next.list()).map((i) => i.name)).not.toContain(target);
    } finally {
      await next.close();
    }
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
});

test("an import drops lxq's own state files an archive brings (a planted restore journal is not rolled forward)", async () => {
  const out = mkdtempSync(path.join(os.tmpdir(), 'lxq-crash-planted-'));
  const small = await t.host.create(t.name('small'), { image: 'busybox' });
  try {
    await small.export(path.join(out, 'clean.tar.zst'));
    const tree = path.join(out, 'tree');
    mkdirSync(tree);
    execFileSync('tar', ['--zstd', '-xf', path.join(out, 'clean.tar.zst'), '-C', tree]);
    const victim = path.join(out, 'victim');
    mkdirSync(path.join(victim, 'rootfs'), { recursive: true });
    const record = JSON.parse(readFileSync(path.join(tree, 'lxq-export.json'), 'utf8')).record;
    const journal = { pid: 999_999_999, snapshot: 'nope', staging: path.relative(path.join(t.host.instancesDir, 'x'), victim), record: { ...record, config: { 'raw.lxc': 'lxc.hook.pre-start = /bin/true' } } };
    writeFileSync(path.join(tree, 'instance', '.lxq-restore.json'), JSON.stringify(journal));
    writeFileSync(path.join(tree, 'instance', FREEZE_MARK), JSON.stringify({ pid: 999_999_999, startedAt: 1, operation: 'snapshot' }));
    const file = path.join(out, 'planted.tar.zst');
    execFileSync('tar', ['--zstd', '-cf', file, '-C', tree, 'lxq-export.json', 'instance']);
    const name = t.name('planted');
    const imported = await t.host.import(file, { name });
    const dir = path.join(t.host.instancesDir, name);
    expect(readdirSync(dir).filter((n) => n.startsWith('.lxq-'))).toEqual([]);
    const next = await Host.open({ path: t.dir, images: SHARED_IMAGES });
    try {
      expect((await next.get(name)).config['raw.lxc']).toBeUndefined();
    } finally {
      await next.close();
    }
    expect(existsSync(path.join(victim, 'rootfs'))).toBe(true);
    await imported.delete();
  } finally {
    await small.delete({ force: true });
    rmSync(out, { recursive: true, force: true });
  }
});

test('killed during a create: no half-made instance; get, list and create agree', async () => {
  // An image as big as the container, in a store of this test's own.
  const images = path.join(t.dir, 'crash-images');
  mkdirSync(images);
  await big.stop({ force: true });
  const own = await Host.open({ path: t.dir, images });
  try {
    await own.images.publish(big.name, 'crash/big');
    const name = t.name('made');
    // On the dir pool, where a create copies the whole image (an overlay create copies nothing to be killed in).
    await t.host.storage.pools.create('dir', { driver: 'dir' }).catch((e) => (e instanceof AlreadyExists ? undefined : Promise.reject(e))); // an import made it
    await killDuring(`await host.create(${JSON.stringify(name)}, { image: 'crash/big', pool: 'dir' });`, isCp, images);
    // Nothing under the name, even before the next open clears the staging directory.
    expect(existsSync(path.join(t.host.instancesDir, name))).toBe(false);
    expect(await thrown(t.host.get(name))).toBeInstanceOf(NotFound);
    expect((await t.host.list()).map((i) => i.name)).not.toContain(name);
    const next = await Host.open({ path: t.dir, images: SHARED_IMAGES });
    try {
      expect(hidden()).toEqual([]);
      const made = await next.create(name, { image: 'busybox' });
      expect((await next.get(name)).name).toBe(name);
      await made.delete();
    } finally {
      await next.close();
    }
  } finally {
    await own.images.delete('crash/big').catch(() => undefined);
    await own.close();
    await big.start();
  }
});

test('a helper with children of its own (as mmdebstrap: apt, dpkg) dies with them when the process that ran it is killed', async () => {
  const body = `require(${JSON.stringify(path.join(LIB, 'core', 'run'))}).spawnHelper('sh', ['-c', 'sleep 301 & sleep 302 & wait'], { group: true, stdio: 'ignore' }); await new Promise(() => setInterval(() => {}, 1000));`;
  const killed = await killDuring(body, (p) => p.comm === 'sleep' && p.cmdline.includes('302'));
  expect(killed.filter((p) => p.comm === 'sleep').length).toBeGreaterThanOrEqual(1);
});

describe('a full disk', () => {
  let mnt: string | undefined;
  afterAll(() => {
    if (mnt) execFileSync('umount', ['-l', mnt]);
    if (mnt) rmSync(mnt, { recursive: true, force: true });
  });

  test('a snapshot that does not fit is NoSpace naming the path, and leaves nothing behind', async () => {
    mnt = mkdtempSync(path.join(os.tmpdir(), 'lxq-full-'));
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=16M,mode=0711', 'tmpfs', mnt]);
    const host = await Host.open({ path: mnt, images: SHARED_IMAGES });
    try {
      const c = await host.create('full', { image: 'busybox' });
      execFileSync('dd', ['if=/dev/urandom', `of=${path.join(path.join(host.instancesDir, 'full'), 'rootfs', 'fill')}`, 'bs=1M', 'count=9', 'status=none']);
      const err = await thrown(c.snapshots.create('nope'));
      expect(err).toBeInstanceOf(NoSpace);
      expect(err.code).toBe('NO_SPACE');
      expect((err as NoSpace).path).toContain(path.join(path.join(host.instancesDir, 'full'), 'snapshots'));
      expect(err.message).toMatch(/no space left/i);
      expect(await c.snapshots.list()).toEqual([]);
      expect(readdirSync(path.join(path.join(host.instancesDir, 'full'), 'snapshots'))).toEqual([]);
      await c.delete();
    } finally {
      await host.close();
    }
  });
});

test('freeze and unfreeze under CPU load: every cycle completes', async () => {
  // Two busy loops on the host (dying with this process if it dies first).
  const loops = [1, 2].map(() => spawn('setpriv', ['--pdeathsig', 'KILL', '--', 'sh', '-c', 'while :; do :; done'], { stdio: 'ignore' }));
  try {
    await big.exec(['sh', '-c', '(while :; do :; done) >/dev/null 2>&1 </dev/null & (while :; do /bin/true; done) >/dev/null 2>&1 </dev/null & exit 0']);
    for (let i = 0; i < 30; i++) {
      await big.freeze();
      expect(await big.status()).toBe('frozen');
      await big.unfreeze();
    }
  } finally {
    for (const l of loops) l.kill('SIGKILL');
  }
  expect(await big.status()).toBe('running');
});
