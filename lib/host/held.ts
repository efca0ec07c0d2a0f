/**
 * What a Host does for the instances it holds, besides events: the exit watch of its ephemeral
 * ones (ephemeral.ts) and, with `reap: true`, the reaper of those it made (reaper.ts).
 */
import type { LifecycleAction, LifecycleDetail } from '../events/lifecycle';
import type { BaseInstance } from '../instance/base';
import type { Instance } from '../instance/instance';
import { EphemeralWatch } from './ephemeral';
import { Reaper } from './reaper';

export class HeldInstances {
  private readonly ephemeral: EphemeralWatch;
  private reaper: Reaper | undefined;

  constructor(mainPid: (i: BaseInstance) => Promise<number | null>) {
    this.ephemeral = new EphemeralWatch(mainPid);
  }

  /** `Host.open({ reap: true })`. */
  async reap(hostPath: string, images: string): Promise<void> {
    this.reaper = await Reaper.start(hostPath, images);
  }

  /** An instance the host holds from now on; `made` by this process (the reaper deletes those). */
  hold(instance: Instance, made: boolean): void {
    if (made) this.reaper?.add(instance);
    this.ephemeral.hold(instance);
  }

  /** A change the instance reports: the reaper follows its deletion and renames. */
  reported(name: string, action: LifecycleAction, detail?: LifecycleDetail): void {
    if (action === 'instance-deleted') this.reaper?.changed(name);
    else if (action === 'instance-renamed' && detail?.previous !== undefined) this.reaper?.changed(detail.previous, name);
  }

  async close(): Promise<void> {
    this.ephemeral.close();
    await this.reaper?.close();
  }
}
