// Every eslint-disable comment says why (`// eslint-disable-line rule -- reason`): a bare one fails the lint.
import { execFileSync } from 'node:child_process';

const out = execFileSync('git', ['grep', '-n', '-E', 'eslint-disable', '--', '*.ts'], { encoding: 'utf8' }).split('\n').filter(Boolean);
const bare = out.filter((l) => !/eslint-disable(-next)?(-line)?\s+\S+(\s*,\s*\S+)*\s+--\s+\S/.test(l));
if (bare.length) {
  console.error(`eslint-disable without a reason (add " -- why"):\n${bare.join('\n')}`);
  process.exit(1);
}
