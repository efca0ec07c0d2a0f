#!/usr/bin/env bash
# Installs everything lxq needs on a Debian 12 host, builds it, builds the default images and
# runs the demo. Run as root from the repository: `bash scripts/setup.sh`.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then echo "setup.sh: run as root (liblxc and QEMU need it)" >&2; exit 1; fi

bash scripts/setup-host.sh
npm ci                     # also builds the native addon (node-gyp, against liblxc)
npm run build              # TypeScript → dist/
node dist/scripts/images.js ensure busybox
[ "${LXQ_SKIP_DEMO:-}" = 1 ] || npm run demo
