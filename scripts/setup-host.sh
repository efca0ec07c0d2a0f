#!/usr/bin/env bash
# Host packages and settings for lxq (Debian 12). Idempotent; run as root.
set -euo pipefail

packages=(
  lxc lxc-dev liblxc1 pkg-config uidmap        # liblxc and its headers; newuidmap for id maps
  g++ make libc6-dev                           # the addon (node-gyp); a static udp echo the proxy tests run inside
  busybox-static                               # the busybox container image
  qemu-system-x86 qemu-utils qemu-guest-agent  # VMs, qcow2 overlays, the guest agent for the VM image
  swtpm swtpm-tools tpm2-tools                 # a VM's TPM (tpm devices: swtpm beside QEMU); tpm2-tools to look at one by hand
  cpio kmod e2fsprogs                          # building the VM image (initramfs, modules, ext4)
  mmdebstrap debootstrap                       # the debian/12 image (from the host's apt sources)
  python3-lxc rsync                            # benchmark peers: python3-lxc; liblxc's clone runs rsync
  tmux                                         # the CLI tests run shell and exec -t in a real terminal
  strace                                       # test/concurrency: liblxc's one-second freeze sleep looked for in a trace
  iproute2 dnsmasq-base dnsmasq-utils nftables # networks: bridges and links, DHCP and DNS (dhcp_release), NAT
  acl attr libcap2-bin zstd criu               # rootfs copies keep xattrs (getfattr/setfattr); ACLs and capabilities in tests; export compression; stateful snapshots
  iperf3                                       # network bench: TCP throughput (the host's loopback is the ceiling)
  btrfs-progs                                  # bench/storage.ts: LXD's btrfs loop pool as a peer
  lxd lxd-client openssl                       # remote hosts: Debian's LXD 5.0 server and its `lxc` (another client whose changes test/remote-instance sees as events; cluster join token; bench/remote.ts); client certificates for the TLS tests
)
missing=()
for p in "${packages[@]}"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Unprivileged containers: liblxc maps ids through newuidmap, which wants root to own a range
# (LXD does the same). Added once, never changed if root already has one.
for f in /etc/subuid /etc/subgid; do
  touch "$f"
  grep -qE '^(root|0):' "$f" || echo 'root:1000000:1000000000' >> "$f"
done
