/**
 * The examples that boot a VM beside containers, run as users run them (test/examples has the
 * others, which scripts/node-matrix.sh also runs under the other Node majors).
 */
import { runExample } from './helpers/examples';

test('examples/devices.ts: a directory shared with a container and a VM, a disk and a shifted mount added live', async () => {
  const out = await runExample('devices.ts');
  expect(out).toMatch(/container read: hello from the host\nhost read: and hello from a container/);
  expect(out).toMatch(/vm read: hello from the host\nhost read: and hello from a vm/);
  expect(out).toMatch(/vm disks:\nvda: *\nvdb: scratch/);
  expect(out).toMatch(/container sees the host's \/etc\/hostname owned by root \(shifted\)/);
}, 200_000);

test('examples/network.ts: two containers and a VM on one bridge, HTTP by DNS name, from the host and through a proxy', async () => {
  const out = await runExample('network.ts');
  expect(out).toMatch(/container client-\w+ fetched: hello from web-\w+/);
  expect(out).toMatch(/vm vm-\w+ fetched: hello from web-\w+/);
  expect(out).toMatch(/host fetched: hello from web-\w+/);
  expect(out).toMatch(/host fetched over IPv6 \[fd[0-9a-f:]+\]: hello from web-\w+/);
  expect(out).toMatch(/host fetched through 127\.0\.0\.1:\d+: hello from web-\w+/);
  expect(out).toMatch(/leases: client-\w+=\S+ vm-\w+=\S+ web-\w+=\S+/);
}, 200_000);
