/**
 * Operations run one at a time, in call order, within this process: an instance's lifecycle
 * changes, a host's network changes. A failed operation does not stop the ones queued behind it;
 * it only rejects its own caller.
 */
export class SerialQueue {
  /** The end of the last operation queued; never rejects. */
  private tail: Promise<unknown> = Promise.resolve();

  /** Runs `op` once every operation queued before it has ended (resolved or not). */
  run<T>(op: () => Promise<T>): Promise<T> {
    const run = this.tail.then(op, op);
    this.tail = run.catch(() => undefined);
    return run;
  }

  /** Resolves once the operations queued so far have ended, whatever their outcome. */
  get idle(): Promise<void> {
    return this.tail.then(() => undefined);
  }
}
