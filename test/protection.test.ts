/**
 * security.protection.delete and security.protection.start (LXD's semantics): the operation is
 * refused with PermissionDenied naming the key and nothing changes; unsetting the key (live)
 * allows it again. Containers run; VMs are only created (a protected start never boots QEMU).
 */
import { PermissionDenied } from '../lib';
import { tempHost, thrown, type TestHost } from './helpers/host';

let t: TestHost;
beforeAll(async () => {
  t = await tempHost();
});
afterAll(async () => {
  await t.dispose();
});

for (const type of ['container', 'vm'] as const) {
  const image = type === 'vm' ? 'vm/default' : 'busybox';

  test(`${type}: security.protection.delete refuses delete, even forced, until it is unset`, async () => {
    const i = await t.host.create(t.name('pd'), { type, image, config: { 'security.protection.delete': true } });
    for (const options of [{}, { force: true }]) {
      const err = await thrown(i.delete(options));
      expect(err).toBeInstanceOf(PermissionDenied);
      expect(err.message).toContain('security.protection.delete');
    }
    expect((await t.host.list()).map((x) => x.name)).toContain(i.name);
    await i.update({ 'security.protection.delete': null });
    await i.delete();
    expect((await t.host.list()).map((x) => x.name)).not.toContain(i.name);
  });

  test(`${type}: security.protection.start refuses start until it is unset`, async () => {
    const i = await t.host.create(t.name('ps'), { type, image, config: { 'security.protection.start': true } });
    const err = await thrown(i.start());
    expect(err).toBeInstanceOf(PermissionDenied);
    expect(err.message).toContain('security.protection.start');
    expect(await i.status()).toBe('stopped');
    if (type === 'vm') return; // booting a VM here would test nothing more than the container does
    await i.update({ 'security.protection.start': false });
    await i.start();
    expect(await i.status()).toBe('running');
    // Set on a running container (live): a restart is refused before its stop, so it keeps running.
    await i.update({ 'security.protection.start': true });
    const again = await thrown(i.restart());
    expect(again).toBeInstanceOf(PermissionDenied);
    expect(await i.status()).toBe('running');
    await i.stop({ force: true });
    expect(await i.status()).toBe('stopped');
  });
}

test('a protected ephemeral container still goes at its stop (as LXD: protection is against delete, not its own end)', async () => {
  const i = await t.host.create(t.name('pe'), { image: 'busybox', ephemeral: true, config: { 'security.protection.delete': true } });
  await i.start();
  await i.stop({ force: true });
  expect((await t.host.list()).map((x) => x.name)).not.toContain(i.name);
});
