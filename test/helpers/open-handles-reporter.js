/**
 * A jest reporter (jest.config.js) that names, after each test file, what the file left open in
 * the test process (the suite runs in band: one process) and what would keep jest from exiting
 * without --forceExit: handles made during the file and still open a second after it (what was
 * closing is closed by then; a handle that is not ref'd keeps nothing alive and is not named),
 * and the timers it ended with more than it began with (counted at its end: the next file's own
 * timers start at once). One line per file on stderr; silent when nothing is left.
 */
'use strict';
const path = require('node:path');

/** The process's handles but its own stdio, each with what it is. */
function handles() {
  return process._getActiveHandles().filter((h) => h !== process.stdout && h !== process.stderr && h !== process.stdin);
}

/** Whether a handle keeps the process alive. */
function refd(h) {
  const inner = h._handle ?? h;
  return typeof inner.hasRef === 'function' ? inner.hasRef() : true;
}

/** A handle as a short text: its kind, fd and, for a stream, which way it goes and what it holds unread. */
function describe(h) {
  const stream = h.readable === undefined ? '' : ` ${h.readable ? 'r' : ''}${h.writable ? 'w' : ''}${h.readableLength ? ` ${h.readableLength} B unread` : ''}`;
  const pid = h.pid !== undefined ? ` pid ${h.pid} ${(h.spawnargs ?? []).slice(0, 3).join(' ')}` : '';
  return `${h.constructor?.name ?? 'handle'}${h._handle?.fd !== undefined && h._handle.fd >= 0 ? ` fd ${h._handle.fd}` : ''}${stream}${pid}`;
}

const timers = () => process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length;

class OpenHandlesReporter {
  constructor(globalConfig) {
    this.rootDir = globalConfig.rootDir;
    this.before = new Set();
    this.timers = 0;
  }

  onTestFileStart() {
    this.before = new Set(handles());
    this.timers = timers();
  }

  onTestFileResult(test) {
    const made = handles().filter((h) => !this.before.has(h));
    const moreTimers = timers() - this.timers;
    const file = path.relative(this.rootDir, test.path);
    let checked = false;
    this.check = () => {
      if (checked) return;
      checked = true;
      const open = new Set(handles());
      const left = made.filter((h) => open.has(h) && refd(h)).map(describe);
      if (moreTimers > 0) left.push(`${moreTimers} timer(s) more at its end than at its start`);
      if (left.length) process.stderr.write(`open-handles: ${file} left open: ${left.join(', ')}\n`);
    };
    setTimeout(this.check, 1000).unref();
  }

  /** The last file is looked at now: the process may end before its second comes. */
  onRunComplete() {
    this.check?.();
  }
}

module.exports = OpenHandlesReporter;
