// Mounts into a running container's mount namespace, and device nodes for it (see mount.cc).
#pragma once

#include <napi.h>

namespace lxq {

// mountInto(pid, source, target, { dir, readonly, idmap, recursive, propagation, uid, gid })
// → Promise<void>: binds the host's `source` at `target` (relative to the container's root, made
// if missing, owned by uid:gid on the host).
Napi::Value MountInto(const Napi::CallbackInfo& info);
// umountIn(pid, target, remove) → Promise<void>: detaches the mount at `target` inside the
// container, and with `remove` unlinks the file it was mounted on.
Napi::Value UmountIn(const Napi::CallbackInfo& info);
// makeNode(path, block, mode, major, minor, uid, gid) → Promise<void>: a device node on the host.
Napi::Value MakeNode(const Napi::CallbackInfo& info);

// mountOverlay({ target, layers, image, upper, work, stage, idmap }) → Promise<void>: an overlay at
// `target` (host mount namespace) of `layers` over `image`, seen through an idmapped read-only
// clone when `idmap` ({ base, size }) is given; read-only without `upper`.
Napi::Value MountOverlay(const Napi::CallbackInfo& info);
// bindMount(source, target, readonly) → Promise<void>: a bind mount on the host (read-only with `readonly`).
Napi::Value BindMount(const Napi::CallbackInfo& info);
// btrfsSnapshot(source, target, readonly) → Promise<void>: a snapshot of the btrfs subvolume
// `source` made at `target` (which must not exist), read-only with `readonly`.
Napi::Value BtrfsSnapshot(const Napi::CallbackInfo& info);
// unmount(target, detach) → Promise<void>: umount2 on the host, never following a symlink.
Napi::Value Unmount(const Napi::CallbackInfo& info);

}  // namespace lxq
