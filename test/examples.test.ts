/**
 * The examples that make no VM run as users run them (a Node process of their own), so that none
 * rots; scripts/node-matrix.sh runs this whole file under the other Node majors too. The VM ones
 * are test/examples-vm.
 */
import { runExample } from './helpers/examples';

test('examples/events.ts: lifecycle events of this process, and the init halting by itself', async () => {
  const out = await runExample('events.ts');
  expect(out).toMatch(/^instance-created events-\d+ \(local\)\ninstance-started events-\d+ \(local\)\ninstance-stopped events-\d+ \(external\)\ninstance-deleted events-\d+ \(local\)\n$/);
}, 120_000);

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
