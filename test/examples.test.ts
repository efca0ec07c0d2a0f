/**
 * The examples run as users run them (a Node process of their own), so that none rots.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';

import { SHARED_IMAGES } from './helpers/host';

const execFileP = promisify(execFile);

async function runExample(file: string): Promise<string> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'lxq-example-host-'));
  try {
    const { stdout } = await execFileP(process.execPath, ['-r', path.join(__dirname, 'helpers', 'ts-register.js'), path.join(__dirname, '..', 'examples', file)], {
      env: { ...process.env, LXQ_HOST: dir, LXQ_IMAGES: SHARED_IMAGES },
      timeout: 180_000,
    });
    return stdout;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

test('examples/devices.ts: a directory shared with a container and a VM, a disk and a shifted mount added live', async () => {
  const out = await runExample('devices.ts');
  expect(out).toMatch(/container read: hello from the host\nhost read: and hello from a container/);
  expect(out).toMatch(/vm read: hello from the host\nhost read: and hello from a vm/);
  expect(out).toMatch(/vm disks:\nvda: *\nvdb: scratch/);
  expect(out).toMatch(/container sees the host's \/etc\/hostname owned by root \(shifted\)/);
}, 200_000);

test('examples/events.ts: lifecycle events of this process, and the init halting by itself', async () => {
  const out = await runExample('events.ts');
  expect(out).toMatch(/^instance-created events-\d+ \(local\)\ninstance-started events-\d+ \(local\)\ninstance-stopped events-\d+ \(external\)\ninstance-deleted events-\d+ \(local\)\n$/);
}, 120_000);

test('examples/network.ts: two containers and a VM on one bridge, HTTP by DNS name, from the host and through a proxy', async () => {
  const out = await runExample('network.ts');
  expect(out).toMatch(/container client-\w+ fetched: hello from web-\w+/);
  expect(out).toMatch(/vm vm-\w+ fetched: hello from web-\w+/);
  expect(out).toMatch(/host fetched: hello from web-\w+/);
  expect(out).toMatch(/host fetched over IPv6 \[fd[0-9a-f:]+\]: hello from web-\w+/);
  expect(out).toMatch(/host fetched through 127\.0\.0\.1:\d+: hello from web-\w+/);
  expect(out).toMatch(/leases: client-\w+=\S+ vm-\w+=\S+ web-\w+=\S+/);
}, 200_000);
