/**
 * LXD's passthrough devices (`gpu`, `usb`, `pci`, `infiniband`): declared, their keys checked
 * (InvalidArgument naming the key), and refused with NotSupported naming what lxq looked for on
 * this host, which has no GPU, USB bus, IOMMU or InfiniBand device. The expectations read the
 * host's sysfs first, so a host with such hardware gets the "found …, not in this version" form.
 * Nothing is made: no instance, no device added.
 */
import { existsSync, readdirSync } from 'node:fs';

import { InvalidArgument, NotSupported } from '../lib';
import { tempHost, type TestHost, thrown } from './helpers/host';

jest.setTimeout(120_000);

let t: TestHost;
beforeAll(async () => {
  t = await tempHost();
});
afterAll(async () => {
  await t?.dispose();
});

const create = (type: 'container' | 'vm', device: Record<string, unknown>) =>
  thrown(t.host.create(t.name('pt'), { type, image: type === 'vm' ? 'vm/default' : 'busybox', devices: { dev: device as never } }));

test.each([
  ['container', { type: 'gpu', vendorid: '10DE' }, 'vendorid'],
  ['container', { type: 'gpu', pci: '1:0.0' }, 'pci'],
  ['container', { type: 'gpu', gputype: 'virtual' }, 'gputype'],
  ['container', { type: 'gpu', gputype: 'mdev' }, 'gputype'],
  ['vm', { type: 'gpu', gputype: 'mig', id: '0' }, 'gputype'],
  ['vm', { type: 'gpu', gputype: 'mdev', mdev: 'i915-GVTg_V5_4', 'mig.uuid': 'MIG-1' }, 'mig.uuid'],
  ['container', { type: 'gpu', mdev: 'i915-GVTg_V5_4' }, 'mdev'],
  ['container', { type: 'gpu', pci: '0000:01:00.0', vendorid: '10de' }, 'vendorid'],
  ['container', { type: 'gpu', id: '1', productid: '1234' }, 'productid'],
  ['container', { type: 'gpu', id: '../1' }, 'id'],
  ['container', { type: 'gpu', gputype: 'mig', 'mig.gi': '1' }, 'mig.ci'],
  ['container', { type: 'gpu', gputype: 'mig', 'mig.gi': '300', 'mig.ci': '0' }, 'mig.gi'],
  ['vm', { type: 'gpu', gputype: 'mdev' }, 'mdev'],
  ['vm', { type: 'gpu', uid: '1000' }, 'uid'],
  ['container', { type: 'usb', productid: 'ABCD' }, 'productid'],
  ['container', { type: 'usb', busnum: 'one' }, 'busnum'],
  ['container', { type: 'usb', required: 'maybe' }, 'required'],
  ['vm', { type: 'pci' }, 'address'],
  ['vm', { type: 'pci', address: '0000:01:00' }, 'address'],
  ['container', { type: 'infiniband', parent: 'ib0', name: 'ib0' }, 'nictype'],
  ['container', { type: 'infiniband', nictype: 'bridged', parent: 'ib0', name: 'ib0' }, 'nictype'],
  ['container', { type: 'infiniband', nictype: 'physical', name: 'ib0' }, 'parent'],
  ['container', { type: 'infiniband', nictype: 'physical', parent: 'ib0' }, 'name'],
  ['vm', { type: 'infiniband', nictype: 'sriov', parent: 'ib0', hwaddr: '00:11:22' }, 'hwaddr'],
  ['vm', { type: 'infiniband', nictype: 'sriov', parent: 'ib0', mtu: 'big' }, 'mtu'],
] as const)('%s %j: InvalidArgument naming "%s"', async (type, device, key) => {
  const e = await create(type, device);
  expect(e).toBeInstanceOf(InvalidArgument);
  expect(e.message).toContain(`"${key}"`);
});

test('a pci device on a container: NotSupported (VMs only, as LXD)', async () => {
  expect(await create('container', { type: 'pci', address: '0000:00:00.0' })).toBeInstanceOf(NotSupported);
});

test('refused with NotSupported naming what was looked for on this host', async () => {
  const drm = existsSync('/sys/class/drm') ? readdirSync('/sys/class/drm').filter((e) => /^card\d+$/.test(e)) : [];
  const gpu = await create('container', { type: 'gpu', vendorid: 'fffe', productid: 'fffd' });
  expect(gpu).toBeInstanceOf(NotSupported);
  expect(gpu.message).toMatch(/no GPU matching vendorid fffe, productid fffd \(a physical GPU\): looked for DRM cards in \/sys\/class\/drm/);
  if (!drm.length) expect(gpu.message).toContain('this host has no GPU (no /dev/dri)');
  const vgpu = await create('vm', { type: 'gpu', gputype: 'sriov', pci: '0000:ff:1f.7' });
  expect(vgpu).toBeInstanceOf(NotSupported);
  expect(vgpu.message).toMatch(/no GPU matching pci 0000:ff:1f.7 \(a sriov GPU\)/);

  const usb = await create('container', { type: 'usb', vendorid: 'fffe', productid: 'fffd' });
  expect(usb).toBeInstanceOf(NotSupported);
  expect(usb.message).toMatch(existsSync('/sys/bus/usb/devices') ? /no USB device matching vendorid fffe, productid fffd under \/sys\/bus\/usb\/devices/ : /this host has no USB bus: \/sys\/bus\/usb\/devices is missing, so no USB device matching vendorid fffe, productid fffd/);

  const pci = await create('vm', { type: 'pci', address: 'ff:1f.7' });
  expect(pci).toBeInstanceOf(NotSupported);
  expect(pci.message).toContain('no PCI device at 0000:ff:1f.7 on this host (looked in /sys/bus/pci/devices)');
  const present = readdirSync('/sys/bus/pci/devices')[0];
  const real = await create('vm', { type: 'pci', address: present });
  expect(real).toBeInstanceOf(NotSupported);
  expect(real.message).toMatch(existsSync(`/sys/bus/pci/devices/${present}/iommu_group`) ? /lxq does not pass PCI devices through/ : new RegExp(`the PCI device at ${present} \\(.*\\) has no IOMMU group`));

  const lo = await create('container', { type: 'infiniband', nictype: 'physical', parent: 'lo', name: 'ib0' });
  expect(lo).toBeInstanceOf(NotSupported);
  expect(lo.message).toMatch(/the host link "lo" is not an InfiniBand link \(its type is 772/);
  const none = await create('vm', { type: 'infiniband', nictype: 'sriov', parent: 'ibnone0' });
  expect(none).toBeInstanceOf(NotSupported);
  expect(none.message).toMatch(/no host link "ibnone0" \(looked in \/sys\/class\/net\)/);
  if (!existsSync('/sys/class/infiniband')) expect(none.message).toContain('this host has no InfiniBand device (/sys/class/infiniband)');
  expect(await t.host.list()).toEqual([]);
});

test('added to an existing container: refused, its devices unchanged', async () => {
  const c = await t.host.create(t.name('pt'), { image: 'busybox' });
  try {
    const before = JSON.stringify(c.devices);
    expect(await thrown(c.addDevice('gpu0', { type: 'gpu', id: '0' }))).toBeInstanceOf(NotSupported);
    expect(await thrown(c.addDevice('usb0', { type: 'usb', vendorid: '0403' }))).toBeInstanceOf(NotSupported);
    expect(JSON.stringify(c.devices)).toBe(before);
  } finally {
    await c.delete({ force: true });
  }
});
