/**
 * The proxy devices a local instance's process serves while the instance runs (see
 * lib/network/proxy.ts): each listens on the host and connects inside through the driver.
 */
import type { Socket as DgramSocket } from 'node:dgram';
import type { Socket } from 'node:net';

import type { DeviceChange } from '../devices/change';
import type { Devices } from '../devices/declarations';
import { type DatagramEndpoint, parseEndpoint, ProxyServer, type StreamEndpoint } from '../network/proxy';

/** How a proxy reaches inside the running instance. */
export interface InsideConnections {
  stream(to: StreamEndpoint): Promise<Socket>;
  datagram(to: DatagramEndpoint): Promise<DgramSocket>;
}

export class ProxyDevices {
  private readonly served = new Map<string, ProxyServer>();

  constructor(private readonly inside: InsideConnections) {}

  /** Whether any proxy is served now. */
  get serving(): boolean {
    return this.served.size > 0;
  }

  /** Serves the proxy devices among `devices` not served yet; on failure, none of them. */
  async open(devices: Devices): Promise<void> {
    const opened: string[] = [];
    try {
      for (const [name, d] of Object.entries(devices)) {
        if (d.type !== 'proxy' || this.served.has(name)) continue;
        const proxy = new ProxyServer(name, parseEndpoint('listen', d.listen), parseEndpoint('connect', d.connect), {
          stream: (to) => this.inside.stream(to),
          datagram: (to) => this.inside.datagram(to),
        });
        await proxy.start();
        this.served.set(name, proxy);
        opened.push(name);
      }
    } catch (e) {
      await this.close(opened);
      throw e;
    }
  }

  /** Stops serving the proxies of `names` (by default, all). */
  async close(names: string[] = [...this.served.keys()]): Promise<void> {
    for (const name of names) {
      await this.served.get(name)?.close();
      this.served.delete(name);
    }
  }

  /**
   * Runs `apply` (the driver's part of a device change) with the proxies of `change` moved first
   * on a running instance (`live`): the removed closed, the added listening; moved back if it fails.
   */
  async changing(change: DeviceChange, live: boolean, apply: () => Promise<void>): Promise<void> {
    if (live) {
      await this.close(Object.keys(change.removed));
      await this.open(change.added).catch(async (e) => {
        await this.open(change.removed).catch(() => undefined);
        throw e;
      });
    }
    try {
      await apply();
    } catch (e) {
      if (live) {
        await this.close(Object.keys(change.added));
        await this.open(change.removed).catch(() => undefined);
      }
      throw e;
    }
  }
}
