// Processes lxq starts inside containers, tracked by pidfd: reaped by their own pid (never
// waitpid(-1), which would steal Node's children), signalled without pid-reuse races, and
// watched by the event loop rather than by a blocked thread.
#pragma once

#include <napi.h>

namespace lxq {

// waitPidfd(pidfd) → Promise<{ code: number | null, signal: number | null }>; closes the pidfd.
Napi::Value WaitPidfd(const Napi::CallbackInfo& info);
// signalPidfd(pidfd, signal) → boolean (false if the process is already gone).
Napi::Value SignalPidfd(const Napi::CallbackInfo& info);
// openInRoot(root, path, flags, mode) → Promise<fd>: `path` resolved as if `root` were "/".
Napi::Value OpenInRoot(const Napi::CallbackInfo& info);

}  // namespace lxq
