/**
 * Preloaded (`node -r`) into an `lxq` process by test/cli-quick.test.ts: when it exits, writes to
 * the file LXQ_TEST_CLI_PATH names which path served the command: `full` if commander was
 * loaded (the whole CLI, lib/cli/program.ts), else `quick` (lib/cli/quick.ts).
 */
'use strict';
const fs = require('node:fs');

process.on('exit', () => {
  const full = Object.keys(require.cache).some((f) => f.includes(`${require('node:path').sep}commander${require('node:path').sep}`));
  fs.writeFileSync(process.env.LXQ_TEST_CLI_PATH, full ? 'full' : 'quick');
});
