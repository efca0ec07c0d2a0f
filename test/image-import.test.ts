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

import { AlreadyExists, Host, InvalidArgument } from '../lib';
import type { VmInstance } from '../lib/drivers/vm/vm';
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

/**
 * A tarball made by Python's tarfile, for archives tar would not make: entries as given (name,
 * text), or a symlink (name, target, 'l'), or a host file's bytes (name, path, 'f').
 */
function pyTar(file: string, entries: Array<[string, string] | [string, string, 'l' | 'f']>): void {
  const script = `import io, sys, tarfile, json
t = tarfile.open(sys.argv[1], 'w')
for e in json.loads(sys.argv[2]):
    name, text = e[0], e[1]
    i = tarfile.TarInfo(name)
    if len(e) > 2 and e[2] == 'l':
        i.type = tarfile.SYMTYPE; i.linkname = text; t.addfile(i); continue
    b = open(text, 'rb').read() if len(e) > 2 else text.encode()
    i.size = len(b); t.addfile(i, io.BytesIO(b))
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
    await refusedLeavingNothing(cut, /not a complete image archive/);
  });

  test('no metadata.yaml; malformed metadata.yaml; another architecture; paths that escape', async () => {
    const f = (n: string) => path.join(dir, n);
    pyTar(f('nometa.tar'), [['rootfs/etc/hosts', 'x']]);
    await refusedLeavingNothing(f('nometa.tar'), /has no metadata.yaml/);
    pyTar(f('badyaml.tar'), [['metadata.yaml', 'architecture: [x86_64\n  - : :'], ['rootfs/etc/hosts', 'x']]);
    await refusedLeavingNothing(f('badyaml.tar'), /malformed metadata.yaml/);
    pyTar(f('arm.tar'), [['metadata.yaml', 'architecture: aarch64\ncreation_date: 1\n'], ['rootfs/etc/hosts', 'x']]);
    await refusedLeavingNothing(f('arm.tar'), /"aarch64", which this host \(x86_64\) cannot run/);
    pyTar(f('escape.tar'), [['metadata.yaml', 'architecture: x86_64\n'], ['rootfs/../../escaped', 'x']]);
    await refusedLeavingNothing(f('escape.tar'), /contains "\.\."/);
    pyTar(f('abs.tar'), [['metadata.yaml', 'architecture: x86_64\n'], ['/tmp/lxq-abs-escaped', 'x']]);
    await refusedLeavingNothing(f('abs.tar'), /is an absolute path/);
    expect(existsSync('/tmp/lxq-abs-escaped')).toBe(false);
    await expect(host.images.import(f('none.tar'), { alias: 'x' })).rejects.toThrow(/no file/);
    await expect(host.images.import(f('arm.tar'), { alias: 'busybox' })).rejects.toBeInstanceOf(AlreadyExists);
  });
});

describe('hostile archives: names and values from the archive never reach the host', () => {
  const f = (n: string) => path.join(dir, n);
  /** A VM image archive as lxq exports it, with lxq.meta and the members changed as given. */
  function vmArchive(name: string, meta: Record<string, unknown>, members: Array<[string, string] | [string, string, 'l' | 'f']> = []): string {
    const disk = f(`${name}.qcow2`);
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', disk, '1M']);
    const files = { kernel: 'vmlinux', initrd: 'initrd.img', disk: 'disk.qcow2', ...(meta.files as object) };
    const lxqMeta = JSON.stringify({ format: 'lxq-vm-image/1', cmdline: 'console=ttyS0', ...meta, files });
    const yaml = `architecture: x86_64\ncreation_date: 1\nproperties:\n  lxq.type: vm\n  lxq.meta: ${JSON.stringify(lxqMeta)}\n`;
    const out = f(`${name}.tar`);
    pyTar(out, [['metadata.yaml', yaml], ['rootfs.img', disk, 'f'], [`lxq/${files.kernel}`, 'kernel'], [`lxq/${files.initrd}`, 'initrd'], ...members]);
    return out;
  }

  test('a VM image whose lxq.meta names a disk outside the image: refused before anything is written', async () => {
    const victim = f('victim.txt');
    writeFileSync(victim, 'precious\n');
    const rel = path.relative(path.join(images, 'vm', 'evil'), victim);
    await refusedLeavingNothing(vmArchive('evil-disk', { files: { disk: rel } }), /files\.disk must be a plain file name/);
    await refusedLeavingNothing(vmArchive('evil-disk-abs', { files: { disk: victim } }), /files\.disk must be a plain file name/);
    await refusedLeavingNothing(vmArchive('evil-kernel', { files: { kernel: 'boot/vmlinux' } }), /files\.kernel must be a plain file name/);
    // A comma would read as a new property in QEMU's -drive/-blockdev option strings.
    await refusedLeavingNothing(vmArchive('evil-comma', { files: { disk: 'd.qcow2,file.driver=host_device' } }), /files\.disk must be a plain file name/);
    expect(readFileSync(victim, 'utf8')).toBe('precious\n');
  });

  test('a VM image whose disk reaches into the host (backing file), whose kernel is a symlink, or raw: refused', async () => {
    const backed = f('backed.qcow2');
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', '/etc/hostname', '-F', 'raw', '-u', backed, '1M']);
    const withBacking = vmArchive('backing', {});
    pyTar(withBacking, [
      ['metadata.yaml', execFileSync('tar', ['-xOf', withBacking, 'metadata.yaml']).toString()],
      ['rootfs.img', backed, 'f'],
      ['lxq/vmlinux', 'k'],
      ['lxq/initrd.img', 'i'],
    ]);
    await refusedLeavingNothing(withBacking, /names a backing file/);
    const link = vmArchive('kernel-link', {});
    pyTar(link, [
      ['metadata.yaml', execFileSync('tar', ['-xOf', link, 'metadata.yaml']).toString()],
      ['rootfs.img', backed, 'f'],
      ['lxq/vmlinux', '/etc/shadow', 'l'],
      ['lxq/initrd.img', 'i'],
    ]);
    const err = await host.images.import(link, { alias: 'bad/kernel-link' }).catch((e) => e);
    expect(err.message).toMatch(/no regular file lxq\/vmlinux/);
    expect(existsSync(path.join(images, 'bad/kernel-link'))).toBe(false);
    const raw = vmArchive('raw', {});
    writeFileSync(f('raw.img'), Buffer.alloc(65536));
    pyTar(raw, [['metadata.yaml', execFileSync('tar', ['-xOf', raw, 'metadata.yaml']).toString()], ['rootfs.img', f('raw.img'), 'f'], ['lxq/vmlinux', 'k'], ['lxq/initrd.img', 'i']]);
    await refusedLeavingNothing(raw, /rootfs.img is raw, not qcow2/);
  });

  test('a container image whose halt signal or properties carry a liblxc line: refused', async () => {
    const meta = (lxqMeta: object, extra = '') => `architecture: x86_64\nproperties:\n  lxq.meta: ${JSON.stringify(JSON.stringify(lxqMeta))}\n${extra}`;
    pyTar(f('signal.tar'), [['metadata.yaml', meta({ haltSignal: 'SIGPWR\nlxc.hook.pre-start = /bin/touch /tmp/lxq-pwned' })], ['rootfs/etc/hosts', 'x']]);
    await refusedLeavingNothing(f('signal.tar'), /lxq\.meta\.haltSignal: ".*" holds a newline/);
    pyTar(f('signal2.tar'), [['metadata.yaml', meta({ haltSignal: 'SIGPWR = 1 lxc.hook' })], ['rootfs/etc/hosts', 'x']]);
    await refusedLeavingNothing(f('signal2.tar'), /haltSignal must be a signal name/);
    pyTar(f('init.tar'), [['metadata.yaml', meta({ haltSignal: 'SIGPWR', init: 'upstart' })], ['rootfs/etc/hosts', 'x']]);
    await refusedLeavingNothing(f('init.tar'), /init must be "busybox" or "systemd"/);
    pyTar(f('props.tar'), [['metadata.yaml', meta({ haltSignal: 'SIGPWR' }, '  os: "debian\\nlxc.x = y"\n')], ['rootfs/etc/hosts', 'x']]);
    await refusedLeavingNothing(f('props.tar'), /holds a newline/);
    expect(existsSync('/tmp/lxq-pwned')).toBe(false);
  });

  test('members under a symlink of the archive, or outside the image layout: refused by the check, not by tar', async () => {
    const yaml = 'architecture: x86_64\n';
    pyTar(f('under-link.tar'), [['metadata.yaml', yaml], ['rootfs/etc/hosts', 'x'], ['rootfs/up', dir, 'l'], ['rootfs/up/planted', 'x']]);
    await refusedLeavingNothing(f('under-link.tar'), /lies under a symlink of the archive/);
    expect(existsSync(path.join(dir, 'planted'))).toBe(false);
    pyTar(f('climb.tar'), [['metadata.yaml', yaml], ['rootfs/etc/hosts', 'x'], ['rootfs/up', '../../..', 'l']]);
    await refusedLeavingNothing(f('climb.tar'), /is a symlink to "..\/..\/..", out of the archive/);
    pyTar(f('stray.tar'), [['metadata.yaml', yaml], ['rootfs/etc/hosts', 'x'], ['etc/cron.d/x', 'x']]);
    await refusedLeavingNothing(f('stray.tar'), /is not part of an image/);
    pyTar(f('rootfs-link.tar'), [['metadata.yaml', yaml], ['rootfs', '/', 'l']]);
    await refusedLeavingNothing(f('rootfs-link.tar'), /neither a rootfs\/ directory nor rootfs.img/);
  });
});
