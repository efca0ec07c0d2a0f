/**
 * Host links of a test file's own: names unique to the run (`lxq<tag><suffix>`, at most 15 bytes),
 * each recorded when made so that `removeAll` deletes them even after a failure.
 */
import { execFileSync, spawnSync } from 'node:child_process';

export const linkExists = (name: string) => spawnSync('ip', ['link', 'show', 'dev', name]).status === 0;

export class OwnLinks {
  /** Unique to this run: every name starts `lxq<tag>`. */
  readonly tag = Math.random().toString(16).slice(2, 7);
  private readonly made: string[] = [];

  /** This run's name for `suffix` (nothing made). */
  name(suffix: string): string {
    return `lxq${this.tag}${suffix}`;
  }

  /** `name(suffix)`, recorded for removal (the caller, or lxq, makes it). */
  track(suffix: string): string {
    const n = this.name(suffix);
    this.made.push(n);
    return n;
  }

  /** A veth pair: `a`, returned, for an instance to use as its parent; `b` a port of `bridge`. */
  vethParent(suffix: string, bridge: string): string {
    const [a, b] = [this.track(`${suffix}a`), this.track(`${suffix}b`)];
    execFileSync('ip', ['link', 'add', 'name', a, 'type', 'veth', 'peer', 'name', b]);
    execFileSync('ip', ['link', 'set', 'dev', b, 'master', bridge, 'up']);
    execFileSync('ip', ['link', 'set', 'dev', a, 'up']);
    return a;
  }

  /** Deletes every recorded link still there. */
  removeAll(): void {
    for (const n of this.made) if (linkExists(n)) spawnSync('ip', ['link', 'delete', 'dev', n]);
  }
}
