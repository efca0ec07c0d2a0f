/**
 * Images in LXD's unified tarball format: an export → import round trip (a container and a VM,
 * each started from the imported image), an import of a tarball in LXD's format made here, and
 * bad archives (truncated, no or malformed metadata.yaml, another architecture, escaping paths)
 * refused with nothing left in the store.
 */
import { execFileSync } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import { AlreadyExists, Host, InvalidArgument, VmInstance } from '../lib';
import { SHARED_IMAGES } from './helpers/host';

jest.setTimeout(300_000);

let dir: string;
let host: Host;
let images: string;
beforeAll(async () => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'lxq-import-'));
  chmodSync(dir, 0o711); // an unprivileged container's root traverses it to its rootfs
  images = path.join(dir, 'images');
  host = await Host.open({ path: path.join(dir, 'host'), images });
});
afterAll(async () => {
  for (const i of await host.list().catch(() => [])) await i.delete({ force: true }).catch(() => undefined);
  rmSync(dir, { recursive: true, force: true });
});

/** A tarball made by Python's tarfile: entries as given (name, text), for archives tar would not make. */
function pyTar(file: string, entries: [string, string][]): void {
  const script = `import io, sys, tarfile, json
t = tarfile.open(sys.argv[1], 'w')
for name, text in json.loads(sys.argv[2]):
    b = text.encode(); i = tarfile.TarInfo(name); i.size = len(b); t.addfile(i, io.BytesIO(b))
t.close()`;
  execFileSync('python3', ['-c', script, file, JSON.stringify(entries)]);
}

async function refusedLeavingNothing(file: string, message: RegExp): Promise<void> {
  const alias = `bad/${path.basename(file).replace(/[^a-z0-9]/g, '-')}`;
  const err = await host.images.import(file, { alias }).catch((e) => e);
  expect(err).toBeInstanceOf(InvalidArgument);
  expect(err.message).toMatch(message);
  expect(existsSync(path.join(images, alias))).toBe(false);
  expect(await host.images.known()).not.toContain(alias);
}

test('a busybox container: export, import under an alias, run it', async () => {
  const file = path.join(dir, 'busybox.tar.gz');
  await host.images.export('busybox', file);
  const listing = execFileSync('tar', ['-tzf', file]).toString().split('\n');
  expect(listing).toContain('metadata.yaml');
  expect(listing).toContain('rootfs/bin/busybox');
  const imported = await host.images.import(file, { alias: 'mine/busybox' });
  expect(imported).toMatchObject({ name: 'mine/busybox', type: 'container', meta: { haltSignal: 'SIGUSR1' } });
  await expect(host.images.import(file, { alias: 'mine/busybox' })).rejects.toBeInstanceOf(AlreadyExists);
  expect((await host.images.list()).map((i) => i.name)).toEqual(expect.arrayContaining(['busybox', 'mine/busybox']));
  const c = await host.create('imp1', { image: 'mine/busybox' });
  await c.start();
  expect((await c.exec(['echo', 'imported'])).stdout.toString()).toBe('imported\n');
  await c.stop({ timeout: 10_000 });
  await c.delete();
  await host.images.delete('mine/busybox');
  expect(await host.images.known()).not.toContain('mine/busybox');
});

test('a tarball in LXD\'s format made here (block YAML, rootfs/) imports and runs', async () => {
  const src = (await host.images.ensure('busybox')).dir;
  const work = mkdtempSync(path.join(dir, 'lxd-'));
  writeFileSync(
    path.join(work, 'metadata.yaml'),
    'architecture: x86_64\ncreation_date: 1700000000\nproperties:\n  description: BusyBox made by hand\n  os: busybox\n  release: "1"\ntemplates: {}\n',
  );
  const file = path.join(dir, 'handmade.tar.xz');
  execFileSync('tar', ['-cJf', file, '--numeric-owner', '-C', work, 'metadata.yaml', '-C', src, 'rootfs']);
  const imported = await host.images.import(file, { alias: 'handmade' });
  expect(imported.meta).toMatchObject({ haltSignal: 'SIGUSR1', os: 'busybox', description: 'BusyBox made by hand' });
  const c = await host.create('imp2', { image: 'handmade' });
  await c.start();
  expect((await c.exec(['cat', '/etc/hosts'])).exitCode).toBe(0);
  await c.stop({ timeout: 10_000 });
  await c.delete();
});

test('a VM image: export (rootfs.img + lxq/ kernel), import, boot', async () => {
  // From the shared cache, to avoid building vm/default again here.
  const shared = await Host.open({ path: path.join(dir, 'host-shared'), images: SHARED_IMAGES });
  await shared.images.ensure('vm/default');
  const file = path.join(dir, 'vm.tar');
  await shared.images.export('vm/default', file);
  const listing = execFileSync('tar', ['-tf', file]).toString().split('\n');
  expect(listing).toEqual(expect.arrayContaining(['metadata.yaml', 'rootfs.img']));
  const imported = await host.images.import(file, { alias: 'vm/imported' });
  expect(imported.type).toBe('vm');
  const vm = (await host.create('impvm', { type: 'vm', image: 'vm/imported' })) as VmInstance;
  await vm.start();
  await vm.waitForAgent(60_000);
  expect((await vm.exec(['echo', 'vm'])).stdout.toString()).toBe('vm\n');
  await vm.stop({ timeout: 30_000 });
  await vm.delete();
});

describe('bad archives are refused and leave nothing', () => {
  test('truncated', async () => {
    const whole = path.join(dir, 'whole.tar');
    await host.images.export('busybox', whole);
    const cut = path.join(dir, 'truncated.tar');
    writeFileSync(cut, readFileSync(whole).subarray(0, Math.floor(statSync(whole).size / 2)));
    await refusedLeavingNothing(cut, /not a complete tar archive/);
  });

  test('no metadata.yaml; malformed metadata.yaml; another architecture; paths that escape', async () => {
    const f = (n: string) => path.join(dir, n);
    pyTar(f('nometa.tar'), [['rootfs/etc/hosts', 'x']]);
    await refusedLeavingNothing(f('nometa.tar'), /has no metadata.yaml/);
    pyTar(f('badyaml.tar'), [['metadata.yaml', 'architecture: [x86_64\n  - : :'], ['rootfs/etc/hosts', 'x']]);
    await refusedLeavingNothing(f('badyaml.tar'), /malformed metadata.yaml/);
    pyTar(f('arm.tar'), [['metadata.yaml', 'architecture: aarch64\ncreation_date: 1\n'], ['rootfs/etc/hosts', 'x']]);
    await refusedLeavingNothing(f('arm.tar'), /aarch64, which this host \(x86_64\) cannot run/);
    pyTar(f('escape.tar'), [['metadata.yaml', 'architecture: x86_64\n'], ['rootfs/../../escaped', 'x']]);
    await refusedLeavingNothing(f('escape.tar'), /escapes the image/);
    pyTar(f('abs.tar'), [['metadata.yaml', 'architecture: x86_64\n'], ['/tmp/lxq-abs-escaped', 'x']]);
    await refusedLeavingNothing(f('abs.tar'), /escapes the image/);
    expect(existsSync('/tmp/lxq-abs-escaped')).toBe(false);
    await expect(host.images.import(f('none.tar'), { alias: 'x' })).rejects.toThrow(/no file/);
    await expect(host.images.import(f('arm.tar'), { alias: 'busybox' })).rejects.toBeInstanceOf(AlreadyExists);
  });
});
