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

test('examples/snapshots.ts: a snapshot kept, the files changed, restored, renamed, deleted', async () => {
  const out = await runExample('snapshots.ts');
  expect(out).toMatch(/^now: after\nsnapshot clean \(as installed\), [\d.]+ MiB\nrestored: before, running\nsnapshots left: 0\n$/);
}, 120_000);

test('examples/copy-export.ts: a copy with its snapshots and a changed option, an export imported under a new name, a rename', async () => {
  const out = await runExample('copy-export.ts');
  expect(out).toMatch(/^copy staging-(\d+): role staging, snapshots first\nexported web-\1: [\d.]+ MiB\nimported restored-\1: hello\nrenamed to archive-\1\ninstances: archive-\1 staging-\1 web-\1\n$/);
}, 180_000);

test("examples/console.ts: the container's console shell answers what a program types; the boot output is in the log", async () => {
  const out = await runExample('console.ts');
  expect(out).toMatch(/^the console shell answered: 42 from \/dev\/console\nboot output kept in \S+\/console\.log:\nlxq busybox: up\n$/);
}, 120_000);

test('examples/images.ts: an image exported in LXD\'s format, imported under an alias, run, deleted', async () => {
  const out = await runExample('images.ts');
  expect(out).toMatch(/busybox ready in \S+\nimported as (mybox-\d+) \(container\)\nstore: \1 container [\d.]+ MiB\nfrom-\1 runs BusyBox v[\d.]+\n\1 deleted\n$/);
}, 120_000);
