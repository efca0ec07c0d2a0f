/**
 * VM snapshots on a real QEMU overlay: internal qcow2 snapshots of a stopped VM's disk.qcow2
 * (its content checked with qemu-io), and the refusal of what is not done yet (running VMs).
 */
import { execFileSync } from 'node:child_process';
import * as path from 'node:path';

import { NotFound, NotSupported } from '../lib';
import { tempHost, TestHost } from './helpers/host';

let t: TestHost;
beforeAll(async () => {
  t = await tempHost();
  await t.host.images.ensure('vm/default');
}, 300_000);
afterAll(async () => {
  await t?.dispose();
});

const qemuIo = (disk: string, cmd: string) => execFileSync('qemu-io', ['-f', 'qcow2', '-c', cmd, disk], { encoding: 'utf8' });
const snapshotsIn = (disk: string) => execFileSync('qemu-img', ['snapshot', '-l', disk], { encoding: 'utf8' });

test('a stopped VM: snapshot, change the disk, restore brings the disk and the record back; delete removes the internal snapshot', async () => {
  const vm = await t.host.create(t.name('vms'), { type: 'vm', image: 'vm/default', config: { 'user.k': 'before' } });
  const disk = path.join(t.dir, 'instances', vm.name, 'disk.qcow2');
  qemuIo(disk, 'write -P 0xab 1M 64k');
  const s = await vm.snapshots.create();
  expect(s.name).toBe('snap0');
  expect(snapshotsIn(disk)).toMatch(/lxq-/);
  qemuIo(disk, 'write -P 0xcd 1M 64k');
  await vm.update({ 'user.k': 'after' });
  await vm.snapshots.restore('snap0');
  expect(qemuIo(disk, 'read -P 0xab 1M 64k')).not.toMatch(/verification failed/i); // qemu-io also exits 1 on a mismatch
  expect(vm.config['user.k']).toBe('before');
  await vm.snapshots.delete('snap0');
  expect(snapshotsIn(disk)).not.toMatch(/lxq-/);
  await expect(vm.snapshots.restore('snap0')).rejects.toThrow(NotFound);
  await vm.delete();
});

test('a running VM: snapshot and restore are refused with NotSupported and change nothing', async () => {
  const vm = await t.host.create(t.name('vmr'), { type: 'vm', image: 'vm/default' });
  await vm.snapshots.create('cold');
  await vm.start();
  try {
    await expect(vm.snapshots.create('hot')).rejects.toThrow(NotSupported);
    await expect(vm.snapshots.restore('cold')).rejects.toThrow(NotSupported);
    expect((await vm.snapshots.list()).map((x) => x.name)).toEqual(['cold']);
    expect(await vm.status()).toBe('running');
  } finally {
    await vm.delete({ force: true });
  }
});
