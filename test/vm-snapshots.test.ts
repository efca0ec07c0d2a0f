/**
 * VM snapshots on a real QEMU overlay: internal qcow2 snapshots of a stopped VM's disk.qcow2
 * (its content checked with qemu-io), and a running VM's stateful snapshot through QMP jobs.
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

test('a running VM: a stateful snapshot (QMP snapshot-save) restored live resumes a guest process where it was', async () => {
  const vm = await t.host.create(t.name('vmr'), { type: 'vm', image: 'vm/default' });
  await vm.snapshots.create('cold');
  await vm.start();
  try {
    await (vm as unknown as { waitForAgent(ms: number): Promise<void> }).waitForAgent(240_000);
    const sh = async (cmd: string) => (await vm.exec(['sh', '-c', cmd])).stdout.toString().trim();
    // A counter kept in a shell's memory, written out every 0.2 s.
    const pid = await sh("setsid sh -c 'i=0; while :; do i=$((i+1)); echo $i > /run/count; sleep 0.2; done' >/dev/null 2>&1 < /dev/null & echo $!");
    await new Promise((r) => setTimeout(r, 2_000));
    const hot = await vm.snapshots.create('hot');
    expect(hot.stateful).toBe(true);
    const atSnapshot = Number(await sh('cat /run/count'));
    await sh('echo later > /root/after-snapshot');
    await new Promise((r) => setTimeout(r, 4_000));
    const beforeRestore = Number(await sh('cat /run/count'));
    expect(beforeRestore).toBeGreaterThan(atSnapshot);
    await vm.snapshots.restore('hot');
    expect(await vm.status()).toBe('running');
    const afterRestore = Number(await sh('cat /run/count'));
    expect(afterRestore).toBeLessThan(beforeRestore);
    expect(await sh(`kill -0 ${pid} && echo alive`)).toBe('alive'); // the same process, not a new boot
    expect(await sh('test -e /root/after-snapshot && echo there || echo gone')).toBe('gone');
    // A disk-only snapshot cannot be loaded into a running VM: refused, nothing changed.
    await expect(vm.snapshots.restore('cold')).rejects.toThrow(NotSupported);
    const tagsIn = () => (execFileSync('qemu-img', ['snapshot', '-U', '-l', path.join(t.dir, 'instances', vm.name, 'disk.qcow2')], { encoding: 'utf8' }).match(/lxq-\S+/g) ?? []).length;
    expect(tagsIn()).toBe(2);
    await vm.snapshots.delete('hot'); // QMP snapshot-delete
    expect(tagsIn()).toBe(1);
    expect((await vm.snapshots.list()).map((x) => x.name)).toEqual(['cold']);
    expect(await vm.status()).toBe('running');
  } finally {
    await vm.delete({ force: true });
  }
}, 600_000);
