/**
 * VM snapshots on a real QEMU overlay: internal qcow2 snapshots of a stopped VM's disk.qcow2
 * (its content checked with qemu-io), and a running VM's stateful snapshot through QMP jobs.
 */
import { execFileSync } from 'node:child_process';
import * as path from 'node:path';

import { NotFound, NotSupported } from '../lib';
import { tempHost, TestHost } from './helpers/host';
import { until } from './helpers/wait';

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
    // A counter kept in a shell's memory: it counts each /run/tick it finds (and takes away) and
    // publishes its value by a rename, so the value depends on the guest's memory only, never on
    // how long the restore takes under load.
    const counter = 'i=0; echo 0 > /run/c.new; mv /run/c.new /run/count; while :; do if [ -e /run/tick ]; then rm -f /run/tick; i=$((i+1)); echo $i > /run/c.new; mv /run/c.new /run/count; fi; sleep 0.1; done';
    const pid = await sh(`setsid sh -c '${counter}' >/dev/null 2>&1 < /dev/null & echo $!`);
    const count = () => sh('cat /run/count 2>/dev/null || true');
    await until('the counter to start', async () => (await count()) === '0', 120_000, 200);
    const hot = await vm.snapshots.create('hot');
    expect(hot.stateful).toBe(true);
    await sh('touch /run/tick; echo later > /root/after-snapshot; sync');
    await until('the counter to count a tick', async () => (await count()) === '1', 120_000, 200);
    await vm.snapshots.restore('hot');
    expect(await vm.status()).toBe('running');
    // The guest's memory is the snapshot's: the tick never happened, and the shell, counting on
    // from its own i, says 1 at the next tick (2 had the restore not taken).
    expect(await count()).toBe('0');
    await sh('touch /run/tick');
    await until('the restored counter to count a tick', async () => (await count()) !== '0', 120_000, 200);
    expect(await count()).toBe('1');
    expect(await sh(`kill -0 ${pid} && echo alive`)).toBe('alive'); // the same process, not a new boot
    expect(await sh('test -e /root/after-snapshot && echo there || echo gone')).toBe('gone');
    // A disk-only snapshot cannot be loaded into a running VM: refused, nothing changed.
    await expect(vm.snapshots.restore('cold')).rejects.toThrow(NotSupported);
    const tagsIn = () => (execFileSync('qemu-img', ['snapshot', '-U', '-l', path.join(t.dir, 'instances', vm.name, 'disk.qcow2')], { encoding: 'utf8' }).match(/lxq-\S+/g) ?? []).length;
    expect(tagsIn()).toBe(2);
    await vm.snapshots.delete('hot'); // QMP snapshot-delete
    expect(tagsIn()).toBe(1);
    expect((await vm.snapshots.list()).map((x) => x.name)).toEqual(['cold']);
    // migration.stateful=false: a running VM's snapshot is of its disk only.
    await vm.update({ 'migration.stateful': 'false' });
    const diskOnly = await vm.snapshots.create('diskonly');
    expect(diskOnly.stateful).toBe(false);
    await expect(vm.snapshots.restore('diskonly')).rejects.toThrow(NotSupported);
    expect(await vm.status()).toBe('running');
  } finally {
    await vm.delete({ force: true });
  }
}, 600_000);
