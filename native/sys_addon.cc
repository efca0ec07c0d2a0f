// lxq's system-call layer: pidfds, flock, terminals, network namespaces, openat2 and mounts, none
// of it liblxc's (lxq_sys, always built; VMs, remote hosts and the host's locks and events load
// only this). liblxc's container API is lxq_lxc (lxc_addon.cc).
#include <napi.h>

#include <sys/file.h>
#include <sys/ioctl.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <string>

#include "mount.h"
#include "pidwatch.h"
#include "process.h"

namespace {

// setWindowSize(fd, cols, rows) → boolean: TIOCSWINSZ on a terminal's master; the process gets SIGWINCH.
Napi::Value SetWindowSize(const Napi::CallbackInfo& info) {
  struct winsize ws = {};
  ws.ws_col = static_cast<uint16_t>(info[1].ToNumber().Uint32Value());
  ws.ws_row = static_cast<uint16_t>(info[2].ToNumber().Uint32Value());
  return Napi::Boolean::New(info.Env(), ioctl(info[0].ToNumber().Int32Value(), TIOCSWINSZ, &ws) == 0);
}

// flock(fd, "ex" | "sh" | "un") → boolean: flock(2) without waiting (LOCK_NB), so it never blocks
// the event loop: "ex" or "sh" is true when taken, false when another open file holds it
// (lib/core/lock.ts retries); "un" releases.
Napi::Value Flock(const Napi::CallbackInfo& info) {
  const int fd = info[0].ToNumber().Int32Value();
  const std::string mode = info[1].ToString().Utf8Value();
  const int how = mode == "ex" ? LOCK_EX | LOCK_NB : mode == "sh" ? LOCK_SH | LOCK_NB : LOCK_UN;
  int rc;
  do rc = flock(fd, how); while (rc != 0 && errno == EINTR);
  if (rc == 0) return Napi::Boolean::New(info.Env(), true);
  if (errno == EWOULDBLOCK) return Napi::Boolean::New(info.Env(), false);
  throw Napi::Error::New(info.Env(), std::string("flock: ") + strerror(errno));
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("waitExit", Napi::Function::New(env, lxq::WaitExit, "waitExit"));
  exports.Set("watchPid", Napi::Function::New(env, lxq::WatchPid, "watchPid"));
  exports.Set("signalPidfd", Napi::Function::New(env, lxq::SignalPidfd, "signalPidfd"));
  exports.Set("openInRoot", Napi::Function::New(env, lxq::OpenInRoot, "openInRoot"));
  exports.Set("connectInNetns", Napi::Function::New(env, lxq::ConnectInNetns, "connectInNetns"));
  exports.Set("netnsInterfaces", Napi::Function::New(env, lxq::NetnsInterfaces, "netnsInterfaces"));
  exports.Set("mountInto", Napi::Function::New(env, lxq::MountInto, "mountInto"));
  exports.Set("umountIn", Napi::Function::New(env, lxq::UmountIn, "umountIn"));
  exports.Set("makeNode", Napi::Function::New(env, lxq::MakeNode, "makeNode"));
  exports.Set("mountOverlay", Napi::Function::New(env, lxq::MountOverlay, "mountOverlay"));
  exports.Set("unmount", Napi::Function::New(env, lxq::Unmount, "unmount"));
  exports.Set("bindMount", Napi::Function::New(env, lxq::BindMount, "bindMount"));
  exports.Set("btrfsSnapshot", Napi::Function::New(env, lxq::BtrfsSnapshot, "btrfsSnapshot"));
  exports.Set("setWindowSize", Napi::Function::New(env, SetWindowSize, "setWindowSize"));
  exports.Set("flock", Napi::Function::New(env, Flock, "flock"));
  return exports;
}

}  // namespace

NODE_API_MODULE(lxq_sys, Init)
