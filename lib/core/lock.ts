/**
 * A lock shared by every process on the host: flock(2) on a file. An instance takes its own
 * around each change (lib/instance/base.ts), so that two Node processes holding one instance
 * never interleave their changes to it, as LXD's per-instance operation lock does for its
 * clients. Taking it never blocks the event loop or a pool thread: the native call does not
 * wait (LOCK_NB) and a lock held elsewhere is asked for again after a short sleep.
 */
import { close as closeFd, open as openFd } from 'node:fs';
import { promisify } from 'node:util';

import { sys } from '../native/sys';
import { Timeout } from './errors';
import { SerialQueue } from './serial';

const MAX_POLL_MS = 50;
const openP = promisify(openFd);
/** A lock dropped without close() (its instance object collected) gives its fd back. */
const collected = new FinalizationRegistry<number>((fd) => closeFd(fd, () => undefined));

export class FileLock {
  /** The open lock file, kept between holds (flock belongs to the open file). */
  private fd?: number;
  /** The holds asked for in this process, in turn (flock(2) excludes other open files only). */
  private readonly turns = new SerialQueue();

  constructor(
    /** The lock file (made if missing; its directory must exist). */
    private file: string,
    /** For messages: what is locked. */
    private readonly what: string,
  ) {}

  /** The lock file moved with its directory (a rename): the open file stays the same. */
  moved(file: string): void {
    this.file = file;
  }

  /** Runs `op` holding the lock; waits at most `timeoutMs` for it. */
  hold<T>(op: () => Promise<T>, timeoutMs = 10 * 60_000): Promise<T> {
    return this.turns.run(() => this.holdNow(op, timeoutMs));
  }

  private async holdNow<T>(op: () => Promise<T>, timeoutMs: number): Promise<T> {
    if (this.fd === undefined) {
      this.fd = await openP(this.file, 'a', 0o600);
      collected.register(this, this.fd, this);
    }
    const fd = this.fd;
    const deadline = Date.now() + timeoutMs;
    for (let wait = 1; !sys().flock(fd, 'ex'); wait = Math.min(wait * 2, MAX_POLL_MS)) {
      if (Date.now() > deadline) throw new Timeout(`${this.what} is being changed by another process (its lock ${this.file} has been held for ${timeoutMs} ms)`);
      await new Promise((r) => setTimeout(r, wait));
    }
    try {
      return await op();
    } finally {
      // Closed by op (close(): the instance was deleted) releases it too.
      if (this.fd === fd) sys().flock(fd, 'un');
    }
  }

  /** Closes the lock file (the instance is gone). */
  async close(): Promise<void> {
    const fd = this.fd;
    this.fd = undefined;
    if (fd === undefined) return;
    collected.unregister(this);
    await promisify(closeFd)(fd);
  }
}
