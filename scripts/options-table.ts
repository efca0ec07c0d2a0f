/**
 * Writes the README's options table from the declarations in lib/config/options/ (test/readme
 * checks that the two agree): npx tsc -p tsconfig.json && node dist/scripts/options-table.js
 */
import { readFileSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';

import { describeOptions } from '../lib/config/options';

const file = path.join(__dirname, '..', '..', 'README.md');
const readme = readFileSync(file, 'utf8');
const next = readme.replace(/(<!-- options:begin -->\n)[\s\S]*?(\n<!-- options:end -->)/, (_, begin: string, end: string) => begin + describeOptions() + end);
if (next !== readme) writeFileSync(file, next);
console.log(next === readme ? 'README.md: the options table was already current' : 'README.md: options table written');
