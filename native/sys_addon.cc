// lxq's system-call layer: pidfds, flock, terminals, network namespaces, openat2 and mounts, none
// of it liblxc's (lxq_sys, always built; VMs, remote hosts and the host's locks and events load
// only this). liblxc's container API is lxq_lxc (lxc_addon.cc).
#include <napi.h>

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "mount.h"
#include "pidwatch.h"
#include "uevent.h"
#include "process.h"
#include "splice.h"
#include "runner/protocol.h"

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

// spawnDetached(file, args, cwd) → { pid, stdin }: starts a program that daemonizes itself (forks, its first process exits) in a session of its own, its
// stdin the read end of a pipe whose write end is returned, stdout and stderr /dev/null, every
// signal at its default. posix_spawn (glibc's vfork-like clone) costs the same whatever this
// process's size: Node's spawn forks, which blocks the event loop for as long as copying a large
// heap's page tables takes (100-170 ms at 2 GiB), and the caller here is a container's start.
Napi::Value SpawnDetached(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::string file = info[0].ToString().Utf8Value();
  const Napi::Array list = info[1].As<Napi::Array>();
  const std::string cwd = info[2].ToString().Utf8Value();
  std::vector<std::string> args{file};
  for (uint32_t i = 0; i < list.Length(); i++) args.push_back(list.Get(i).ToString().Utf8Value());
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) throw Napi::Error::New(env, std::string("pipe2: ") + strerror(errno));
  posix_spawn_file_actions_t actions;
  posix_spawnattr_t attr;
  posix_spawn_file_actions_init(&actions);
  posix_spawnattr_init(&attr);
  posix_spawn_file_actions_adddup2(&actions, fds[0], 0);
  posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_addchdir_np(&actions, cwd.c_str());
  sigset_t all, none;
  sigfillset(&all);
  sigemptyset(&none);
  posix_spawnattr_setsigdefault(&attr, &all);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSID | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK);
  pid_t pid;
  const int rc = posix_spawn(&pid, file.c_str(), &actions, &attr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  close(fds[0]);
  if (rc != 0) {
    close(fds[1]);
    throw Napi::Error::New(env, "spawn " + file + ": " + strerror(rc));
  }
  // The program forks at once and its first process exits (lxq_stamper does): reaped here, in the ms that takes.
  while (waitpid(pid, nullptr, 0) < 0 && errno == EINTR) {
  }
  Napi::Object out = Napi::Object::New(env);
  out.Set("pid", Napi::Number::New(env, pid));
  out.Set("stdin", Napi::Number::New(env, fds[1]));
  return out;
}

std::vector<std::string> Strings(const Napi::Value& v) {
  const Napi::Array list = v.As<Napi::Array>();
  std::vector<std::string> out;
  for (uint32_t i = 0; i < list.Length(); i++) out.push_back(list.Get(i).ToString().Utf8Value());
  return out;
}

// handOver(runner, fallback, name, lxcpath, argv, env, cwd, uid, gid) → false, or never returns:
// this process becomes lxq_runner (execve), which attaches argv to the container with this
// process's fds 0-2 as the command's stdio and exits as the command does (lxc-attach's way: no
// Node waiting on pipes); if the container refuses it, the runner execs `fallback` instead (the
// whole CLI). False, nothing done, if one of fds 0-2 is a terminal: a container must never hold
// the host's terminal (TIOCSTI). The request goes over a socket (runner/protocol.h), not argv,
// which /proc shows to everyone.
Napi::Value HandOver(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  for (int fd = 0; fd <= 2; fd++)
    if (isatty(fd)) return Napi::Boolean::New(env, false);
  const std::string runner = info[0].ToString().Utf8Value();
  const std::vector<std::string> fallback = Strings(info[1]);
  std::vector<std::string> fields = {"exec", std::to_string(fallback.size())};
  fields.insert(fields.end(), fallback.begin(), fallback.end());
  const std::vector<std::string> attach =
      lxq::runner::AttachFields(info[2].ToString().Utf8Value(), info[3].ToString().Utf8Value(), info[6].ToString().Utf8Value(),
                                info[7].ToNumber().Int64Value(), info[8].ToNumber().Int64Value(), false, Strings(info[4]), Strings(info[5]));
  fields.insert(fields.end(), attach.begin(), attach.end());
  int pair[2];
  if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) != 0) throw Napi::Error::New(env, std::string("socketpair: ") + strerror(errno));
  int rc = lxq::runner::Send(pair[0], fields);
  close(pair[0]);
  // The runner's end and fds 0-2 (Node makes them close-on-exec) survive the exec; the runner
  // closes whatever else of Node's is not close-on-exec.
  int flags[3];
  for (int fd = 0; fd <= 2; fd++) flags[fd] = fcntl(fd, F_GETFD);
  if (rc == 0 && fcntl(pair[1], F_SETFD, 0) != 0) rc = errno;
  for (int fd = 0; fd <= 2 && rc == 0; fd++)
    if (flags[fd] < 0 || fcntl(fd, F_SETFD, flags[fd] & ~FD_CLOEXEC) != 0) rc = errno;
  if (rc == 0) {
    const std::string fd = std::to_string(pair[1]);
    char* argv[] = {const_cast<char*>("lxq_runner"), const_cast<char*>("once"), const_cast<char*>(fd.c_str()), nullptr};
    execve(runner.c_str(), argv, environ);
    rc = errno;
  }
  for (int fd = 0; fd <= 2; fd++)
    if (flags[fd] >= 0) fcntl(fd, F_SETFD, flags[fd]);
  close(pair[1]);
  throw Napi::Error::New(env, "exec " + runner + ": " + strerror(rc));
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("waitExit", Napi::Function::New(env, lxq::WaitExit, "waitExit"));
  exports.Set("watchPid", Napi::Function::New(env, lxq::WatchPid, "watchPid"));
  exports.Set("watchUevents", Napi::Function::New(env, lxq::WatchUevents, "watchUevents"));
  exports.Set("signalPidfd", Napi::Function::New(env, lxq::SignalPidfd, "signalPidfd"));
  exports.Set("openInRoot", Napi::Function::New(env, lxq::OpenInRoot, "openInRoot"));
  exports.Set("spliceStreams", Napi::Function::New(env, lxq::SpliceStreams, "spliceStreams"));
  exports.Set("socketInNetns", Napi::Function::New(env, lxq::SocketInNetns, "socketInNetns"));
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
  exports.Set("spawnDetached", Napi::Function::New(env, SpawnDetached, "spawnDetached"));
  exports.Set("handOver", Napi::Function::New(env, HandOver, "handOver"));
  return exports;
}

}  // namespace

NODE_API_MODULE(lxq_sys, Init)
