/**
 * The addon in two layers: lxq_sys (system calls, no liblxc, always built) and lxq_lxc (liblxc,
 * built only where its headers are present, loaded on first use). A program that uses only the
 * host, its locks and events (what VMs and remote hosts need) never maps liblxc; an install
 * without liblxc's headers succeeds, and using containers then throws NotSupported naming the
 * Debian packages.
 */
import { execFile, spawn } from 'node:child_process';
import { cpSync, existsSync, mkdtempSync, openSync, closeSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';

import { NotSupported } from '../lib/core/errors';
import { LIBLXC_PACKAGES, loadLxc } from '../lib/native/lxc';
import { loadSys } from '../lib/native/sys';
import { SHARED_IMAGES } from './helpers/host';

const ROOT = path.join(__dirname, '..');
const REGISTER = path.join(__dirname, 'helpers', 'ts-register.js');
const execFileP = promisify(execFile);
const tmp = mkdtempSync(path.join(os.tmpdir(), 'lxq-native-split-'));

afterAll(() => rmSync(tmp, { recursive: true, force: true }));

function run(cmd: string, args: string[], options: { cwd: string; env?: NodeJS.ProcessEnv }): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const p = spawn(cmd, args, { cwd: options.cwd, env: options.env ?? process.env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    p.on('error', reject);
    p.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

test('a process that opens a host, lists it, takes a lock and follows its events maps lxq_sys but never liblxc', async () => {
  const script = path.join(tmp, 'vm-only.js');
  writeFileSync(
    script,
    `
const fs = require('node:fs');
const path = require('node:path');
const { Host } = require(${JSON.stringify(path.join(ROOT, 'lib', 'index'))});
const { FileLock } = require(${JSON.stringify(path.join(ROOT, 'lib', 'core', 'lock'))});
(async () => {
  const dir = fs.mkdtempSync(path.join(${JSON.stringify(tmp)}, 'host-'));
  const host = await Host.open({ path: dir });
  const listed = (await host.list()).length;
  let held = false;
  await new FileLock(path.join(dir, 'test.lock'), 'a test').hold(async () => { held = true; });
  const listener = () => undefined;
  host.on('lifecycle', listener);
  await host.ready();
  host.off('lifecycle', listener);
  const maps = fs.readFileSync('/proc/self/maps', 'utf8');
  process.stdout.write(JSON.stringify({ listed, held, liblxc: maps.includes('liblxc'), lxqLxc: maps.includes('lxq_lxc.node'), lxqSys: maps.includes('lxq_sys.node') }));
  process.exit(0);
})().catch((e) => { console.error(e); process.exit(1); });
`,
  );
  const r = await run(process.execPath, ['-r', REGISTER, script], { cwd: ROOT });
  expect(r.stderr).toBe('');
  expect(r.code).toBe(0);
  expect(JSON.parse(r.stdout)).toEqual({ listed: 0, held: true, liblxc: false, lxqLxc: false, lxqSys: true });
});

test('lxq_sys.node links no liblxc; lxq_lxc.node and lxq_runner do (in this build, with liblxc)', async () => {
  const ldd = async (file: string) => (await execFileP('ldd', [path.join(ROOT, 'build', 'Release', file)])).stdout;
  expect(await ldd('lxq_sys.node')).not.toMatch(/liblxc/);
  expect(await ldd('lxq_lxc.node')).toMatch(/liblxc/);
  expect(await ldd('lxq_runner')).toMatch(/liblxc/);
});

test('without liblxc the install succeeds: a warning naming the packages, lxq_sys built, no lxq_lxc; containers then throw NotSupported', async () => {
  const dir = path.join(tmp, 'package');
  for (const entry of ['binding.gyp', 'native', 'scripts', 'package.json']) cpSync(path.join(ROOT, entry), path.join(dir, entry), { recursive: true });
  symlinkSync(path.join(ROOT, 'node_modules'), path.join(dir, 'node_modules'));
  const env = { ...process.env, LXQ_WITHOUT_LIBLXC: '1' };

  // npm install's own scripts, in order (npm run, so that node-gyp and its settings are npm's).
  const pre = await run('npm', ['run', '--silent', 'preinstall'], { cwd: dir, env });
  expect(pre.code).toBe(0);
  expect(pre.stderr).toContain(LIBLXC_PACKAGES);
  const install = await run('npm', ['run', 'install'], { cwd: dir, env });
  if (install.code !== 0) throw new Error(`node-gyp rebuild failed:\n${install.stdout}\n${install.stderr}`);

  const release = path.join(dir, 'build', 'Release');
  expect(existsSync(path.join(release, 'lxq_sys.node'))).toBe(true);
  expect(existsSync(path.join(release, 'lxq_lxc.node'))).toBe(false);
  expect(existsSync(path.join(release, 'lxq_runner'))).toBe(false);

  // The system-call layer of that build loads and works.
  const fd = openSync(path.join(tmp, 'flock'), 'a');
  try {
    expect(loadSys(dir).flock(fd, 'ex')).toBe(true);
    loadSys(dir).flock(fd, 'un');
  } finally {
    closeSync(fd);
  }
  // The liblxc layer is NotSupported, saying what to install.
  let error: unknown;
  try {
    loadLxc(dir);
  } catch (e) {
    error = e;
  }
  expect(error).toBeInstanceOf(NotSupported);
  expect((error as Error).message).toContain('containers need liblxc');
  expect((error as Error).message).toContain('apt-get install -y lxc lxc-dev pkg-config');
  expect((error as Error).message).toContain('npm rebuild lxq');

  // A whole program on that build: the host works, creating a container is NotSupported and leaves nothing.
  const script = path.join(tmp, 'no-liblxc.js');
  writeFileSync(
    script,
    `
const fs = require('node:fs');
const path = require('node:path');
// lxq's native files from that build (lib/native/load's default is this package's own).
const load = require(${JSON.stringify(path.join(ROOT, 'lib', 'native', 'load'))});
const { loadAddon, nativeFile } = load;
Object.assign(load, { loadAddon: (name) => loadAddon(name, ${JSON.stringify(dir)}), nativeFile: (file) => nativeFile(file, ${JSON.stringify(dir)}) });
const { Host, NotSupported } = require(${JSON.stringify(path.join(ROOT, 'lib', 'index'))});
(async () => {
  const dir = fs.mkdtempSync(path.join(${JSON.stringify(tmp)}, 'host-'));
  const host = await Host.open({ path: dir, images: ${JSON.stringify(SHARED_IMAGES)} });
  const e = await host.create('c1', { image: 'busybox' }).then(() => null, (err) => err);
  const left = (await host.list()).length + fs.readdirSync(path.join(dir, 'instances')).length;
  const maps = fs.readFileSync('/proc/self/maps', 'utf8');
  process.stdout.write(JSON.stringify({ notSupported: e instanceof NotSupported, message: String(e && e.message), left, liblxc: maps.includes('liblxc') }));
  process.exit(0);
})().catch((e) => { console.error(e); process.exit(1); });
`,
  );
  const r = await run(process.execPath, ['-r', REGISTER, script], { cwd: ROOT });
  expect(r.stderr).toBe('');
  const out = JSON.parse(r.stdout) as { notSupported: boolean; message: string; left: number; liblxc: boolean };
  expect(out).toMatchObject({ notSupported: true, left: 0, liblxc: false });
  expect(out.message).toContain(LIBLXC_PACKAGES);
}, 300_000);
