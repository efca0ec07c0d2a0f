/**
 * cloud-init.* options on a container of `debian/12/cloud` (Debian's cloud-init, NoCloud only):
 * the seed written into its root before the first start, a runcmd, a user from user-data with an
 * ssh key from cloud-init.ssh-keys.*, a changed seed run again at the next start (new
 * instance-id), no seed once the keys are gone; bad values refused with nothing changed. One
 * container, booted three times. The VM side is test/cloud-init-vm.test.ts.
 */
import { InvalidArgument } from '../lib';
import { defaultNetworkConfig } from '../lib/instance/cloud-init';
import { sh, tempHost, type TestHost, thrown } from './helpers/host';
import { until } from './helpers/wait';

const IMAGE = 'debian/12/cloud';
const KEY = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGx0cS10ZXN0LWtleS1ub3QtcmVhbC0wMDAwMDAwMDAw lxq-test';
const userData = (file: string): string =>
  ['#cloud-config', 'users:', '  - name: alice', '    shell: /bin/sh', 'runcmd:', `  - [sh, -c, 'echo "$(hostname)" > ${file}']`, ''].join('\n');

let t: TestHost;
beforeAll(async () => {
  t = await tempHost();
  // Cached in the shared store after the first build (minutes: Debian's cloud-init and Python).
  await t.host.images.ensure(IMAGE);
}, 1_800_000);
afterAll(async () => t?.dispose());

test('bad cloud-init values are refused naming the key, and nothing changes', async () => {
  const cases: [Record<string, unknown>, RegExp][] = [
    [{ 'cloud-init.user-data': '#cloud-config\nruncmd: [\n' }, /"cloud-init\.user-data".*YAML does not parse/],
    [{ 'cloud-init.user-data': 'runcmd: []\n' }, /"cloud-init\.user-data".*#cloud-config/],
    [{ 'cloud-init.vendor-data': { runcmd: [] } }, /"cloud-init\.vendor-data" must be a string/],
    [{ 'user.user-data': '#cloud-config\n- a list\n' }, /"user\.user-data".*mapping/],
    [{ 'cloud-init.network-config': 'version: [2\n' }, /"cloud-init\.network-config".*YAML/],
    [{ 'cloud-init.ssh-keys.main': KEY }, /"cloud-init\.ssh-keys\.main".*user:key/],
    [{ 'cloud-init.ssh-keys.main': 'alice:not-a-key' }, /"cloud-init\.ssh-keys\.main".*neither a public key/],
  ];
  for (const [config, message] of cases) {
    const name = t.name('bad');
    const err = await thrown(t.host.create(name, { image: IMAGE, config: config as never }));
    expect([err.constructor, err.message]).toEqual([InvalidArgument, expect.stringMatching(message)]);
    expect((await t.host.list()).map((i) => i.name)).not.toContain(name);
  }
  const c = await t.host.create(t.name('kept'), { image: 'busybox', config: { 'cloud-init.user-data': '#cloud-config\n' } });
  for (const [config, message] of cases) {
    expect((await thrown(c.update(config as never))).message).toMatch(message);
    expect(c.config).toEqual({ 'cloud-init.user-data': '#cloud-config\n' });
  }
  await c.delete({ force: true });
}, 120_000);

test("LXD's older user.* forms seed where the cloud-init.* key is unset, and give way where it is set", async () => {
  const vendor = '#cloud-config\nruncmd: [[true]]\n';
  const network = 'version: 2\nethernets:\n  eth0:\n    dhcp4: false\n';
  const c = await t.host.create(t.name('legacy'), { image: 'busybox', config: { 'user.vendor-data': vendor, 'user.network-config': network, 'user.user-data': '#cloud-config\n' } });
  try {
    await c.start();
    const seed = async (file: string) => (await sh(c, `cat /var/lib/cloud/seed/nocloud/${file}`)).out;
    expect(await seed('vendor-data')).toBe(vendor);
    expect(await seed('network-config')).toBe(network);
    await c.stop({ force: true });
    await c.update({ 'cloud-init.network-config': 'version: 2\n', 'cloud-init.vendor-data': '#cloud-config\n' });
    await c.start();
    expect(await seed('vendor-data')).toBe('#cloud-config\n');
    expect(await seed('network-config')).toBe('version: 2\n');
  } finally {
    await c.delete({ force: true });
  }
}, 120_000);

test('a container runs the runcmd, makes the user with the ssh key, DHCPs its NIC by LXD\'s default network-config, runs a changed seed again, and boots without cloud-init once the keys are gone', async () => {
  const net = await t.host.networks.create(`lxqci${Math.random().toString(16).slice(2, 8)}`, { 'ipv4.nat': 'false' });
  const c = await t.host.create(t.name('ci'), {
    image: IMAGE,
    config: { 'cloud-init.user-data': userData('/var/tmp/first'), 'cloud-init.ssh-keys.main': `alice:${KEY}` },
    devices: { lan: { type: 'nic', network: net.name, name: 'lan0' } },
  });
  try {
    await c.start({ wait: { for: 'systemd', timeout: 600_000 } });
    expect(await sh(c, 'cat /var/tmp/first; id -un alice; cat /home/alice/.ssh/authorized_keys')).toMatchObject({ code: 0, out: `${c.name}\nalice\n${KEY}\n` });
    expect(await sh(c, 'cloud-init status')).toMatchObject({ code: 0, out: 'status: done\n' });
    // No network-config given: LXD's default, on the NIC's name inside, rendered by cloud-init for networkd.
    expect((await sh(c, 'cat /var/lib/cloud/seed/nocloud/network-config')).out).toBe(defaultNetworkConfig('lan0'));
    expect((await sh(c, 'cat /etc/systemd/network/10-cloud-init-lan0.network')).out).toMatch(/Name=lan0[\s\S]*DHCP=(ipv4|yes)/);
    // cloud-init's 10-cloud-init-lan0.network comes before the image's own (any Ethernet interface).
    await until('lan0 leased an address', async () => /inet \d/.test((await sh(c, 'ip -4 -o addr show dev lan0')).out), 180_000, 1000);
    const firstId = (await sh(c, 'cat /var/lib/cloud/data/instance-id')).out;

    await c.stop();
    await c.update({ 'cloud-init.user-data': userData('/var/tmp/second') });
    await c.start({ wait: { for: 'systemd', timeout: 600_000 } });
    expect((await sh(c, 'cat /var/tmp/second')).out).toBe(`${c.name}\n`);
    const secondId = (await sh(c, 'cat /var/lib/cloud/data/instance-id')).out;
    expect(secondId).not.toBe(firstId);

    await c.stop();
    await c.update({ 'cloud-init.user-data': null, 'cloud-init.ssh-keys.main': null });
    await c.start({ wait: { for: 'systemd', timeout: 600_000 } });
    expect(await sh(c, 'systemctl is-system-running; test -e /var/lib/cloud/seed/nocloud || echo no-seed')).toMatchObject({ code: 0, out: 'running\nno-seed\n' });
    expect((await sh(c, 'cloud-init status')).out).toMatch(/disabled/);
  } finally {
    await c.delete({ force: true });
    await t.host.networks.delete(net.name);
  }
}, 1_800_000);
