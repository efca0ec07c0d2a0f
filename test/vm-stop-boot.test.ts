/**
 * A graceful VM stop at any moment of a boot: the power button is pressed again until the guest
 * acts (and the agent asked once it answers), so a stop right after start ends in the guest's own
 * power-off, not in the forced stop after its timeout. vm/default under TCG, stops 0, 0.5, 1 and
 * 2 s after start.
 */
import { tempHost, TestHost } from './helpers/host';

/** As long as a boot and its shutdown may take under TCG beside other work (seconds unloaded, over 60 s at load 20). */
const STOP_TIMEOUT_MS = 240_000;
// The stop's timeout, and the create, start and delete around it.
jest.setTimeout(STOP_TIMEOUT_MS + 120_000);

let t: TestHost;
beforeAll(async () => {
  t = await tempHost();
  await t.host.images.ensure('vm/default');
}, 600_000);
afterAll(async () => {
  await t?.dispose();
});

test.each([0, 500, 1_000, 2_000])('a stop %i ms after start is graceful: the guest powers itself off', async (delay) => {
  const vm = await t.host.create(t.name('vs'), { type: 'vm', image: 'vm/default' });
  try {
    await vm.start();
    await new Promise((r) => setTimeout(r, delay));
    const s = Date.now();
    await vm.stop({ timeout: STOP_TIMEOUT_MS });
    // Its speed is a figure, not an assertion: what is asserted is how it ended.
    console.log(`stop ${delay} ms after start: ${Date.now() - s} ms`);
    expect(await vm.status()).toBe('stopped');
    // The guest itself powered off (busybox's lxq-halt): a power button pressed once, too early,
    // would have ended in the forced stop after the timeout, and nothing printed.
    expect(await vm.console.log()).toMatch(/lxq-init: poweroff/);
  } finally {
    await vm.delete({ force: true });
  }
});
