/**
 * Preloaded (`node -r`) into an `lxq` process by test/cli-quick.test.ts: writes to the file
 * LXQ_TEST_CLI_PATH which path served the command. At the start `handed`: a command the quick
 * path hands over (lxq_runner takes this process's place) never exits as Node, and if the runner
 * runs the whole CLI instead, that preloads this again. When Node exits: `full` if commander was
 * loaded (the whole CLI, lib/cli/program.ts), else `quick` (lib/cli/quick.ts).
 */
'use strict';
const fs = require('node:fs');

fs.writeFileSync(process.env.LXQ_TEST_CLI_PATH, 'handed');
process.on('exit', () => {
  const full = Object.keys(require.cache).some((f) => f.includes(`${require('node:path').sep}commander${require('node:path').sep}`));
  fs.writeFileSync(process.env.LXQ_TEST_CLI_PATH, full ? 'full' : 'quick');
});
