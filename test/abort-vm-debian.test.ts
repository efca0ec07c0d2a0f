/**
 * AbortSignal on the long operations of a VM (vm/default, never booted: its create, copy and
 * export are of its disk) and of a debian/12 container: an abort during create (as its staging
 * entry appears), copy or export (from inside onProgress) rejects with Aborted and leaves nothing
 * half-made (the host's tree, list and get agree, no archive is left), and the same operation
 * then works. test/abort-progress.test.ts has the busybox cases.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync, watch } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import { Aborted, type CreateOptions, NotFound, type Progress } from '../lib';
import { tempHost, type TestHost } from './helpers/host';

let t: TestHost;
let work: string;
beforeAll(async () => {
  t = await tempHost();
  work = mkdtempSync(path.join(os.tmpdir(), 'lxq-abort-vm-'));
  await t.host.images.ensure('vm/default');
  await t.host.images.ensure('debian/12');
}, 1_800_000);
afterAll(async () => {
  await t?.dispose();
  rmSync(work, { recursive: true, force: true });
}, 300_000);

const instances = () => path.join(t.dir, 'instances');
/** The names under the host's instances directory (staging included; the partials' register, made by the first export, left out: checked apart). */
const tree = () =>
  execFileSync('find', [instances(), '-printf', '%P\\n'], { encoding: 'utf8' })
    .split('\n')
    .filter((n) => !n.startsWith('.lxq-partials'))
    .sort()
    .join('\n');

/** The partial files noted in the host's register (none made yet, no register: nothing noted). */
const partials = () => (existsSync(path.join(instances(), '.lxq-partials')) ? readdirSync(path.join(instances(), '.lxq-partials')).filter((n) => !n.startsWith('.')) : []);

/** A create aborted as soon as its staging entry appears in the instances directory. */
async function abortedCreate(name: string, options: CreateOptions): Promise<void> {
  const ac = new AbortController();
  const watcher = watch(instances(), (_event, file) => {
    if (String(file ?? '').startsWith('.lxq-tmp-')) ac.abort();
  });
  try {
    await expect(t.host.create(name, { ...options, signal: ac.signal })).rejects.toBeInstanceOf(Aborted);
  } finally {
    watcher.close();
  }
}

/** A signal aborted by the first progress event `when` accepts. */
function abortWhen(when: (p: Progress) => boolean): { signal: AbortSignal; onProgress: (p: Progress) => void } {
  const ac = new AbortController();
  return { signal: ac.signal, onProgress: (p) => when(p) && ac.abort() };
}

/** After an aborted make of `name`: the tree as `before`, no instance of that name. */
async function expectNothingNamed(name: string, before: string): Promise<void> {
  expect(tree()).toBe(before);
  expect((await t.host.list()).map((i) => i.name)).not.toContain(name);
  await expect(t.host.get(name)).rejects.toBeInstanceOf(NotFound);
}

/** Create, copy and export of `options`' instance aborted midway, each then done whole. */
async function abortEach(prefix: string, options: CreateOptions): Promise<void> {
  const before = tree();
  const name = t.name(prefix);
  await abortedCreate(name, options);
  await expectNothingNamed(name, before);
  const made = await t.host.create(name, options); // the same name works after the abort
  expect(await made.status()).toBe('stopped');

  const withSource = tree();
  const copyName = t.name(`${prefix}-cp`);
  await expect(t.host.copy(name, copyName, abortWhen((p) => p.phase === 'copying'))).rejects.toBeInstanceOf(Aborted);
  await expectNothingNamed(copyName, withSource);
  const copy = await t.host.copy(name, copyName);
  await copy.delete();

  const file = path.join(work, `${prefix}.tar.zst`);
  await expect(made.export(file, abortWhen((p) => p.phase === 'writing the archive'))).rejects.toBeInstanceOf(Aborted);
  expect(readdirSync(work)).toEqual([]);
  expect(partials()).toEqual([]);
  expect(tree()).toBe(withSource);
  await made.export(file);
  expect(existsSync(file)).toBe(true);
  rmSync(file);
  await made.delete();
  expect(tree()).toBe(before);
}

test('vm: create, copy and export aborted midway leave nothing; each then works', async () => {
  await abortEach('vm', { type: 'vm', image: 'vm/default' });
}, 900_000);

test('debian/12 container: create, copy and export aborted midway leave nothing; each then works', async () => {
  await abortEach('deb', { image: 'debian/12' });
}, 900_000);
