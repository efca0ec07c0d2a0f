/**
 * LXD's snapshot task (lxd/instance.go autoCreateAndPruneExpiredInstanceSnapshotsTask), run by a
 * process that holds the host with `Host.open({ scheduler: true })`: at each minute, expired
 * snapshots are deleted first, then each instance whose `snapshots.schedule` fires is snapshotted
 * (if running, or with `snapshots.schedule.stopped`), named by `snapshots.pattern` and given
 * `snapshots.expiry`. Several processes may hold the host: the minute is claimed per instance by
 * an exclusive create of a mark file, so each scheduled snapshot is made once.
 */
import { promises as fs } from 'node:fs';
import * as path from 'node:path';

import { parseSchedule } from '../core/schedule';
import type { Instance } from '../instance/instance';
import { Snapshots } from '../storage/snapshots';

const MARK = '.lxq-scheduled-';

/** Claims `minute` for the instance in `dir`: true for exactly one process; older claims are removed. */
async function claim(dir: string, minute: number): Promise<boolean> {
  const mine = await fs.writeFile(path.join(dir, `${MARK}${minute}`), '', { flag: 'wx', mode: 0o600 }).then(
    () => true,
    (e) => (e.code === 'EEXIST' || e.code === 'ENOENT' ? false : Promise.reject(e)),
  );
  for (const f of await fs.readdir(dir).catch(() => [])) {
    if (f.startsWith(MARK) && Number(f.slice(MARK.length)) < minute - 1) await fs.rm(path.join(dir, f), { force: true });
  }
  return mine;
}

/** One minute's work over the host's instances; a failure on one instance is reported and never stops the others. */
export async function runSnapshotTask(instances: Instance[], instancesDir: string, at: Date, onError: (name: string, e: unknown) => void): Promise<string[]> {
  const made: string[] = [];
  const minute = Math.floor(at.getTime() / 60_000);
  for (const i of instances) {
    try {
      if (i.snapshots instanceof Snapshots) await i.snapshots.pruneExpired();
      const schedule = i.config['snapshots.schedule'];
      if (!schedule || !parseSchedule(schedule).matches(at)) continue;
      if (i.config['snapshots.schedule.stopped'] !== 'true' && (await i.status()) === 'stopped') continue;
      if (!(await claim(path.join(instancesDir, i.name), minute))) continue;
      made.push(`${i.name}/${(await i.snapshots.create()).name}`);
    } catch (e) {
      onError(i.name, e);
    }
  }
  return made;
}

/** Runs the task at the start of every minute until stopped. */
export class SnapshotScheduler {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<unknown> = Promise.resolve();
  private stopped = false;

  constructor(
    private readonly instances: () => Promise<Instance[]>,
    private readonly instancesDir: string,
    private readonly onError: (name: string, e: unknown) => void,
  ) {}

  start(): void {
    if (this.stopped) return;
    // A second past the minute: the minute's own time is what schedules are matched against.
    const wait = 60_000 - (Date.now() % 60_000) + 1000;
    this.timer = setTimeout(() => {
      const at = new Date(Math.floor(Date.now() / 60_000) * 60_000);
      this.running = this.instances()
        .then((list) => runSnapshotTask(list, this.instancesDir, at, this.onError))
        .catch((e) => this.onError('', e))
        .finally(() => this.start());
    }, wait);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    await this.running;
  }
}
