/**
 * Jest's global teardown (jest.config.js): what the suite leaves open in its process (a stream,
 * a socket, a timer, a child) keeps `npm test` from exiting, and jest only warns then and waits.
 * No --forceExit hides that: if the process is still alive 10 s after the suite (an unref'd timer
 * fires only then), this names what holds it and exits with 1, a failure rather than a hang. The
 * reporter (open-handles-reporter.js) names each file's leftovers as it goes. Seen once in CI
 * (2026-12-05): five stdin pipes of finished commands and a terminal master (a pty command's
 * stdin) left open after the whole suite (closed at the command's exit since).
 */
const GRACE_MS = 10_000;

/** The process's handles but its own stdio, each described: kind, fd, direction, unread bytes, a child's pid. */
function openHandles() {
  const handles = process._getActiveHandles().filter((h) => h !== process.stdout && h !== process.stderr && h !== process.stdin);
  const stream = (h) => (h.readable === undefined ? '' : ` ${h.readable ? 'r' : ''}${h.writable ? 'w' : ''}${h.readableLength ? ` ${h.readableLength} B unread` : ''}`);
  const pid = (h) => (h.pid !== undefined ? ` pid ${h.pid} ${(h.spawnargs ?? []).slice(0, 3).join(' ')}` : '');
  return handles.map((h) => `${h.constructor?.name ?? 'handle'}${h._handle?.fd !== undefined ? ` fd ${h._handle.fd}` : ''}${stream(h)}${pid(h)}`);
}

module.exports = async () => {
  setTimeout(() => {
    process.stderr.write(
      `open-handles: the test process was still alive ${GRACE_MS / 1000} s after the suite, held by: ${openHandles().join(', ') || 'no handle'}; resources: ${process.getActiveResourcesInfo().join(', ')}\n`,
    );
    process.exit(1);
  }, GRACE_MS).unref();
};
