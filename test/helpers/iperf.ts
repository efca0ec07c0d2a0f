/**
 * The host's own iperf3 (Debian's /usr/bin/iperf3) in a busybox container, by read-only bind
 * mounts of the binary, its loader and the host's library directory: no image to build, the same
 * iperf3 on both ends. Run it with IPERF_ENV.
 */
export const IPERF_DISKS = {
  iperflibs: { type: 'disk', source: '/usr/lib/x86_64-linux-gnu', path: '/lib/x86_64-linux-gnu', readonly: 'true' },
  iperfld: { type: 'disk', source: '/usr/lib64', path: '/lib64', readonly: 'true' },
  iperf: { type: 'disk', source: '/usr/bin/iperf3', path: '/usr/local/bin/iperf3', readonly: 'true' },
} as const;

export const IPERF_ENV = { LD_LIBRARY_PATH: '/lib/x86_64-linux-gnu' };

/** iperf3's JSON result: what the receiver got, bit/s. */
export const iperfBits = (json: string) => (JSON.parse(json) as { end: { sum_received: { bits_per_second: number } } }).end.sum_received.bits_per_second;
