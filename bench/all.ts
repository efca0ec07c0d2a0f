/**
 * `npm run bench [-- --quick] [-- NAME...]`: every benchmark, one after the other, each in its
 * own Node process (so that one's containers, QEMUs and heap do not weigh on the next).
 */
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';

const BENCHES = ['containers', 'freeze', 'event-loop', 'scale', 'vm', 'vm-agent', 'debian', 'qmp-roundtrip', 'devices', 'network', 'nic-types', 'proxy', 'cli', 'snapshots', 'copy-export', 'storage', 'remote', 'trees'];

const args = process.argv.slice(2);
const flags = args.filter((a) => a.startsWith('--'));
const chosen = args.filter((a) => !a.startsWith('--'));
const unknown = chosen.filter((b) => !BENCHES.includes(b));
if (unknown.length) {
  console.error(`unknown benchmark(s): ${unknown.join(', ')}; there are: ${BENCHES.join(', ')}`);
  process.exit(2);
}
let failed = 0;
for (const bench of chosen.length ? chosen : BENCHES) {
  console.log(`\n## ${bench}: node dist/bench/${bench}.js ${flags.join(' ')}\n`);
  const r = spawnSync(process.execPath, [path.join(__dirname, `${bench}.js`), ...flags], { stdio: 'inherit' });
  if (r.status !== 0) {
    console.error(`${bench}: failed (${r.signal ?? `exit ${r.status}`})`);
    failed++;
  }
}
process.exit(failed ? 1 : 0);
