// Processes lxq starts inside containers: lxq_runner reaps them and reports the exit status on
// the request's own channel, which the event loop watches (no thread blocked, no waitpid in
// this process at all); they are signalled through a pidfd, free of pid-reuse races.
#pragma once

#include <napi.h>

namespace lxq {

// waitExit(channel, pidfd) → Promise<{ code: number | null, signal: number | null }>; closes both.
Napi::Value WaitExit(const Napi::CallbackInfo& info);
// signalPidfd(pidfd, signal) → boolean (false if the process is already gone).
Napi::Value SignalPidfd(const Napi::CallbackInfo& info);
// openInRoot(root, path, flags, mode) → Promise<fd>: `path` resolved as if `root` were "/".
Napi::Value OpenInRoot(const Napi::CallbackInfo& info);
// netnsInterfaces(pid) → Promise<Interface[]>: the interfaces in the network namespace of `pid`.
Napi::Value NetnsInterfaces(const Napi::CallbackInfo& info);
// socketInNetns(pid, spec) → Promise<fd>: a socket connected or listening in the network namespace of `pid` (0: this one).
Napi::Value SocketInNetns(const Napi::CallbackInfo& info);

}  // namespace lxq
