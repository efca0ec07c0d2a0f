#include "client.h"

#include <dlfcn.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <mutex>

extern char** environ;

#include "protocol.h"

namespace lxq::runner {

namespace {

std::mutex mutex;
int requests = -1;  // our end of the runner's request socket

// lxq_runner is built next to the addon (build/Release).
std::string RunnerPath() {
  Dl_info info = {};
  dladdr(reinterpret_cast<void*>(&RunnerPath), &info);
  std::string self = info.dli_fname ? info.dli_fname : "";
  return self.substr(0, self.find_last_of('/') + 1) + "lxq_runner";
}

// posix_spawn (vfork-like: no copy of this process's memory), with a clean signal state and
// nothing inherited but the socket as fd 3.
int Launch() {
  int pair[2];
  if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) != 0) return errno;
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  // The socket first (it may itself be 0-2 if those are closed here), then 0-2 on /dev/null:
  // a received fd must never land on them, where liblxc's daemonize later puts /dev/null.
  posix_spawn_file_actions_adddup2(&actions, pair[1], 3);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  sigset_t none, all;
  sigemptyset(&none);
  sigfillset(&all);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setsigdefault(&attr, &all);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSID);
  std::string path = RunnerPath();
  char* argv[] = {const_cast<char*>("lxq_runner"), nullptr};
  pid_t pid;
  // The environment is this process's, as liblxc would see it if called here (PATH finds newuidmap).
  int rc = posix_spawn(&pid, path.c_str(), &actions, &attr, argv, environ);
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  close(pair[1]);
  if (rc != 0) {
    close(pair[0]);
    return rc;
  }
  // The runner is not waited for: it exits when this process closes the socket, and init
  // reaps it then; a reap here would need waitpid, which must not race Node's own.
  requests = pair[0];
  return 0;
}

}  // namespace

int Request(const std::vector<std::string>& fields, const std::vector<int>& fds, Reply& reply) {
  int pair[2];
  if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) != 0) return errno;
  std::vector<int> sent = {pair[1]};
  sent.insert(sent.end(), fds.begin(), fds.end());
  int rc;
  {
    std::lock_guard<std::mutex> lock(mutex);
    for (int attempt = 0; attempt < 2; attempt++) {
      if (requests < 0 && (rc = Launch()) != 0) break;
      rc = Send(requests, fields, sent);
      if (rc != EPIPE && rc != ECONNRESET && rc != ENOTCONN) break;
      close(requests);  // the runner died: start another
      requests = -1;
    }
  }
  close(pair[1]);
  if (rc == 0) rc = Receive(pair[0], reply.fields, reply.fds);
  if (rc != 0) {
    close(pair[0]);
    return rc;
  }
  reply.channel = pair[0];
  return 0;
}

}  // namespace lxq::runner
