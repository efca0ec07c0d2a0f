/**
 * Jest's global teardown (jest.config.js): names what the suite left open in its process (a
 * stream, a socket, a timer), which would keep it from exiting; `npm test` runs with
 * --forceExit so that such a leak shows here instead of hanging the run. Seen once in CI
 * (2026-12-05): five stdin pipes of finished commands and a terminal master (a pty command's
 * stdin) left open after the whole suite: a spawned command's stdin stayed open after its exit
 * unless ended, and its terminal unless read (both closed at the exit since); test/exec-files
 * alone showed them.
 */
module.exports = async () => {
  const handles = process._getActiveHandles().filter((h) => h !== process.stdout && h !== process.stderr && h !== process.stdin);
  if (handles.length === 0) return;
  // A stream says which way it goes and what it holds unread (a stdout nobody read holds its rest).
  const stream = (h) => (h.readable === undefined ? '' : ` ${h.readable ? 'r' : ''}${h.writable ? 'w' : ''}${h.readableLength ? ` ${h.readableLength} B unread` : ''}`);
  const what = handles.map((h) => `${h.constructor?.name ?? 'handle'}${h._handle?.fd !== undefined ? ` fd ${h._handle.fd}` : ''}${stream(h)}`);
  // Idle pipes (a finished command's stdin) do not keep a process alive; a terminal, a reading stream or a timer does.
  process.stderr.write(`open-handles: still open after the suite: ${what.join(', ')}; resources: ${process.getActiveResourcesInfo().join(', ')}\n`);
};
