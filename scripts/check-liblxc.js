#!/usr/bin/env node
// Runs before node-gyp: a missing liblxc should read as one sentence, not a wall of compiler errors.
'use strict';
const fs = require('node:fs');

const header = ['/usr/include/lxc/lxccontainer.h', '/usr/local/include/lxc/lxccontainer.h'].find((p) => fs.existsSync(p));
if (process.platform !== 'linux' || !header) {
  console.error(
    '\nlxq: liblxc development files were not found (lxc/lxccontainer.h).\n' +
      'lxq binds liblxc in-process; on Debian/Ubuntu install them first, as root:\n\n' +
      '    apt-get install -y lxc lxc-dev pkg-config\n\n' +
      'or run scripts/setup-host.sh, which installs every host package lxq uses.\n',
  );
  process.exit(1);
}
