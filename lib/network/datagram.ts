/** A udp socket connected to one endpoint, as a udp proxy's way inside uses it. */
import * as dgram from 'node:dgram';

import type { DatagramEndpoint } from './proxy-address';

/**
 * `fd`, when given, is an unconnected udp socket made elsewhere (in a container's network
 * namespace, which it keeps: its bind and route are that namespace's).
 */
export async function connectedDatagram(to: DatagramEndpoint, fd?: number): Promise<dgram.Socket> {
  const socket = dgram.createSocket(to.host.includes(':') ? 'udp6' : 'udp4');
  try {
    if (fd !== undefined) await new Promise<void>((resolve) => socket.bind({ fd }, resolve));
    await new Promise<void>((resolve, reject) => {
      socket.once('error', reject);
      socket.connect(to.port, to.host, (e?: Error) => {
        socket.off('error', reject);
        if (e) reject(e);
        else resolve();
      });
    });
    return socket;
  } catch (e) {
    socket.close();
    throw e;
  }
}
