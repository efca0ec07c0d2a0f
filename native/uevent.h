// The kernel's device events (uevents: a device node appearing or going), read from the
// NETLINK_KOBJECT_UEVENT socket as udevd itself reads them, so lxq needs no udevd (this host has
// none). unix-hotplug devices are served from these.
#pragma once

#include <napi.h>

namespace lxq {

// watchUevents(onEvent) → cancel(): onEvent(fields) is called from the event loop for each
// kernel uevent, `fields` its "KEY=value" strings (the "action@devpath" header dropped); an
// empty array when events were lost (the socket's buffer overran): the caller looks again at
// what the host has. Only messages from the kernel (port id 0) are passed on. The watch keeps
// the event loop alive until cancelled. Throws an Error with errno if the socket cannot be made.
Napi::Value WatchUevents(const Napi::CallbackInfo& info);

}  // namespace lxq
