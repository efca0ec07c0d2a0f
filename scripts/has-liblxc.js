#!/usr/bin/env node
// Prints 1 where liblxc's development files are present (lxc/lxccontainer.h), else 0: binding.gyp
// builds the liblxc layer (lxq_lxc and lxq_runner) only then; the system-call layer (lxq_sys)
// always. LXQ_WITHOUT_LIBLXC=1 prints 0 even where they are present (a build without containers).
'use strict';
const fs = require('node:fs');

const HEADERS = ['/usr/include/lxc/lxccontainer.h', '/usr/local/include/lxc/lxccontainer.h'];

function hasLiblxc() {
  const off = process.env.LXQ_WITHOUT_LIBLXC;
  if (off && off !== '0') return false;
  return process.platform === 'linux' && HEADERS.some((p) => fs.existsSync(p));
}

if (require.main === module) process.stdout.write(hasLiblxc() ? '1' : '0');
module.exports = { hasLiblxc };
