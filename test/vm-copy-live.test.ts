/**
 * Copies and exports of a running VM (QMP blockdev-backup jobs), flattened copies, new MACs and,
 * for a systemd guest, a new machine id: on real TCG VMs, each copy booted.
 */
import { execFileSync } from 'node:child_process';
import * as path from 'node:path';

import { Instance, NotSupported } from '../lib';
import { tempHost, TestHost } from './helpers/host';

let t: TestHost;
let net: string;
let src: Instance;
const memory = { 'limits.memory': '256MiB' };

const disk = (name: string) => path.join(t.dir, 'instances', name, 'disk.qcow2');
const info = (file: string) => JSON.parse(execFileSync('qemu-img', ['info', '-U', '--output=json', file], { encoding: 'utf8' }));
const out = (r: { stdout: Buffer }) => r.stdout.toString().trim();
const sh = (i: Instance, script: string) => i.exec(['sh', '-c', script], { timeout: 120_000 }).then(out);

beforeAll(async () => {
  t = await tempHost();
  await t.host.images.ensure('vm/default');
  net = (await t.host.networks.create(`lxqvc${Math.random().toString(16).slice(2, 8)}`, { 'ipv4.nat': 'false' })).name;
  src = await t.host.create(t.name('src'), { type: 'vm', image: 'vm/default', config: memory, devices: { eth0: { type: 'nic', network: net } } });
  await src.start();
}, 600_000);
afterAll(async () => {
  await t?.dispose(); // its network too
}, 180_000);

test('a running VM is copied by a backup job (overlay, and flattened), from a snapshot, exported and imported: each boots with the disk of its moment and a new MAC', async () => {
  await sh(src, 'echo before > /root/before; sync');
  await src.snapshots.create('s1'); // stateful (RAM too), the VM running
  const copy = await t.host.copy(src.name, t.name('live'));
  expect(await src.status()).toBe('running');
  await sh(src, 'echo after > /root/after; sync');
  const flat = await t.host.copy(src.name, t.name('flat'), { flatten: true });
  const file = path.join(t.dir, 'running.tar.zst');
  await expect(src.export(file)).rejects.toBeInstanceOf(NotSupported); // its snapshot cannot be read while it runs
  await src.export(file, { instanceOnly: true });
  expect(await src.status()).toBe('running');
  const imported = await t.host.import(file, { name: t.name('imp') });
  // From a snapshot of the running VM: its disk state read while QEMU holds the file.
  const fromSnap = await t.host.copy(src.name, t.name('snap'), { snapshot: 's1' });
  const image = await t.host.images.publish(src, `lxq-test/pub-live-${src.name}`, { snapshot: 's1' });
  try {
    execFileSync('qemu-img', ['check', '-q', path.join(image.dir, 'disk.qcow2')]);
  } finally {
    await t.host.images.delete(image.name);
  }

  const backing = info(disk(src.name))['full-backing-filename'];
  expect(info(disk(copy.name))['full-backing-filename']).toBe(backing);
  expect(info(disk(imported.name))['full-backing-filename']).toBe(backing);
  expect(info(disk(flat.name))['backing-filename']).toBeUndefined();
  for (const c of [copy, flat]) {
    expect(c.devices.eth0.hwaddr).not.toBe(src.devices.eth0.hwaddr);
    expect(c.devices.eth0.network).toBe(net);
  }

  // The source's disk is in use: the copies are made of it, yet none is torn (qemu-img check).
  for (const c of [copy, flat, imported, fromSnap]) execFileSync('qemu-img', ['check', '-q', disk(c.name)]);
  const copies = [copy, flat, imported, fromSnap];
  try {
    await Promise.all(copies.map((c) => c.start()));
    expect(await sh(copy, 'cat /root/before; test -e /root/after && echo after || echo no-after')).toBe('before\nno-after');
    expect(await sh(flat, 'cat /root/before /root/after')).toBe('before\nafter');
    expect(await sh(imported, 'cat /root/after')).toBe('after');
    expect(await sh(fromSnap, 'cat /root/before; test -e /root/after && echo after || echo no-after')).toBe('before\nno-after');
    for (const c of [copy, flat]) expect(await sh(c, 'cat /sys/class/net/eth0/address')).toBe(c.devices.eth0.hwaddr.toLowerCase());
    // Independent: a write in the copy is not in the source.
    await sh(copy, 'echo mine > /root/mine; sync');
    expect(await sh(src, 'ls /root')).not.toContain('mine');
  } finally {
    await Promise.all(copies.map((c) => c.stop({ force: true })));
  }
}, 600_000);

test('a stopped VM copied with flatten has a standalone disk; containers accept flatten (their copies are always full)', async () => {
  await src.stop();
  const flat = await t.host.copy(src.name, t.name('sflat'), { flatten: true });
  expect(info(disk(flat.name))['backing-filename']).toBeUndefined();
  expect(info(disk(flat.name))['virtual-size']).toBe(info(disk(src.name))['virtual-size']);
  execFileSync('qemu-img', ['check', '-q', disk(flat.name)]);
  await expect(t.host.copy(src.name, t.name('x'), { flatten: 'yes' } as never)).rejects.toThrow(/flatten must be a boolean/);
  await t.host.images.ensure('busybox');
  const ct = await t.host.create(t.name('ct'), { image: 'busybox' });
  const ctCopy = await t.host.copy(ct.name, t.name('ctflat'), { flatten: true });
  expect((await ctCopy.files.read('/bin/busybox')).length).toBeGreaterThan(0);
}, 300_000);

test('a copy of a systemd VM gets a new machine id at its first boot', async () => {
  await t.host.images.ensure('debian/12', { type: 'vm' });
  const deb = await t.host.create(t.name('deb'), { type: 'vm', image: 'debian/12', config: { 'limits.memory': '512MiB' } });
  let copy: Instance | undefined;
  try {
    await deb.start();
    const id = await sh(deb, 'cat /etc/machine-id');
    expect(id).toMatch(/^[0-9a-f]{32}$/);
    copy = await t.host.copy(deb.name, t.name('debcp'));
    await deb.stop({ force: true });
    await copy.start();
    const copied = await sh(copy, 'cat /etc/machine-id');
    expect(copied).toMatch(/^[0-9a-f]{32}$/);
    expect(copied).not.toBe(id);
  } finally {
    await copy?.stop({ force: true });
    await deb.stop({ force: true });
  }
}, 600_000);
