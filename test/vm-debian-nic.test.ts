/**
 * debian/12 VMs with bridged NICs, two boots side by side on a network of this file's own:
 * - agent.nic_config: the NIC's interface named (`up-link_7`, no eth* name) and sized (MTU 1400)
 *   by lxq's agent inside, and systemd-networkd (the image's DHCP on every Ethernet interface)
 *   configures it under that name;
 * - vm.saved_boot: the VM's first start loads the image's saved boot of its shape (made by that
 *   start if there is none: the saving VM's boot) and is its own machine afterwards: its MAC, the
 *   address lxq's dnsmasq leased for that MAC, systemd running, a machine id, boot id and hostname
 *   other than the saving VM's, and the host reaches it at its address.
 * Traffic goes only to the addresses lxq's network gave these VMs.
 */
import * as net from 'node:net';
import { randomBytes } from 'node:crypto';

import type { Instance, VirtualMachine } from '../lib';
import { SAVER_NAME, saverMac } from '../lib/drivers/vm/saved-boot';
import { tempHost, type TestHost } from './helpers/host';
import { systemdState } from './helpers/systemd';

jest.setTimeout(900_000);

/** A debian/12 boot under TCG beside other work (a saving VM's boot then the load: minutes at load 20). */
const BOOT_MS = 600_000;
/** agent.nic_config's name for the NIC inside: valid, and nothing like the kernel's eth*. */
const IFACE = 'up-link_7';

let t: TestHost;
let network: string;
let named: Promise<VirtualMachine>;
let saved: Promise<VirtualMachine>;

async function sh(i: Instance, script: string): Promise<string> {
  const r = await i.exec(['/bin/sh', '-c', script]);
  if (r.exitCode !== 0) throw new Error(`${script} exited ${r.exitCode}: ${r.stderr.toString()}`);
  return r.stdout.toString().trim();
}

/** Waits until `check` returns a value (undefined: not yet), for up to `ms`. */
async function until<T>(what: string, ms: number, check: () => Promise<T | undefined>): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await check();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`${what}: not within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 500));
  }
}

async function launch(name: string, config: Record<string, string>, nic: Record<string, string>): Promise<VirtualMachine> {
  const vm = (await t.host.create(name, { type: 'vm', image: 'debian/12', config, devices: { eth0: { type: 'nic', network, ...nic } } })) as VirtualMachine;
  await vm.start({ wait: { for: 'systemd', timeout: BOOT_MS } });
  return vm;
}

/** The guest's IPv4 address, once dnsmasq leased it for the VM's MAC (and only that one). */
async function leasedAddress(vm: VirtualMachine): Promise<string> {
  const address = await vm.waitForAddress({ family: 'inet', timeout: 180_000 });
  const mac = vm.devices.eth0.hwaddr!.toLowerCase();
  const leases = await (await t.host.networks.get(network)).leases();
  expect(leases.filter((l) => l.hwaddr.toLowerCase() === mac).map((l) => l.address)).toEqual([address]);
  return address;
}

beforeAll(async () => {
  t = await tempHost();
  await t.host.images.ensure('debian/12', { type: 'vm' });
  network = (await t.host.networks.create(`lxqdn${randomBytes(3).toString('hex')}`, { 'ipv4.nat': 'false', 'ipv6.address': 'none' })).name;
  // Both boots at once (each QEMU is one emulating thread): their waits overlap.
  named = launch(t.name('dnic'), { 'agent.nic_config': 'true' }, { name: IFACE, mtu: '1400' });
  saved = launch(t.name('dsav'), { 'vm.saved_boot': 'true' }, {});
  await Promise.allSettled([named, saved]);
}, 1_500_000);

afterAll(async () => {
  await t?.dispose();
}, 300_000);

test('agent.nic_config on debian/12: the interface is up-link_7 with MTU 1400 inside, and networkd leases it an address there', async () => {
  const vm = await named;
  const mac = vm.devices.eth0.hwaddr!.toLowerCase();
  expect(await sh(vm, `cat /sys/class/net/${IFACE}/address /sys/class/net/${IFACE}/mtu`)).toBe(`${mac}\n1400`);
  expect(await sh(vm, 'ls /sys/class/net | sort')).toBe(`lo\n${IFACE}`);
  const s = await vm.state();
  expect(s.network.interfaces.find((i) => i.hwaddr.toLowerCase() === mac)).toMatchObject({ name: IFACE, mtu: 1400 });
  // systemd-networkd's 20-ether.network (Type=ether) takes the renamed interface: DHCP from lxq's dnsmasq.
  const address = await leasedAddress(vm);
  expect(await sh(vm, `ip -4 -o addr show dev ${IFACE}`)).toContain(`inet ${address}/`);
  await until(`networkd: ${IFACE} configured`, 120_000, async () => (/configured/.test(await sh(vm, `networkctl list --no-legend --no-pager ${IFACE}`)) ? true : undefined));
  expect(await systemdState(vm)).toBe('running');
  // DHCP left the MTU as the agent set it.
  expect(await sh(vm, `cat /sys/class/net/${IFACE}/mtu`)).toBe('1400');
});

test("a debian/12 VM loaded from its saved boot with a bridged NIC: its MAC, its lease, systemd running, an identity other than the saver's, reached from the host", async () => {
  const vm = await saved;
  expect(await vm.state()).toMatchObject({ status: 'running', boot: 'saved-state' });
  const mac = vm.devices.eth0.hwaddr!.toLowerCase();
  expect(await sh(vm, 'cat /sys/class/net/eth0/address')).toBe(mac);
  expect(await systemdState(vm)).toBe('running');
  expect(await sh(vm, 'systemctl --failed --no-legend --plain')).toBe('');

  // Hostname: the VM's name, not the saving VM's (the kernel's, /etc/hostname, systemd's hostnamed).
  expect(await sh(vm, 'hostname; cat /etc/hostname; hostnamectl hostname')).toBe(`${vm.name}\n${vm.name}\n${vm.name}`);
  expect(SAVER_NAME).not.toBe(vm.name);
  // Boot id: the one bound over /proc is the VM's own; a procfs mounted anew shows the kernel's,
  // which is the saving VM's.
  const [own, kernels] = (await sh(vm, 'd=$(mktemp -d); mount -t proc proc "$d"; cat /proc/sys/kernel/random/boot_id "$d/sys/kernel/random/boot_id"; umount "$d"; rmdir "$d"')).split('\n');
  expect(own).toMatch(/^[0-9a-f-]{36}$/);
  expect(kernels).toMatch(/^[0-9a-f-]{36}$/);
  expect(own).not.toBe(kernels);
  // journald's boot is the VM's own boot id.
  expect(await sh(vm, 'journalctl --list-boots --no-pager | tail -n 1')).toContain(own.replace(/-/g, ''));
  // Machine id: the VM's own, as systemd (PID 1 re-executed) and journald see it; the saving VM's
  // journal directory is the other one.
  const id = await sh(vm, 'cat /etc/machine-id');
  expect(id).toMatch(/^[0-9a-f]{32}$/);
  expect(await sh(vm, "hostnamectl status | sed -n 's/^ *Machine ID: //p'")).toBe(id);
  const journals = (await sh(vm, 'ls /var/log/journal')).split('\n');
  expect(journals).toContain(id);
  await until(`journald writes to /var/log/journal/${id}`, 60_000, async () => ((await sh(vm, `ls /var/log/journal/${id}`)).includes('system.journal') ? true : undefined));
  const saverIds = journals.filter((j) => j !== id);
  expect(saverIds).toHaveLength(1);
  expect(saverIds[0]).toMatch(/^[0-9a-f]{32}$/);

  // The lease dnsmasq gave is for the VM's own MAC; none for the saving VM's (it was on no bridge).
  const address = await leasedAddress(vm);
  const leases = await (await t.host.networks.get(network)).leases();
  expect(leases.filter((l) => l.hwaddr.toLowerCase() === saverMac(0))).toEqual([]);
  expect(await sh(vm, 'ip -4 -o addr show dev eth0')).toContain(`inet ${address}/`);

  // The host reaches the guest at that address: a TCP service of the guest's systemd answers.
  await sh(vm, `systemd-run --unit lxq-hello --property Type=simple systemd-socket-activate -l 7777 --inetd -a /bin/sh -c 'echo "hello from $(hostname)"'`);
  const reply = await until(`TCP ${address}:7777 from the host`, 120_000, () => new Promise<string | undefined>((resolve) => {
    let got = '';
    const c = net.connect({ host: address, port: 7777, timeout: 5_000 });
    c.on('data', (d) => (got += d));
    c.on('end', () => resolve(got || undefined));
    c.on('timeout', () => c.destroy());
    c.on('error', () => resolve(undefined));
    c.on('close', () => resolve(got || undefined));
  }));
  expect(reply.trim()).toBe(`hello from ${vm.name}`);
});
