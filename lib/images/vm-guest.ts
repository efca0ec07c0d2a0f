/**
 * The static guest files of the `vm/default` image, embedded as text so that they ship inside the
 * compiled package (tsc copies no data files). Two trees use them:
 *
 * - the initramfs: busybox-static and the virtio modules; `/init` loads the modules, then mounts
 *   the root disk (`/dev/vda`, ext4) and `switch_root`s into it, or stays in the initramfs;
 * - the root disk: busybox, qemu-ga with its libraries, and a busybox-init setup that runs the
 *   guest agents (lxq's own first, then qemu-ga) on their virtio-serial ports and powers off on
 *   the ACPI power button.
 *
 * No udev runs: the `/dev/virtio-ports/<name>` links are made by `lxq-vports` from sysfs.
 * Every step prints an `lxq-init: ...` line (with the uptime) to the console, which QEMU writes
 * to the serial log, so a boot can be followed and timed.
 */
import { DHCP_FILES } from './dhcp-client';

export interface GuestFile {
  mode: number;
  text: string;
}

/** The name of the agent's virtio-serial port, as QEMU's `virtserialport,name=` is set. */
export const QGA_PORT_NAME = 'org.qemu.guest_agent.0';

/** Prints a marker with the uptime; sourced by the other scripts. */
const MARK = `mark() { read -r up _ 2>/dev/null < /proc/uptime; echo "lxq-init: $* (\${up:-?}s)"; }`;

/**
 * Shell functions of the boot scripts: mount /dev/pts, /dev/shm, and /run and /tmp under `$1`
 * (`/` or the new root) unless mounted, set the hostname from `$1/etc/hostname`, bring up loopback, and make the
 * `/dev/virtio-ports/<name>` links (no udev). Builtins wherever possible: under TCG a fork+exec
 * costs tens of milliseconds.
 */
const SETUP_FNS = `is_mounted() { while read -r _ m _; do [ "$m" = "$1" ] && return 0; done 2>/dev/null < /proc/mounts; return 1; }
mount_api() {
  r=\${1%/}
  [ -d /dev/pts ] && [ -d /dev/shm ] || mkdir -p /dev/pts /dev/shm
  is_mounted /dev/pts || mount -t devpts -o nosuid,noexec,gid=5,mode=620,ptmxmode=000 devpts /dev/pts
  is_mounted /dev/shm || mount -t tmpfs -o nosuid,nodev tmpfs /dev/shm
  is_mounted "$r/run" || mount -t tmpfs -o nosuid,nodev,mode=0755 tmpfs "$r/run"
  is_mounted "$r/tmp" || mount -t tmpfs -o nosuid,nodev,mode=1777 tmpfs "$r/tmp"
}
set_hostname() {
  want=; have=
  [ -r "$1/etc/hostname" ] && read -r want < "$1/etc/hostname"
  read -r have < /proc/sys/kernel/hostname
  [ -n "$want" ] && [ "$want" != "$have" ] && { echo "$want" > /proc/sys/kernel/hostname; } 2>/dev/null
}
lo_up() {
  lof=0
  read -r lof 2>/dev/null < /sys/class/net/lo/flags
  [ $((lof & 1)) = 1 ] && return 0
  { echo $((lof | 1)) > /sys/class/net/lo/flags; } 2>/dev/null || ip link set lo up 2>/dev/null || ifconfig lo 127.0.0.1 up
}
vports() {
  for f in /sys/class/virtio-ports/*/name; do
    [ -r "$f" ] || continue
    name=; read -r name < "$f"
    [ -n "$name" ] || continue
    dev=\${f%/name}; dev=\${dev##*/}
    [ -e "/dev/$dev" ] || continue
    [ -d /dev/virtio-ports ] || mkdir -p /dev/virtio-ports
    [ -e "/dev/virtio-ports/$name" ] || ln -sfn "../$dev" "/dev/virtio-ports/$name"
  done
  return 0
}`;

/** Makes `/dev/virtio-ports/<name>` links for every named virtio-serial port (what udev would). */
const VPORTS = `#!/bin/sh
# lxq-vports: /dev/virtio-ports/<name> -> ../vportNpM, from /sys/class/virtio-ports/*/name
${SETUP_FNS}
vports
`;

/**
 * The initramfs `/init`. It does the whole early setup with the busybox it already runs (its code
 * is translated once by TCG): modules, the new root's mounts, hostname, loopback, the
 * virtio-ports links; the root disk's init then starts the services at once. The module list
 * (`/lib/modules/load`) is written by the builder.
 */
const INITRAMFS_INIT = `#!/bin/busybox sh
# lxq initramfs init: load the virtio modules, mount the root disk, switch_root into it.
export PATH=/sbin:/bin:/usr/sbin:/usr/bin
${MARK}
${SETUP_FNS}
/bin/busybox mount -a -T /etc/fstab.early
read -r kver < /proc/sys/kernel/osrelease
mark "initramfs started, kernel $kver"

# Each line: a module file, then optionally "virtio=<id>": load it only if such a device exists
# (e.g. the network driver and its helpers when the VM has a virtio NIC).
while read -r mod cond; do
  [ -n "$mod" ] || continue
  case "$cond" in
    virtio=*)
      found=
      for d in /sys/bus/virtio/devices/*/device; do
        [ -r "$d" ] && read -r id < "$d" && [ "$id" = "\${cond#virtio=}" ] && found=1
      done
      [ -n "$found" ] || continue ;;
  esac
  insmod "/lib/modules/$mod" || echo "lxq-init: insmod $mod failed"
done < /lib/modules/load
mark "modules loaded"

root=/dev/vda
hostname=
fstype=ext4
flags=rw,noatime
read -r cmdline < /proc/cmdline
for arg in $cmdline; do
  case "$arg" in
    lxq.root=*) root=\${arg#lxq.root=} ;;
    lxq.rootfstype=*) fstype=\${arg#lxq.rootfstype=} ;;
    lxq.rootflags=*) flags=\${arg#lxq.rootflags=} ;;
    lxq.hostname=*) hostname=\${arg#lxq.hostname=} ;;
  esac
done

if [ "$root" != none ]; then
  # The disk shows up while virtio_blk probes, which insmod waits for; allow a little slack.
  i=0
  while [ ! -b "$root" ] && [ $i -lt 50 ]; do usleep 10000; i=$((i + 1)); done
  if ! [ -b "$root" ]; then
    echo "lxq-init: no disk $root"
  elif mount -t "$fstype" -o "$flags" "$root" /newroot; then
    if [ -x /newroot/sbin/init ] || [ -L /newroot/sbin/init ]; then
      # A disk without /etc/hostname (a Debian image's first boot) takes the instance name.
      [ -n "$hostname" ] && ! [ -e /newroot/etc/hostname ] && echo "$hostname" > /proc/sys/kernel/hostname
      set_hostname /newroot
      lo_up
      vports
      # The disk's busybox is the same build as this one (same id, not replaced since): run
      # this copy, whose code TCG has translated already (~0.2 s less to the guest agent).
      disk_id=; ram_id=
      read -r ram_id 2>/dev/null < /etc/lxq/busybox.id
      read -r disk_id 2>/dev/null < /newroot/etc/lxq/busybox.id
      if [ -n "$ram_id" ] && [ "$ram_id" = "$disk_id" ] && ! [ /newroot/bin/busybox -nt /newroot/etc/lxq/busybox.id ]; then
        mount --bind /bin/busybox /newroot/bin/busybox
      fi
      mark "switching to the root disk $root"
      # /dev/pts, /dev/shm, the new root's /run and /tmp, then /dev, /proc and /sys moved into
      # it: one mount(8) for all (a fork costs tens of milliseconds under TCG).
      mkdir -p /dev/pts /dev/shm
      mount -a -T /etc/fstab.newroot
      exec switch_root /newroot /sbin/init
    fi
    echo "lxq-init: $root has no /sbin/init"
    umount /newroot
  else
    echo "lxq-init: cannot mount $root ($fstype)"
  fi
fi
mark "no root disk: staying in the initramfs"
mount_api /
lo_up
vports
exec /sbin/init
`;

const FSTAB_EARLY = `devtmpfs /dev devtmpfs mode=0755,nosuid 0 0
proc /proc proc nosuid,nodev,noexec 0 0
sysfs /sys sysfs nosuid,nodev,noexec 0 0
`;

const FSTAB_NEWROOT = `devpts /dev/pts devpts nosuid,noexec,gid=5,mode=620,ptmxmode=000 0 0
tmpfs /dev/shm tmpfs nosuid,nodev 0 0
tmpfs /newroot/run tmpfs nosuid,nodev,mode=0755 0 0
tmpfs /newroot/tmp tmpfs nosuid,nodev,mode=1777 0 0
/dev /newroot/dev none move 0 0
/proc /newroot/proc none move 0 0
/sys /newroot/sys none move 0 0
`;

/** busybox init's table in the initramfs (used only when there is no root disk). */
const INITRAMFS_INITTAB = `::sysinit:/bin/sh -c 'echo "lxq-init: initramfs shell on the console"'
::respawn:/bin/cttyhack /bin/sh
::ctrlaltdel:/sbin/reboot
::shutdown:/bin/sync
`;

/**
 * The root disk's boot script. After the initramfs everything is in place and this costs no
 * fork; it still sets the system up when the disk is booted some other way.
 */
const RCS = `#!/bin/sh
export PATH=/sbin:/bin:/usr/sbin:/usr/bin
${MARK}
${SETUP_FNS}
is_mounted /proc || mount -t proc -o nosuid,nodev,noexec proc /proc
is_mounted /sys || mount -t sysfs -o nosuid,nodev,noexec sysfs /sys
is_mounted /dev || mount -t devtmpfs -o mode=0755,nosuid devtmpfs /dev
mount_api /
while read -r dev m fs opts _; do
  [ "$m" = / ] && case ",$opts," in *,ro,*) mount -o remount,rw / ;; esac
done < /proc/mounts
set_hostname ""
lo_up
vports
/sbin/lxq-dhcp &
mark "rcS done"
`;

/** Run by busybox init before it kills everything: flush the root disk and make it read-only. */
const RCK = `#!/bin/sh
export PATH=/sbin:/bin:/usr/sbin:/usr/bin
${MARK}
mark "shutting down"
killall lxq-agent qemu-ga acpid 2>/dev/null
sync
mount -o remount,ro / 2>/dev/null || sync
`;

/** Waits for the agent's port (its name arrives from QEMU a moment after the driver loads). */
const QGA_START = `#!/bin/sh
# Respawned by init: start the guest agent on its virtio-serial port.
export PATH=/sbin:/bin:/usr/sbin:/usr/bin
${MARK}
${SETUP_FNS}
port=/dev/virtio-ports/${QGA_PORT_NAME}
i=0
while [ ! -e "$port" ]; do
  vports
  [ -e "$port" ] && break
  i=$((i + 1))
  if [ $i -ge 500 ]; then
    echo "lxq-init: no virtio-serial port named ${QGA_PORT_NAME}; is the device configured?"
    exec sleep 10
  fi
  usleep 10000
done
mark "starting qemu-ga"
exec /usr/sbin/qemu-ga -m virtio-serial -p "$port" -t /run
`;

/**
 * A prompt, still orderly, halt/poweroff/reboot: busybox init's own sequence sleeps a fixed 2 s
 * (after SIGTERM and before the reboot call). This sends SIGTERM to every process, waits for
 * those (not for the services init respawns meanwhile) up to 2 s, SIGKILLs what is left, syncs,
 * remounts the root read-only and powers off, reboots or halts at once.
 */
const LXQ_HALT = `#!/bin/sh
# lxq-halt poweroff|reboot|halt
export PATH=/sbin:/bin:/usr/sbin:/usr/bin
${MARK}
case "$1" in poweroff|reboot|halt) ;; *) echo "usage: lxq-halt poweroff|reboot|halt" >&2; exit 2 ;; esac
exec </dev/null >/dev/console 2>&1
mark "$1: stopping processes"
# The user processes now (kernel threads have an empty cmdline), to wait for after SIGTERM.
pids=
for p in /proc/[0-9]*; do
  pid=\${p#/proc/}
  [ "$pid" = 1 ] || [ "$pid" = $$ ] && continue
  c=
  read -r c 2>/dev/null < "$p/cmdline"
  [ -n "$c" ] && pids="$pids $pid"
done
kill -TERM -1 2>/dev/null
i=0
while [ $i -lt 40 ]; do
  alive=
  for pid in $pids; do
    # Gone, or a zombie (init reaps its children only about once a second).
    st=
    read -r _ _ st _ 2>/dev/null < "/proc/$pid/stat"
    [ -n "$st" ] && [ "$st" != Z ] && alive=1 && break
  done
  [ -n "$alive" ] || break
  usleep 50000
  i=$((i + 1))
done
kill -KILL -1 2>/dev/null
sync
mount -o remount,ro / 2>/dev/null
mark "$1"
exec /bin/busybox "$1" -f
`;

/**
 * qemu-ga's guest-shutdown runs `/sbin/shutdown -h -P +0 "hypervisor initiated shutdown"` (or -H,
 * -r); busybox has no `shutdown`. The time and message are ignored: it happens now.
 */
const SHUTDOWN = `#!/bin/sh
# lxq: a minimal shutdown(8), for qemu-ga's guest-shutdown.
action=poweroff
for arg in "$@"; do
  case "$arg" in
    -r|--reboot) action=reboot ;;
    -H|--halt) action=halt ;;
    -P|--poweroff|-h) [ "$action" = reboot ] || [ "$action" = halt ] || action=poweroff ;;
    -c) echo "shutdown: nothing to cancel" >&2; exit 1 ;;
    --help) echo "usage: shutdown [-h|-P|-H|-r] [TIME] [MESSAGE]"; exit 0 ;;
    *) ;;
  esac
done
# Detached, so that the caller (qemu-ga waits for its child) is not part of the sequence.
setsid /sbin/lxq-halt "$action" </dev/null >/dev/null 2>&1 &
exit 0
`;

/** busybox acpid maps the power button (KEY_POWER) to the action `PWRF/00000080`, under /etc/acpi. */
const ACPI_POWER = `#!/bin/sh
echo "lxq-init: ACPI power button: powering off" > /dev/console 2>/dev/null
exec setsid /sbin/lxq-halt poweroff </dev/null >/dev/null 2>&1
`;

/**
 * A root shell on the serial console once someone presses Enter there (`lxq console`): no getty,
 * root has no password. ttyS0 by name, not /dev/console, which cannot be a controlling terminal.
 */
const INITTAB = `# lxq vm/default: busybox init
::sysinit:/etc/init.d/rcS
::respawn:/usr/libexec/lxq/lxq-agent
::respawn:/usr/libexec/lxq/qga-start
::respawn:/sbin/acpid -f -c /etc/acpi -l /run/acpid.log
ttyS0::askfirst:-/bin/sh
::ctrlaltdel:/sbin/reboot
::shutdown:/etc/init.d/rcK
`;

/** Files of the initramfs, besides busybox, its applet links and the modules. */
export const INITRAMFS_FILES: Record<string, GuestFile> = {
  init: { mode: 0o755, text: INITRAMFS_INIT },
  'sbin/lxq-vports': { mode: 0o755, text: VPORTS },
  'etc/inittab': { mode: 0o644, text: INITRAMFS_INITTAB },
  'etc/fstab.early': { mode: 0o644, text: FSTAB_EARLY },
  'etc/fstab.newroot': { mode: 0o644, text: FSTAB_NEWROOT },
};

/** Where the builder records the sha256 of busybox, in both trees (see the initramfs /init). */
export const BUSYBOX_ID_FILE = 'etc/lxq/busybox.id';

/** Files of the root disk, besides busybox, its applet links, qemu-ga and its libraries. */
export const ROOTFS_FILES: Record<string, GuestFile> = {
  'etc/passwd': {
    mode: 0o644,
    text: 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n',
  },
  'etc/group': { mode: 0o644, text: 'root:x:0:\ntty:x:5:\nnogroup:x:65534:\n' },
  'etc/shadow': { mode: 0o600, text: 'root:*:19000:0:99999:7:::\nnobody:*:19000:0:99999:7:::\n' },
  // No etc/hostname: the initramfs sets the instance's name from lxq.hostname at each boot (so a
  // renamed VM takes its new name), as the kernel's uts name is a container's.
  'etc/hosts': { mode: 0o644, text: '127.0.0.1 localhost\n::1 localhost\n' },
  'etc/resolv.conf': { mode: 0o644, text: '' },
  'etc/fstab': { mode: 0o644, text: '/dev/vda / ext4 rw,noatime 0 1\n' },
  'etc/shells': { mode: 0o644, text: '/bin/sh\n/bin/ash\n' },
  'etc/inittab': { mode: 0o644, text: INITTAB },
  'etc/init.d/rcS': { mode: 0o755, text: RCS },
  'etc/init.d/rcK': { mode: 0o755, text: RCK },
  'etc/acpi/PWRF/00000080': { mode: 0o755, text: ACPI_POWER },
  'sbin/lxq-vports': { mode: 0o755, text: VPORTS },
  'sbin/shutdown': { mode: 0o755, text: SHUTDOWN },
  'sbin/lxq-halt': { mode: 0o755, text: LXQ_HALT },
  'usr/libexec/lxq/qga-start': { mode: 0o755, text: QGA_START },
  ...DHCP_FILES,
};
