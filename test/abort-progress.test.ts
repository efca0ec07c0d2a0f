/**
 * AbortSignal and onProgress on the long operations, on real busybox containers: an abort before
 * the start does nothing, an abort during one (from inside onProgress, as the helper starts or
 * once it has read bytes) rejects with Aborted and leaves nothing half-made (the host's tree, list,
 * get and a create of the same name agree); a finished operation's progress is monotonic and ends
 * at 100; a bad signal or onProgress is InvalidArgument.
 */
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import { Aborted, type Instance, InvalidArgument, NotFound, type Progress } from '../lib';
import { SHARED_IMAGES, tempHost, TestHost } from './helpers/host';

let t: TestHost;
let work: string;
/** A stopped container holding 512 MiB of data: its copy, export and snapshot take a while. */
let big: Instance;
/** An export of a small container, for the imports. */
let archive: string;

beforeAll(async () => {
  t = await tempHost();
  work = mkdtempSync(path.join(os.tmpdir(), 'lxq-abort-'));
  await t.host.images.ensure('busybox');
  big = await t.host.create(t.name('big'), { image: 'busybox' });
  await big.start();
  await big.exec(['dd', 'if=/dev/zero', 'of=/big', 'bs=1M', 'count=512']);
  await big.stop({ force: true });
  const small = await t.host.create(t.name('small'), { image: 'busybox' });
  archive = path.join(work, 'small.tar.zst');
  await small.export(archive);
  await small.delete();
}, 600_000);
afterAll(async () => {
  await t?.dispose();
  rmSync(work, { recursive: true, force: true });
}, 120_000);

/** The names under the host's instances directory (staging included; logs' sizes left out). */
const tree = () => execFileSync('find', [path.join(t.dir, 'instances'), '-printf', '%P\\n'], { encoding: 'utf8' }).split('\n').sort().join('\n');
const names = async () => (await t.host.list()).map((i) => i.name).sort();

/** A signal aborted by the first progress event `when` accepts. */
function abortWhen(when: (p: Progress) => boolean): { signal: AbortSignal; onProgress: (p: Progress) => void } {
  const ac = new AbortController();
  return { signal: ac.signal, onProgress: (p) => when(p) && ac.abort() };
}

/** Progress events as the contract says: percent monotonic within 0..100, ending at 100. */
function expectWellFormed(seen: Progress[]): void {
  expect(seen.length).toBeGreaterThan(1);
  for (let i = 1; i < seen.length; i++) expect(seen[i].percent).toBeGreaterThanOrEqual(seen[i - 1].percent);
  for (const p of seen) {
    expect(p.percent).toBeGreaterThanOrEqual(0);
    expect(p.percent).toBeLessThanOrEqual(100);
    expect(typeof p.phase).toBe('string');
  }
  expect(seen[seen.length - 1].percent).toBe(100);
}

/** After an aborted make of `name`: nothing under it, and a create of the name works. */
async function expectNothingNamed(name: string, before: string): Promise<void> {
  expect(tree()).toBe(before);
  expect(await names()).not.toContain(name);
  await expect(t.host.get(name)).rejects.toBeInstanceOf(NotFound);
  const again = await t.host.create(name, { image: 'busybox' });
  await again.delete();
}

test('bad signal or onProgress is InvalidArgument, an aborted signal is Aborted, and neither changes anything', async () => {
  const before = tree();
  const aborted = AbortSignal.abort();
  const target = t.name('bad');
  const bad = [{ signal: 'x' as unknown as AbortSignal }, { signal: {} as AbortSignal }, { onProgress: 5 as unknown as () => void }];
  for (const o of bad) {
    await expect(t.host.copy(big.name, target, o)).rejects.toBeInstanceOf(InvalidArgument);
    await expect(t.host.import(archive, { name: target, ...o })).rejects.toBeInstanceOf(InvalidArgument);
    await expect(big.export(path.join(work, 'bad.tar.zst'), o)).rejects.toBeInstanceOf(InvalidArgument);
    await expect(big.snapshots.create('bad', o)).rejects.toBeInstanceOf(InvalidArgument);
    await expect(t.host.images.publish(big, t.name('img'), o)).rejects.toBeInstanceOf(InvalidArgument);
    await expect(t.host.images.ensure('busybox', o as never)).rejects.toBeInstanceOf(InvalidArgument);
  }
  await expect(t.host.create(target, { image: 'busybox', signal: 'x' as unknown as AbortSignal })).rejects.toBeInstanceOf(InvalidArgument);
  await expect(big.start({ signal: 1 as unknown as AbortSignal })).rejects.toBeInstanceOf(InvalidArgument);
  await expect(big.stop({ signal: 1 as unknown as AbortSignal })).rejects.toBeInstanceOf(InvalidArgument);
  await expect(big.snapshots.delete('x', { signal: 1 as unknown as AbortSignal })).rejects.toBeInstanceOf(InvalidArgument);

  await expect(t.host.create(target, { image: 'busybox', signal: aborted })).rejects.toBeInstanceOf(Aborted);
  await expect(t.host.launch('busybox', target, { signal: aborted })).rejects.toBeInstanceOf(Aborted);
  await expect(t.host.copy(big.name, target, { signal: aborted })).rejects.toBeInstanceOf(Aborted);
  await expect(t.host.import(archive, { name: target, signal: aborted })).rejects.toBeInstanceOf(Aborted);
  await expect(big.export(path.join(work, 'aborted.tar.zst'), { signal: aborted })).rejects.toBeInstanceOf(Aborted);
  await expect(big.start({ signal: aborted })).rejects.toBeInstanceOf(Aborted);
  await expect(big.snapshots.create('s', { signal: aborted })).rejects.toBeInstanceOf(Aborted);
  await expect(t.host.images.publish(big, t.name('img'), { signal: aborted })).rejects.toBeInstanceOf(Aborted);
  await expect(t.host.images.ensure('busybox', { signal: aborted })).rejects.toBeInstanceOf(Aborted);
  expect(await big.status()).toBe('stopped');
  expect(await big.snapshots.list()).toEqual([]);
  expect(readdirSync(work)).toEqual(['small.tar.zst']);
  expect(tree()).toBe(before);
  await expectNothingNamed(target, before);
}, 120_000);

test('copy: aborted as cp starts or once it has read bytes leaves no target; a whole copy reports bytes up to 100', async () => {
  const before = tree();
  for (const when of [(p: Progress) => p.phase === 'copying', (p: Progress) => (p.bytes ?? 0) > 0]) {
    const target = t.name('cp');
    const o = abortWhen(when);
    await expect(t.host.copy(big.name, target, o)).rejects.toBeInstanceOf(Aborted);
    await expectNothingNamed(target, before);
  }
  const seen: Progress[] = [];
  const copy = await t.host.copy(big.name, t.name('cp'), { onProgress: (p) => seen.push(p) });
  expectWellFormed(seen);
  expect(seen.some((p) => p.phase === 'copying' && (p.total ?? 0) > 512 * 1024 * 1024)).toBe(true);
  await copy.delete();
}, 300_000);

test('export: an aborted export leaves no file, whole or partial; a whole one reports up to 100', async () => {
  for (const when of [(p: Progress) => p.phase === 'writing the archive', (p: Progress) => (p.bytes ?? 0) > 0]) {
    const o = abortWhen(when);
    await expect(big.export(path.join(work, 'big.tar.zst'), o)).rejects.toBeInstanceOf(Aborted);
    expect(readdirSync(work)).toEqual(['small.tar.zst']);
    expect(readdirSync(path.join(t.dir, 'instances', '.lxq-partials')).filter((n) => !n.startsWith('.'))).toEqual([]);
    expect(await big.status()).toBe('stopped');
  }
  const seen: Progress[] = [];
  await big.export(path.join(work, 'big.tar.zst'), { onProgress: (p) => seen.push(p) });
  expectWellFormed(seen);
  rmSync(path.join(work, 'big.tar.zst'));
}, 300_000);

test('import: aborted while checking or extracting leaves no instance; a whole one reports up to 100', async () => {
  const before = tree();
  for (const phase of ['checking the archive', 'extracting']) {
    const name = t.name('imp');
    const o = abortWhen((p) => p.phase === phase);
    await expect(t.host.import(archive, { name, ...o })).rejects.toBeInstanceOf(Aborted);
    await expectNothingNamed(name, before);
  }
  const seen: Progress[] = [];
  const imported = await t.host.import(archive, { name: t.name('imp'), onProgress: (p) => seen.push(p) });
  expectWellFormed(seen);
  await imported.delete();
}, 300_000);

test('snapshots: an aborted create leaves no snapshot and the container running, not frozen; an aborted restore changes nothing', async () => {
  const c = await t.host.create(t.name('snap'), { image: 'busybox' });
  await c.start();
  try {
    await c.exec(['dd', 'if=/dev/zero', 'of=/data', 'bs=1M', 'count=256']);
    for (const when of [(p: Progress) => p.phase === 'copying', (p: Progress) => (p.bytes ?? 0) > 0]) {
      const o = abortWhen(when);
      await expect(c.snapshots.create('s0', o)).rejects.toBeInstanceOf(Aborted);
      expect(await c.snapshots.list()).toEqual([]);
      expect(await c.status()).toBe('running');
      expect(existsSync(path.join(t.dir, 'instances', c.name, '.lxq-freeze.json'))).toBe(false);
      expect(readdirSync(path.join(t.dir, 'instances', c.name, 'snapshots'))).toEqual([]);
    }
    const seen: Progress[] = [];
    await c.snapshots.create('s0', { onProgress: (p) => seen.push(p) });
    expectWellFormed(seen);
    await c.exec(['sh', '-c', 'echo after > /marker']);
    const o = abortWhen((p) => p.phase === 'copying');
    await expect(c.snapshots.restore('s0', o)).rejects.toBeInstanceOf(Aborted);
    expect((await c.exec(['cat', '/marker'])).stdout.toString()).toBe('after\n');
    expect(await c.status()).toBe('running');
    const restored: Progress[] = [];
    await c.snapshots.restore('s0', { onProgress: (p) => restored.push(p) });
    expectWellFormed(restored);
    expect((await c.exec(['cat', '/marker'])).exitCode).not.toBe(0);
    await expect(c.snapshots.delete('s0', { signal: AbortSignal.abort() })).rejects.toBeInstanceOf(Aborted);
    expect((await c.snapshots.list()).map((s) => s.name)).toEqual(['s0']);
    await c.snapshots.delete('s0', { signal: new AbortController().signal });
    expect(await c.snapshots.list()).toEqual([]);
  } finally {
    await c.delete({ force: true });
  }
}, 300_000);

test('start aborted once the container runs leaves it stopped; an aborted launch leaves no instance; stop aborted leaves it stopped', async () => {
  const c = await t.host.create(t.name('st'), { image: 'busybox' });
  const ac = new AbortController();
  const onStatus = (e: { status: string }) => e.status === 'running' && ac.abort();
  c.on('status', onStatus);
  await expect(c.start({ signal: ac.signal, wait: { for: 'exec', command: ['false'] } })).rejects.toBeInstanceOf(Aborted);
  c.off('status', onStatus);
  expect(await c.status()).toBe('stopped');

  const before = tree();
  const name = t.name('la');
  const la = new AbortController();
  const stopLaunch = (e: { action: string; name: string }) => e.action === 'instance-started' && e.name === name && la.abort();
  t.host.on('lifecycle', stopLaunch);
  await expect(t.host.launch('busybox', name, { signal: la.signal, wait: { for: 'exec', command: ['false'] } })).rejects.toBeInstanceOf(Aborted);
  t.host.off('lifecycle', stopLaunch);
  await expectNothingNamed(name, before);

  await c.start();
  const sc = new AbortController();
  const onStopping = (e: { status: string }) => e.status === 'stopping' && sc.abort();
  c.on('status', onStopping);
  // Aborted while its clean shutdown runs (stopped by force), or done first: stopped either way.
  await c.stop({ timeout: 60_000, signal: sc.signal }).catch((e) => expect(e).toBeInstanceOf(Aborted));
  c.off('status', onStopping);
  expect(await c.status()).toBe('stopped');
  await c.delete();
}, 300_000);

test('publish: aborted as it copies leaves no image; a whole one reports up to 100', async () => {
  const alias = t.name('pub');
  const o = abortWhen((p) => p.phase === 'copying');
  await expect(t.host.images.publish(big, alias, o)).rejects.toBeInstanceOf(Aborted);
  expect((await t.host.images.list()).map((i) => i.name)).not.toContain(alias);
  const seen: Progress[] = [];
  const small = await t.host.create(t.name('p'), { image: 'busybox' });
  await t.host.images.publish(small, alias, { onProgress: (p) => seen.push(p) });
  expectWellFormed(seen);
  await t.host.images.delete(alias);
  await small.delete();
}, 300_000);

/** The commands (comm) of the child processes of `pid` (one that exits meanwhile is left out). */
function children(pid: number): string[] {
  const read = (file: string) => {
    try {
      return readFileSync(file, 'utf8').trim();
    } catch {
      return ''; // gone between the listing and the read (CI once failed on a short-lived child's ENOENT)
    }
  };
  const list = read(`/proc/${pid}/task/${pid}/children`);
  return list ? list.split(/\s+/).map((c) => read(`/proc/${c}/comm`)).filter(Boolean) : [];
}

/** Runs `lxq ARGS`, sends it SIGINT (as Ctrl-C does) once its helper `comm` runs, and says how it ended. */
async function interrupted(args: string[], comm: string): Promise<{ code: number | null; stderr: string }> {
  const main = path.join(__dirname, '..', 'lib', 'cli', 'main.ts');
  const p = spawn(process.execPath, ['-r', path.join(__dirname, 'helpers', 'ts-register.js'), main, '--host', t.dir, '--images', SHARED_IMAGES, ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  p.stderr.on('data', (d) => (stderr += d));
  const closed = new Promise<number | null>((resolve) => p.once('close', resolve));
  const deadline = Date.now() + 120_000;
  while (p.exitCode === null && !children(p.pid!).includes(comm)) {
    if (Date.now() > deadline) p.kill('SIGKILL');
    await new Promise((r) => setTimeout(r, 5));
  }
  p.kill('SIGINT');
  return { code: await closed, stderr };
}

test('lxq copy and lxq export interrupted by SIGINT (Ctrl-C) exit 130 and leave nothing', async () => {
  const before = tree();
  const target = t.name('cli');
  const copy = await interrupted(['copy', big.name, target], 'cp');
  expect(copy).toMatchObject({ code: 130, stderr: expect.stringMatching(/was aborted; nothing was left behind/) });
  await expectNothingNamed(target, before);
  const file = path.join(work, 'cli.tar.zst');
  const exported = await interrupted(['export', big.name, file], 'tar');
  expect(exported).toMatchObject({ code: 130, stderr: expect.stringMatching(/was aborted; nothing was left behind/) });
  expect(readdirSync(work)).toEqual(['small.tar.zst']);
  expect(tree()).toBe(before);
}, 300_000);
