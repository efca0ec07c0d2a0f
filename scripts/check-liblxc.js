#!/usr/bin/env node
// Runs before node-gyp: where liblxc's development files are missing, the install goes on without
// the liblxc layer (VMs and remote hosts work; creating a container throws NotSupported), and this
// says so in one paragraph instead of leaving it to be found later.
'use strict';
const { hasLiblxc } = require('./has-liblxc.js');

if (!hasLiblxc()) {
  console.warn(
    '\nlxq: building without liblxc (lxc/lxccontainer.h was not found, or LXQ_WITHOUT_LIBLXC is set).\n' +
      'Virtual machines and remote hosts work; local containers need liblxc. On Debian/Ubuntu, as root:\n\n' +
      '    apt-get install -y lxc lxc-dev pkg-config\n\n' +
      'then `npm rebuild lxq` (or run scripts/setup-host.sh, which installs every host package lxq uses).\n',
  );
}
