// Watching any process for its exit without waiting on it: a pidfd (pidfd_open) becomes readable
// when the process exits, whoever its parent is. lxq's host-wide events see containers' inits and
// VMs' QEMUs exit this way, even those started by another process.
#pragma once

#include <napi.h>

namespace lxq {

// watchPid(pid, onExit) → cancel(): onExit() is called once, from the event loop, when the
// process exits. The watch does not keep the event loop alive. Throws an Error with errno
// (ESRCH: no such process) if the process cannot be watched.
Napi::Value WatchPid(const Napi::CallbackInfo& info);

}  // namespace lxq
