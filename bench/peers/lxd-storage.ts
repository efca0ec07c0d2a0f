/**
 * LXD 5.0's `dir` storage driver as a peer for container snapshots, restores and copies: a
 * private daemon (test/helpers/lxd.ts: its own LXD_DIR, a `dir` pool, a profile without NIC),
 * one container per lxq image, made from lxq's own image exported in LXD's format (no image
 * server is reachable), so both sides hold the same tree. Driven over REST on its unix socket,
 * each call waiting on LXD's background operation, as a Node program would.
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import * as path from 'node:path';

import type { Host } from '../../lib';
import { LxdClient } from '../../lib/drivers/remote/client';
import { ensurePool, ensureProfile, LxdDaemon, lxdBin, startLxd } from '../../test/helpers/lxd';

export class LxdStoragePeer {
  private constructor(
    private readonly client: LxdClient,
    private readonly daemon: LxdDaemon,
  ) {}

  /** A daemon of its own under `dir`, or why there is none. */
  static async start(dir: string): Promise<LxdStoragePeer | string> {
    if (!lxdBin()) return 'lxd is not installed';
    const daemon = await startLxd(path.join(dir, 'lxd'), path.join(dir, 'lxd-log'));
    const client = new LxdClient({ socket: daemon.socket });
    await ensurePool(client, 'bench', 'lxq bench (dir driver)');
    await ensureProfile(client, 'bench', 'bench', 'lxq bench (dir driver)');
    return new LxdStoragePeer(client, daemon);
  }

  /** A stopped LXD container `name` holding lxq's container image `image` (exported in LXD's format). */
  async containerOf(host: Host, image: string, name: string, scratch: string): Promise<void> {
    const file = path.join(scratch, `${name}.tar`);
    await host.images.export(image, file);
    const fingerprint = createHash('sha256').update(readFileSync(file)).digest('hex');
    const known = await this.client.request('GET', `/1.0/images/${fingerprint}`).then(() => true, () => false);
    if (!known) await this.client.wait(await this.client.request('POST', '/1.0/images', undefined, { stream: file, timeoutMs: 600_000 }), 'POST /1.0/images');
    await this.client.call('POST', '/1.0/instances', { name, type: 'container', source: { type: 'image', fingerprint }, profiles: ['bench'] });
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
    return this.client.call('POST', '/1.0/instances', { name: target, type: 'container', source: { type: 'copy', source, instance_only: true }, profiles: ['bench'] });
  }

  delete(name: string): Promise<unknown> {
    return this.client.call('DELETE', `/1.0/instances/${name}`);
  }

  async close(): Promise<void> {
    this.client.close();
    await this.daemon.stop();
  }
}
