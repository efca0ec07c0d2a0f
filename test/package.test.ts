/**
 * The package as a user gets it: `npm pack` of this project, installed into empty projects (one
 * with liblxc's headers, one as if without them: LXQ_WITHOUT_LIBLXC=1), then used from there as
 * `lxq`: the quick start (examples/quickstart.ts, compiled by tsc against the installed types and
 * run), an ES module's `import { Host } from 'lxq'`, and the public types in a strict TypeScript
 * consumer. Both installs build the addon, once each, side by side, in beforeAll.
 *
 * LXQ_PACKAGE_TARBALL names a tarball packed already, to test that one instead of packing this tree.
 */
import { execFile } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import { SHARED_IMAGES } from './helpers/host';

const ROOT = path.join(__dirname, '..');
const LIBLXC_PACKAGES = 'apt-get install -y lxc lxc-dev pkg-config';

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

function run(cmd: string, args: string[], options: { cwd: string; env?: NodeJS.ProcessEnv; timeoutMs?: number }): Promise<Run> {
  return new Promise((resolve) => {
    execFile(cmd, args, { cwd: options.cwd, env: options.env ?? process.env, timeout: options.timeoutMs ?? 600_000, maxBuffer: 64 << 20 }, (error, stdout, stderr) => {
      resolve({ code: error ? ((error as { code?: unknown }).code as number | null) ?? 1 : 0, stdout, stderr });
    });
  });
}

/** Fails with the command's output, not just its exit code. */
function succeeded(r: Run, what: string): Run {
  if (r.code !== 0) throw new Error(`${what} exited ${r.code}:\n${r.stdout}\n${r.stderr}`);
  return r;
}

/** The version of a package this project installed, so that the consumer's install finds it in npm's cache. */
function installedVersion(name: string): string {
  return (JSON.parse(readFileSync(path.join(ROOT, 'node_modules', name, 'package.json'), 'utf8')) as { version: string }).version;
}

let tmp: string;
let tarball: string;
/** The tarball's files, as npm pack listed them. */
let packed: string[] = [];
/** The project that installed lxq with liblxc's headers (and TypeScript), and the one without. */
let full: string;
let bare: string;
let bareInstall: Run;

/**
 * An empty project: a package.json that lets lxq's install script build its addon (npm 11 asks
 * for that, as `npm install-scripts approve` records it: a tarball by its file: spec), nothing else.
 */
function emptyProject(name: string): string {
  const dir = path.join(tmp, name);
  mkdirSync(dir);
  const allowScripts = { [`file:${tarball}`]: true };
  writeFileSync(path.join(dir, 'package.json'), JSON.stringify({ name: `lxq-consumer-${name}`, version: '1.0.0', private: true, allowScripts }, null, 2));
  return dir;
}

/** npm install of the tarball (and `extra` packages), from npm's cache where it can. */
function install(dir: string, extra: string[], env: NodeJS.ProcessEnv): Promise<Run> {
  // Where this machine has more than one core, the addon's objects are compiled side by side.
  const args = ['install', '--prefer-offline', '--no-audit', '--no-fund', '--foreground-scripts', tarball, ...extra];
  return run('npm', args, { cwd: dir, env: { ...process.env, JOBS: 'max', ...env }, timeoutMs: 900_000 });
}

beforeAll(async () => {
  tmp = mkdtempSync(path.join(os.tmpdir(), 'lxq-package-'));
  // The quick start's host lives in here: an unprivileged container's root must get through.
  chmodSync(tmp, 0o711);
  if (process.env.LXQ_PACKAGE_TARBALL) {
    tarball = path.resolve(process.env.LXQ_PACKAGE_TARBALL);
    packed = (await run('tar', ['-tzf', tarball], { cwd: tmp })).stdout.split('\n').filter(Boolean).map((f) => f.replace(/^package\//, ''));
  } else {
    // prepack builds the TypeScript first, as for a publish.
    const pack = succeeded(await run('npm', ['pack', '--json', '--pack-destination', tmp], { cwd: ROOT }), 'npm pack');
    const [info] = JSON.parse(pack.stdout.slice(pack.stdout.indexOf('['))) as { filename: string; files: { path: string }[] }[];
    tarball = path.join(tmp, info.filename);
    packed = info.files.map((f) => f.path);
  }
  full = emptyProject('full');
  bare = emptyProject('bare');
  const consumerTools = [`typescript@${installedVersion('typescript')}`, `@types/node@${installedVersion('@types/node')}`];
  const [fullInstall, withoutLiblxc] = await Promise.all([install(full, consumerTools, {}), install(bare, [], { LXQ_WITHOUT_LIBLXC: '1' })]);
  succeeded(fullInstall, 'npm install (with liblxc)');
  expect(fullInstall.stdout + fullInstall.stderr).not.toContain('not yet covered by allowScripts');
  bareInstall = withoutLiblxc;
}, 1_200_000);

afterAll(() => {
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

test('the tarball holds the built library with its types, the addon\'s sources, the install scripts and the license; no tests, no stale build output', () => {
  for (const f of ['package.json', 'README.md', 'LICENSE', 'binding.gyp', 'dist/lib/index.js', 'dist/lib/index.d.ts', 'dist/lib/qmp/index.js', 'dist/lib/qmp/index.d.ts', 'dist/lib/cli/main.js', 'native/sys_addon.cc', 'native/lxc_addon.cc', 'scripts/has-liblxc.js', 'scripts/check-liblxc.js']) {
    expect(packed).toContain(f);
  }
  expect(packed.filter((f) => /^(test|bench|examples|dist\/(test|bench|examples))\//.test(f) || f.startsWith('build/'))).toEqual([]);
  // A file of dist/lib without its source would be a removed module's leftover, shipped (prepack builds dist/lib afresh).
  const stale = packed.filter((f) => /^dist\/lib\/.*\.js$/.test(f)).filter((f) => !existsSync(path.join(ROOT, f.replace(/^dist\//, '').replace(/\.js$/, '.ts'))));
  expect(stale).toEqual([]);
});

test('the public types compile in a strict TypeScript consumer, with the quick start (CommonJS and ES module; lxq\'s declarations checked too)', async () => {
  const release = path.join(full, 'node_modules', 'lxq', 'build', 'Release');
  expect(readdirSync(release).filter((f) => /^lxq_/.test(f)).sort()).toEqual(['lxq_intercept', 'lxq_lxc.node', 'lxq_runner', 'lxq_stamper', 'lxq_sys.node']);

  const source = readFileSync(path.join(ROOT, 'examples', 'quickstart.ts'), 'utf8');
  expect(source).toContain("from '../lib'");
  writeFileSync(path.join(full, 'quickstart.ts'), source.replace("from '../lib'", "from 'lxq'"));
  const uses = `
const host: Host = await Host.open({ path: '/tmp/x' } satisfies HostOptions);
const options: CreateOptions = { image: 'busybox', config: { 'limits.memory': '256MiB' } };
const c: Instance = await host.create('c1', options);
const status: InstanceStatus = await c.status();
const state: InstanceState = await c.state();
const r: ExecResult = await c.exec(['true'], { timeout: 1000 } satisfies ExecOptions);
const onStatus = (e: StatusEvent): void => void e.status;
c.on('status', onStatus);
const onLifecycle = (e: LifecycleEvent): void => void (e.action satisfies LifecycleAction);
host.on('lifecycle', onLifecycle).off('lifecycle', onLifecycle);
await host.ready();
const wait: WaitSpec = { for: 'port', port: 5432 };
await c.wait(wait);
const snapshots: SnapshotInfo[] = await c.snapshots.list();
const failed: LxqError | undefined = undefined as NotSupported | undefined;
const qmpClass: typeof QmpClient = QmpClient;
const all = [status, state.pid, r.exitCode, snapshots.length, failed, qmpClass];
`;
  const imports = `import { Host, type HostOptions, type CreateOptions, type Instance, type InstanceStatus, type InstanceState, type ExecResult, type ExecOptions, type StatusEvent, type LifecycleEvent, type LifecycleAction, type WaitSpec, type SnapshotInfo, type LxqError, type NotSupported } from 'lxq';
import { QmpClient } from 'lxq/qmp';
`;
  mkdirSync(path.join(full, 'types'));
  writeFileSync(path.join(full, 'types', 'cjs.ts'), `${imports}export async function main(): Promise<unknown> {\n${uses}\nreturn all;\n}\n`);
  writeFileSync(path.join(full, 'types', 'esm.mts'), `${imports}${uses}export { all };\n`);
  writeFileSync(
    path.join(full, 'tsconfig.json'),
    // skipLibCheck off (tsc's default): lxq's own declarations are checked, and every package they name must come with lxq.
    JSON.stringify({ compilerOptions: { target: 'ES2022', module: 'nodenext', moduleResolution: 'nodenext', strict: true, skipLibCheck: false, outDir: 'out', types: ['node'] }, files: ['quickstart.ts', 'types/cjs.ts', 'types/esm.mts'] }),
  );
  const r = await run(process.execPath, [path.join(full, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', 'tsconfig.json'], { cwd: full });
  expect(r.stdout + r.stderr).toBe('');
  expect(r.code).toBe(0);
}, 300_000);

test('the quick start, compiled against the installed package, runs', async () => {
  const compiled = path.join(full, 'out', 'quickstart.js');
  if (!existsSync(compiled)) throw new Error('no out/quickstart.js: the compile above failed');
  const host = path.join(tmp, 'quickstart-host');
  const r = succeeded(await run(process.execPath, [compiled], { cwd: full, env: { ...process.env, LXQ_PATH: host }, timeoutMs: 180_000 }), 'the quick start');
  expect(r.stdout).toMatch(/^image busybox ready in .*\n/);
  expect(r.stdout).toMatch(/demo-\d+: starting -> running\n/);
  expect(r.stdout).toMatch(/demo-\d+: stopping -> stopped\n/);
  expect(r.stdout).toMatch(/state: pid \d+, \d+ processes, [\d.]+ MiB used of 256 MiB/);
  expect(r.stdout).toMatch(/stopped gracefully in [\d.]+ ms\n/);
  expect(r.stdout).toMatch(/deleted; demo done\n$/);
  expect(readdirSync(path.join(host, 'instances'))).toEqual([]);
}, 300_000);

test("an ES module's import { Host } from 'lxq' (and 'lxq/qmp') gets the same classes as require, and works", async () => {
  writeFileSync(
    path.join(full, 'esm.mjs'),
    `import { Host, InvalidArgument, LIFECYCLE_ACTIONS } from 'lxq';
import lxq from 'lxq';
import { QmpClient } from 'lxq/qmp';
import { createRequire } from 'node:module';
const required = createRequire(import.meta.url)('lxq');
const host = await Host.open({ path: process.argv[2], images: process.argv[3] });
const refused = await host.create('not a name', { image: 'busybox' }).then(() => null, (e) => e);
console.log(JSON.stringify({
  host: typeof Host.open,
  qmp: typeof QmpClient,
  sameAsDefault: lxq.Host === Host,
  sameAsRequire: required.Host === Host,
  actions: LIFECYCLE_ACTIONS.includes('instance-started'),
  listed: (await host.list()).length,
  invalidArgument: refused instanceof InvalidArgument,
}));
`,
  );
  const r = succeeded(await run(process.execPath, ['esm.mjs', path.join(tmp, 'esm-host'), SHARED_IMAGES], { cwd: full }), 'esm.mjs');
  expect(JSON.parse(r.stdout)).toEqual({ host: 'function', qmp: 'function', sameAsDefault: true, sameAsRequire: true, actions: true, listed: 0, invalidArgument: true });
});

test('without liblxc the install succeeds and says what to add; the host works, and creating a container throws NotSupported naming the packages', async () => {
  succeeded(bareInstall, 'npm install (LXQ_WITHOUT_LIBLXC=1)');
  expect(bareInstall.stdout + bareInstall.stderr).toContain(LIBLXC_PACKAGES);
  const release = path.join(bare, 'node_modules', 'lxq', 'build', 'Release');
  expect(readdirSync(release).filter((f) => /^lxq_/.test(f)).sort()).toEqual(['lxq_stamper', 'lxq_sys.node']); // the stamper needs no liblxc

  writeFileSync(
    path.join(bare, 'no-liblxc.js'),
    `const fs = require('node:fs');
const path = require('node:path');
const { Host, NotSupported } = require('lxq');
(async () => {
  const dir = process.argv[2];
  const host = await Host.open({ path: dir, images: process.argv[3] });
  const e = await host.create('c1', { image: 'busybox' }).then(() => null, (err) => err);
  const left = (await host.list()).length + fs.readdirSync(path.join(dir, 'instances')).length;
  console.log(JSON.stringify({ notSupported: e instanceof NotSupported, message: String(e && e.message), left }));
})().catch((e) => { console.error(e); process.exit(1); });
`,
  );
  const r = succeeded(await run(process.execPath, ['no-liblxc.js', path.join(tmp, 'bare-host'), SHARED_IMAGES], { cwd: bare }), 'no-liblxc.js');
  const out = JSON.parse(r.stdout) as { notSupported: boolean; message: string; left: number };
  expect(out).toMatchObject({ notSupported: true, left: 0 });
  expect(out.message).toContain(LIBLXC_PACKAGES);
});
