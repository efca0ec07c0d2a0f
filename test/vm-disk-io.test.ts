/**
 * A VM block disk's I/O keys (LXD's): limits.read/write/max as QEMU's I/O throttling (read back
 * from query-block, changed live without an unplug, and on a hot-plugged disk), io.cache as the
 * node's cache mode, boot.priority as bootindex, io.bus nvme and usb (a usb-storage disk on lxq's
 * qemu-xhci controller, at start and hot-plugged); bad values refused. One VM.
 */
import { Instance, InvalidArgument } from '../lib';
import type { VmInstance } from '../lib/drivers/vm/vm';
import { tempHost, TestHost } from './helpers/host';
import { until } from './helpers/wait';

let t: TestHost;
let vm: Instance;

/** query-block's entry of a disk device. */
async function block(name: string) {
  const all = await (vm as VmInstance).qmp.execute('query-block');
  const b = all.find((e) => e.qdev === `dev-${name}` || e.qdev?.startsWith(`/machine/peripheral/dev-${name}/`));
  if (!b?.inserted) throw new Error(`no block device for ${name}: ${JSON.stringify(all.map((e) => e.qdev))}`);
  return b.inserted;
}
const bootindex = async (name: string) => (vm as VmInstance).qmp.execute('qom-get', { path: `/machine/peripheral/dev-${name}`, property: 'bootindex' });

beforeAll(async () => {
  t = await tempHost();
  vm = await t.host.create(t.name('vmio'), {
    type: 'vm',
    image: 'vm/default',
    devices: {
      slow: { type: 'disk', size: '32MiB', 'limits.read': '10MB', 'limits.write': '100iops', 'io.cache': 'unsafe', 'boot.priority': '1' },
      fast: { type: 'disk', size: '32MiB', 'io.bus': 'nvme', 'boot.priority': '10', 'io.cache': 'writeback' },
      stick: { type: 'disk', size: '16MiB', 'io.bus': 'usb', 'limits.read': '5MB' },
    },
  });
  await vm.start();
}, 180_000);
afterAll(async () => {
  await t?.dispose();
});

test('limits, cache mode and boot order as QEMU has them; an nvme disk in the guest', async () => {
  expect(await block('slow')).toMatchObject({ bps_rd: 10_000_000, bps_wr: 0, iops_rd: 0, iops_wr: 100, cache: { 'no-flush': true, direct: false } });
  expect(await block('fast')).toMatchObject({ bps_rd: 0, bps_wr: 0, iops_rd: 0, iops_wr: 0, cache: { 'no-flush': false, direct: false } });
  expect(await bootindex('fast')).toBe(1);
  expect(await bootindex('slow')).toBe(2);
  const r = await vm.exec(['sh', '-c', 'cat /sys/class/nvme/nvme0/serial'], { timeout: 60_000 });
  expect(r.stdout.toString().trim()).toBe('fast');
}, 120_000);

const qomType = (path: string) => (vm as VmInstance).qmp.execute('qom-get', { path, property: 'type' });

test('io.bus usb: a usb-storage disk on lxq\'s qemu-xhci controller (its limits set), hot-plugged too; seen by a guest kernel that has USB', async () => {
  expect(await qomType('/machine/peripheral/dev-stick')).toBe('usb-storage');
  expect(await qomType('/machine/peripheral/lxq-xhci')).toBe('qemu-xhci');
  expect(await block('stick')).toMatchObject({ bps_rd: 5_000_000 });
  await vm.addDevice('stick2', { type: 'disk', size: '8MiB', 'io.bus': 'usb' });
  expect(await qomType('/machine/peripheral/dev-stick2')).toBe('usb-storage');
  await vm.removeDevice('stick2');
  // Debian's cloud kernel (vm/default's) is built without USB (CONFIG_USB_SUPPORT unset): the disk is QEMU's only there.
  const usb = (await vm.exec(['sh', '-c', 'test -d /sys/bus/usb && echo yes || echo no'], { timeout: 60_000 })).stdout.toString().trim() === 'yes';
  if (usb) {
    const sizes = async () => (await vm.exec(['sh', '-c', 'for d in /sys/block/sd*; do case "$(readlink -f $d)" in */usb*) cat $d/size;; esac; done'], { timeout: 60_000 })).stdout.toString().split('\n');
    await until('the usb disk in the guest', async () => (await sizes()).includes(String((16 * 1024 * 1024) / 512)));
  }
}, 180_000);

test('a limit changed live (the disk stays plugged) and a hot-plugged disk with limits.max', async () => {
  const node = (await block('slow'))['node-name'];
  await vm.updateDevice('slow', { 'limits.read': '20MB', 'limits.write': null });
  expect(await block('slow')).toMatchObject({ 'node-name': node, bps_rd: 20_000_000, iops_wr: 0 });
  await vm.addDevice('hot', { type: 'disk', size: '16MiB', 'limits.max': '50iops' });
  expect(await block('hot')).toMatchObject({ iops_rd: 50, iops_wr: 50 });
  await vm.removeDevice('hot');
}, 120_000);

test('bad input: bad units, limits.max with limits.read, a limit on a shared directory', async () => {
  await expect(vm.addDevice('x', { type: 'disk', size: '16MiB', 'limits.read': '10 parsecs' })).rejects.toThrow(/bad value for "limits.read"/);
  await expect(vm.addDevice('x', { type: 'disk', size: '16MiB', 'limits.read': '0iops' })).rejects.toThrow(InvalidArgument);
  await expect(vm.addDevice('x', { type: 'disk', size: '16MiB', 'limits.read': '1MB', 'limits.max': '2MB' })).rejects.toThrow(/not both/);
  await expect(vm.addDevice('x', { type: 'disk', source: t.dir, path: '/mnt/x', 'limits.read': '1MB' })).rejects.toThrow(/apply to block disks/);
  await expect(vm.addDevice('x', { type: 'disk', size: '16MiB', 'io.cache': 'directsync' as never })).rejects.toThrow(InvalidArgument);
  expect(Object.keys(vm.devices).sort()).toEqual(['fast', 'slow', 'stick']);
}, 60_000);
