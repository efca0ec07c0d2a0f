/**
 * A graceful VM stop at any moment of a boot: the power button is pressed again until the guest
 * acts (and the agent asked once it answers), so a stop right after start does not wait out its
 * timeout. vm/default under TCG, stops 0, 0.5, 1 and 2 s after start.
 */
import { tempHost, TestHost } from './helpers/host';

jest.setTimeout(300_000);

let t: TestHost;
beforeAll(async () => {
  t = await tempHost();
  await t.host.images.ensure('vm/default');
}, 600_000);
afterAll(async () => {
  await t?.dispose();
});

test.each([0, 500, 1_000, 2_000])('a stop %i ms after start is graceful and finishes within seconds', async (delay) => {
  const vm = await t.host.create(t.name('vs'), { type: 'vm', image: 'vm/default' });
  try {
    await vm.start();
    await new Promise((r) => setTimeout(r, delay));
    const s = Date.now();
    await vm.stop({ timeout: 60_000 });
    const ms = Date.now() - s;
    console.log(`stop ${delay} ms after start: ${ms} ms`);
    expect(await vm.status()).toBe('stopped');
    expect(ms).toBeLessThan(20_000); // a forced stop would come after the 60 s timeout
    // The guest itself powered off (busybox's lxq-halt), not a kill by lxq.
    expect(await vm.console.log()).toMatch(/lxq-init: poweroff/);
  } finally {
    await vm.delete({ force: true });
  }
});
