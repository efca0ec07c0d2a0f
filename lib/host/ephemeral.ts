/**
 * A host's part in ephemeral instances (LXD's `ephemeral`, deleted when they stop): the instance
 * deletes itself on `stop()` (lib/instance/base.ts); a stop nobody asked for (the container's init
 * exits, a poweroff inside, QEMU killed) is seen here, through a pidfd on the main process of each
 * running ephemeral instance this host holds; one left stopped by a process that died is deleted
 * by the next Host.open (sweepEnded). Each deletion is the instance's own, under its lock.
 */
import { promises as fs } from 'node:fs';
import * as path from 'node:path';

import { BaseInstance } from '../instance/base';
import { RAN_MARK } from '../instance/ephemeral';
import type { Instance } from '../instance/instance';
import { sys } from '../native/sys';

/** How long a stop may stay not final (a container's monitor between a reboot's two inits) before the watch gives up on it. */
const SETTLE_MS = 60_000;
const SETTLE_POLL_MS = 100;

export class EphemeralWatch {
  /** The pidfd watches by instance (a no-op while the pid is being looked up). */
  private readonly watches = new Map<BaseInstance, () => void>();
  private closed = false;

  constructor(private readonly mainPid: (i: BaseInstance) => Promise<number | null>) {}

  /** An instance this host holds: if ephemeral, its main process is watched whenever it is seen running. */
  hold(instance: Instance): void {
    if (!(instance instanceof BaseInstance) || !instance.ephemeral) return;
    instance.on('status', (e) => {
      if (e.status === 'running') this.arm(instance);
    });
    void instance.status().then((s) => s === 'running' && this.arm(instance), () => undefined);
  }

  close(): void {
    this.closed = true;
    for (const cancel of this.watches.values()) cancel();
    this.watches.clear();
  }

  private arm(i: BaseInstance): void {
    if (this.closed || this.watches.has(i)) return;
    const pending = () => undefined;
    this.watches.set(i, pending);
    const ended = () => {
      this.watches.delete(i);
      void this.ended(i);
    };
    this.mainPid(i).then(
      (pid) => {
        if (this.watches.get(i) !== pending) return; // closed meanwhile
        if (pid === null) return ended();
        try {
          this.watches.set(i, sys().watchPid(pid, ended));
        } catch {
          ended(); // gone already
        }
      },
      () => this.watches.delete(i),
    );
  }

  /** Its main process exited: deleted once its stop is final, watched again if it runs on (a reboot inside). */
  private async ended(i: BaseInstance): Promise<void> {
    const deadline = Date.now() + SETTLE_MS;
    while (!this.closed) {
      const outcome = await i.deleteIfEnded().catch(() => 'gone' as const);
      if (outcome === 'deleted' || outcome === 'gone') return;
      if (outcome === 'kept') {
        if ((await i.status().catch(() => undefined)) === 'running') this.arm(i);
        return;
      }
      if (Date.now() > deadline) return; // left to the next Host.open
      await new Promise((r) => setTimeout(r, SETTLE_POLL_MS));
    }
  }
}

/**
 * Host.open: the ephemeral instances that have run and are stopped (their process died before
 * it saw them stop) are deleted now, before anyone lists them.
 */
export async function sweepEnded(instancesDir: string, get: (name: string) => Promise<Instance>): Promise<void> {
  for (const name of await fs.readdir(instancesDir).catch(() => [] as string[])) {
    if (name.startsWith('.') || !(await fs.access(path.join(instancesDir, name, RAN_MARK)).then(() => true, () => false))) continue;
    const instance = await get(name).catch(() => undefined);
    if (instance instanceof BaseInstance) await instance.deleteIfEnded().catch(() => undefined);
  }
}
