/**
 * LXD 5.0's `dir` storage driver as a peer for container snapshots, restores and copies: a
 * private daemon (test/helpers/lxd.ts: its own LXD_DIR, a `dir` pool, a profile without NIC),
 * one container per lxq image, made from lxq's own image exported in LXD's format (no image
 * server is reachable), so both sides hold the same tree. Driven over REST on its unix socket,
 * each call waiting on LXD's background operation, as a Node program would.
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import * as path from 'node:path';

import type { Host } from '../../lib';
import { LxdClient } from '../../lib/drivers/remote/client';
import { unmountUnder } from '../../lib/storage/pools/mounts';
import { ensurePool, ensureProfile, LxdDaemon, lxdBin, startLxd } from '../../test/helpers/lxd';

/** Inside a Debian container: returns once systemd's bus is up and it says running (or degraded). */
export const SYSTEMD_RUNNING = 'for n in $(seq 1200); do [ -S /run/systemd/private ] && break; sleep 0.05; done; until timeout 60 systemctl is-system-running --wait >/dev/null 2>&1; do sleep 0.05; done';

export class LxdStoragePeer {
  private constructor(
    private readonly client: LxdClient,
    private readonly daemon: LxdDaemon,
    /** The pool and profile the peer's containers are made on. */
    private readonly profile: string,
  ) {}

  /**
   * A daemon of its own under `dir`, or why there is none. `btrfs`: a pool on a loop file LXD
   * makes in its LXD_DIR (LXD's default for a btrfs pool without `source`), `size` big.
   */
  static async start(dir: string, driver: 'dir' | 'btrfs' = 'dir', size = '8GiB'): Promise<LxdStoragePeer | string> {
    if (!lxdBin()) return 'lxd is not installed';
    const daemon = await startLxd(path.join(dir, `lxd-${driver}`), path.join(dir, `lxd-${driver}-log`));
    const client = new LxdClient({ socket: daemon.socket });
    const name = driver === 'dir' ? 'bench' : `bench-${driver}`;
    try {
      await ensurePool(client, name, `lxq bench (${driver} driver)`, driver, driver === 'btrfs' ? { size } : {});
      await ensureProfile(client, name, name, `lxq bench (${driver} driver)`);
    } catch (e) {
      client.close();
      await daemon.stop();
      await unmountUnder(daemon.lxdDir);
      throw e;
    }
    return new LxdStoragePeer(client, daemon, name);
  }

  /** lxq's container image `image` exported in LXD's format and imported into this daemon (its fingerprint). */
  async importImage(host: Host, image: string, scratch: string): Promise<string> {
    const file = path.join(scratch, `${image.replace(/\//g, '-')}.tar`);
    await host.images.export(image, file);
    const fingerprint = createHash('sha256').update(readFileSync(file)).digest('hex');
    const known = await this.client.request('GET', `/1.0/images/${fingerprint}`).then(() => true, () => false);
    if (!known) await this.client.wait(await this.client.request('POST', '/1.0/images', undefined, { stream: file, timeoutMs: 600_000 }), 'POST /1.0/images');
    return fingerprint;
  }

  /** A stopped container of the imported image `fingerprint`. */
  create(name: string, fingerprint: string): Promise<unknown> {
    return this.client.call('POST', '/1.0/instances', { name, type: 'container', source: { type: 'image', fingerprint }, profiles: [this.profile] });
  }

  /** A stopped LXD container `name` holding lxq's container image `image` (exported in LXD's format). */
  async containerOf(host: Host, image: string, name: string, scratch: string): Promise<void> {
    await this.create(name, await this.importImage(host, image, scratch));
  }

  /** Starts `name`; with `systemd`, resolves once systemd inside says running (the same wait as lxq's). */
  async start(name: string, systemd: boolean): Promise<void> {
    await this.client.call('PUT', `/1.0/instances/${name}/state`, { action: 'start', timeout: 60 });
    if (!systemd) return;
    const op = await this.client.call('POST', `/1.0/instances/${name}/exec`, { command: ['sh', '-c', SYSTEMD_RUNNING], environment: {}, 'wait-for-websocket': false, interactive: false, 'record-output': false });
    if (op.metadata?.return !== 0) throw new Error(`LXD: systemd in ${name} did not come up (exit ${op.metadata?.return})`);
  }

  stop(name: string): Promise<unknown> {
    return this.client.call('PUT', `/1.0/instances/${name}/state`, { action: 'stop', force: true, timeout: 30 });
  }

  /**
   * KiB used: of the containers' directories (`du`, as lxq's side is measured) on a dir pool; of
   * the whole pool's filesystem (LXD's own figure, its loop file holds nothing else) on btrfs,
   * where `du` would count each snapshot's shared extents again.
   */
  async diskKiB(names: string[]): Promise<number> {
    if (this.profile === 'bench') {
      if (names.length === 0) return 0;
      const dirs = names.map((n) => path.join(this.daemon.lxdDir, 'storage-pools', this.profile, 'containers', n));
      return Number(execFileSync('du', ['-sck', ...dirs], { encoding: 'utf8' }).trim().split('\n').pop()!.split('\t')[0]);
    }
    return (await this.client.request('GET', `/1.0/storage-pools/${this.profile}/resources`)).metadata.space.used / 1024;
  }

  snapshot(name: string, snap: string): Promise<unknown> {
    return this.client.call('POST', `/1.0/instances/${name}/snapshots`, { name: snap, stateful: false });
  }

  restore(name: string, snap: string): Promise<unknown> {
    return this.client.call('PUT', `/1.0/instances/${name}`, { restore: snap });
  }

  deleteSnapshot(name: string, snap: string): Promise<unknown> {
    return this.client.call('DELETE', `/1.0/instances/${name}/snapshots/${snap}`);
  }

  copy(source: string, target: string): Promise<unknown> {
    return this.client.call('POST', '/1.0/instances', { name: target, type: 'container', source: { type: 'copy', source, instance_only: true }, profiles: [this.profile] });
  }

  delete(name: string): Promise<unknown> {
    return this.client.call('DELETE', `/1.0/instances/${name}`);
  }

  async close(): Promise<void> {
    this.client.close();
    await this.daemon.stop();
    // A btrfs pool's loop mount, should LXD's shutdown have left it (the loop device clears itself).
    await unmountUnder(this.daemon.lxdDir);
  }
}
