/**
 * LXD's boot.* keys on a host with no daemon: what LXD does when it starts and stops
 * (lxd/instances.go instancesStart, instancesShutdown), run by `lxq autostart start|stop`, which
 * `lxq system install` has systemd run at boot and shutdown.
 */
import * as os from 'node:os';
import * as path from 'node:path';

import type { Instance } from '../instance/instance';
import { lastPower, markPower } from '../instance/power';

/**
 * What `host.autostart()` did: the instances it started in order, and those that failed three attempts.
 *
 * @example
 * ```ts
 * const { started, failed } = await host.autostart();
 * for (const f of failed) console.error(f.name, f.error);
 * ```
 */
export interface AutostartReport {
  started: string[];
  failed: { name: string; error: string }[];
}

/**
 * What `host.shutdown()` did: the instances it stopped (in the order their stops ended; a clean
 * shutdown that outlasted `boot.host_shutdown_timeout` was ended by force) and those it could not stop.
 *
 * @example
 * ```ts
 * const { stopped, failed } = await host.shutdown();
 * console.log(`${stopped.length} stopped, ${failed.length} failed`);
 * ```
 */
export interface ShutdownReport {
  stopped: string[];
  failed: { name: string; error: string }[];
}

/** LXD's: 3 attempts to start an instance, 5 s apart. */
const ATTEMPTS = 3;
const RETRY_MS = 5000;

const int = (config: Readonly<Record<string, string>>, key: string, fallback: number): number => {
  const v = config[key];
  return v === undefined ? fallback : Number(v);
};

/** LXD's rule: not start-protected, and boot.autostart true, or unset and the instance was running when the host last stopped. */
export function shouldAutostart(config: Readonly<Record<string, string>>, last: string | undefined): boolean {
  if (config['security.protection.start'] === 'true') return false;
  const auto = config['boot.autostart'];
  return auto === 'true' || (auto === undefined && last === 'RUNNING');
}

/** Highest `key` first, then by name (LXD's order). */
function byPriority(instances: Instance[], key: string): Instance[] {
  return [...instances].sort((a, b) => int(b.config, key, 0) - int(a.config, key, 0) || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Starts the instances LXD would start at its start, highest boot.autostart.priority first, waiting boot.autostart.delay after each. */
export async function autostartAll(instances: Instance[], instancesDir: string): Promise<AutostartReport> {
  const report: AutostartReport = { started: [], failed: [] };
  for (const i of byPriority(instances, 'boot.autostart.priority')) {
    if (!shouldAutostart(i.config, await lastPower(path.join(instancesDir, i.name)))) continue;
    if ((await i.status()) !== 'stopped') continue;
    for (let attempt = 1; ; attempt++) {
      try {
        await i.start();
        report.started.push(i.name);
        await sleep(int(i.config, 'boot.autostart.delay', 0) * 1000);
        break;
      } catch (e) {
        if (attempt >= ATTEMPTS) {
          report.failed.push({ name: i.name, error: (e as Error).message });
          break;
        }
        await sleep(RETRY_MS);
      }
    }
  }
  return report;
}

/**
 * Stops the running instances for the host's shutdown: batches of equal boot.stop.priority,
 * highest first, each batch's instances at once (at most one per CPU); a clean shutdown for
 * boot.host_shutdown_timeout seconds (default 30), then by force. Each is marked RUNNING again
 * so that the next `autostart` restores it (LXD's volatile.last_state.power).
 */
export async function shutdownAll(instances: Instance[], instancesDir: string): Promise<ShutdownReport> {
  const report: ShutdownReport = { stopped: [], failed: [] };
  const running: Instance[] = [];
  for (const i of instances) if ((await i.status()) !== 'stopped') running.push(i);
  const batches = new Map<number, Instance[]>();
  for (const i of byPriority(running, 'boot.stop.priority')) {
    const p = int(i.config, 'boot.stop.priority', 0);
    batches.set(p, [...(batches.get(p) ?? []), i]);
  }
  for (const batch of batches.values()) {
    const queue = [...batch];
    const worker = async (): Promise<void> => {
      for (let i = queue.shift(); i; i = queue.shift()) await stopOne(i, instancesDir, report);
    };
    await Promise.all(Array.from({ length: Math.min(batch.length, os.cpus().length) }, worker));
  }
  return report;
}

async function stopOne(i: Instance, instancesDir: string, report: ShutdownReport): Promise<void> {
  const seconds = int(i.config, 'boot.host_shutdown_timeout', 30);
  try {
    // lxq's stop ends a clean shutdown that outlasts its timeout by force.
    await i.stop(seconds === 0 ? { force: true } : { timeout: seconds * 1000 });
    report.stopped.push(i.name);
    await markPower(path.join(instancesDir, i.name), 'RUNNING');
  } catch (e) {
    report.failed.push({ name: i.name, error: (e as Error).message });
  }
}
