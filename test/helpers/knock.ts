/**
 * Traffic a test can send to an address lxq gave an instance without any program of its own
 * inside: a TCP connection attempt to a port nothing listens on, which the instance answers
 * with a reset (one packet in, one out).
 */
import * as net from 'node:net';

/** One TCP connection attempt to port 9 of `address` (`fe80::…%link` for a link-local one): true when the instance answered it. */
export function knock(address: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ host: address, port: 9, timeout: 5_000 });
    const done = (answered: boolean) => {
      s.destroy();
      resolve(answered);
    };
    s.once('connect', () => done(true)).once('error', (e: NodeJS.ErrnoException) => done(e.code === 'ECONNREFUSED')).once('timeout', () => done(false));
  });
}
