/**
 * Writes the README's options table and devices table from their declarations (lib/config/options/,
 * lib/devices/declarations.ts; test/readme and test/devices check that each agrees):
 * npx tsc -p tsconfig.json && node dist/scripts/options-table.js
 */
import { readFileSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';

import { describeOptions } from '../lib/config/options';
import { describeDevices } from '../lib/devices/declarations';

const file = path.join(__dirname, '..', '..', 'README.md');
const readme = readFileSync(file, 'utf8');
const tables: Array<[string, string]> = [
  ['options', describeOptions()],
  ['devices', describeDevices()],
];
let next = readme;
for (const [name, table] of tables) {
  next = next.replace(new RegExp(`(<!-- ${name}:begin -->\\n)[\\s\\S]*?(\\n<!-- ${name}:end -->)`), (_, begin: string, end: string) => begin + table + end);
}
if (next !== readme) writeFileSync(file, next);
console.log(next === readme ? 'README.md: the options and devices tables were already current' : 'README.md: tables written');
