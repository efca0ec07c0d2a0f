/**
 * DHCP in the busybox images (the `busybox` container and `vm/default`): busybox's udhcpc on
 * every interface but lo, including ones hot-plugged later (the loop looks once a second, inside
 * the guest), with a script that configures the address, the default route and the resolver.
 */
import type { GuestFile } from './vm-guest';

const UDHCPC_SCRIPT = `#!/bin/sh
# udhcpc's events: configure $interface from the lease. Only IPv4 is flushed: the IPv6
# link-local and SLAAC addresses (router solicitations go from the link-local) stay.
case "$1" in
  deconfig)
    ip -4 addr flush dev "$interface"
    ip link set dev "$interface" up
    ;;
  bound|renew)
    # The resolver first: the address is what a waiter looks for (waitForAddress), and a name
    # looked up right after it appeared found no resolv.conf yet (examples/network, one CI run).
    if [ -n "$dns" ]; then
      { [ -n "$domain" ] && echo "search $domain"; for d in $dns; do echo "nameserver $d"; done; } > /etc/resolv.conf
    fi
    ip -4 addr flush dev "$interface"
    ip addr add "$ip/\${mask:-24}" dev "$interface"
    if [ -n "$router" ]; then
      ip route del default dev "$interface" 2>/dev/null
      for r in $router; do ip route add default via "$r" dev "$interface" && break; done
    fi
    ;;
esac
exit 0
`;

const DHCP_LOOP = `#!/bin/sh
# A DHCP client per interface but lo, for those there at boot and those added later; not for
# one that has a global IPv4 address when first seen (a static one, as a routed NIC's: the
# client's deconfig would flush it). The pid files and marks of an earlier boot go first: /run
# is on the root disk, and their pids may now be other processes' (the console's askfirst
# init), which would pass for a client running.
mkdir -p /run
rm -f /run/udhcpc.*.pid /run/lxq-static.*
while :; do
  for p in /sys/class/net/*; do
    i=\${p##*/}
    [ "$i" = lo ] && continue
    [ -e "/run/lxq-static.$i" ] && continue
    f=/run/udhcpc.$i.pid
    [ -r "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null && continue
    if [ ! -e "$f" ] && ip -4 addr show dev "$i" scope global 2>/dev/null | grep -q inet; then
      : > "/run/lxq-static.$i"
      continue
    fi
    udhcpc -f -S -i "$i" -p "$f" -s /etc/udhcpc.script -x "hostname:$(hostname)" >/dev/null 2>&1 &
    # Its pid at once (it writes the same later): a client slow to write it must not get a twin
    # at the next look, whose deconfig would flush the address the first one bound.
    echo $! > "$f"
  done
  sleep 1
done
`;

/** The files, by path in the image; the image's boot script starts `/sbin/lxq-dhcp &`. */
export const DHCP_FILES: Record<string, GuestFile> = {
  'etc/udhcpc.script': { mode: 0o755, text: UDHCPC_SCRIPT },
  'sbin/lxq-dhcp': { mode: 0o755, text: DHCP_LOOP },
};
