#include "pidwatch.h"

#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <string>

#include "fdwatch.h"

namespace lxq {

Napi::Value WatchPid(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsNumber() || !info[1].IsFunction()) throw Napi::TypeError::New(env, "watchPid(pid, onExit)");
  int pid = info[0].As<Napi::Number>().Int32Value();
  int fd = static_cast<int>(syscall(SYS_pidfd_open, pid, 0));
  if (fd < 0) throw ErrnoError(env, "pidfd_open " + std::to_string(pid), errno);
  // A pidfd is readable once the process exited: one call, the watch closed first (a callback
  // that cancels finds it closed).
  auto onExit = [](Napi::Env, FdWatch* w) {
    CloseFdWatch(w);
    CallFdWatch(w, {});
  };
  return WatchFd(env, fd, info[1].As<Napi::Function>(), "lxq:watchPid", onExit, false, "pid " + std::to_string(pid));
}

}  // namespace lxq
