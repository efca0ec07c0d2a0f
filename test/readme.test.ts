import { readFileSync } from 'node:fs';
import * as path from 'node:path';

import { describeOptions } from '../lib';

// When this fails: npx tsc -p tsconfig.json && node dist/scripts/options-table.js rewrites the table.
test('the README option table is the one generated from the option declarations', () => {
  const readme = readFileSync(path.join(__dirname, '..', 'README.md'), 'utf8');
  const table = /<!-- options:begin -->\n([\s\S]*?)\n<!-- options:end -->/.exec(readme)?.[1];
  expect(table).toBe(describeOptions());
});
