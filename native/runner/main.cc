// lxq_runner: a small process that makes liblxc's start and attach calls for the Node process.
//
// liblxc forks the caller in both (attach twice), and a fork costs in proportion to the caller's
// resident memory (on this project's hosts, ~0.45 ms per MiB). A Node program can be hundreds of
// MiB; this process is a few. It serves requests from the addon on fd 3 and forks a handler per
// request, so requests run in parallel and a handler is what liblxc moves into cgroups.
#include <fcntl.h>
#include <lxc/lxccontainer.h>
#include <signal.h>
#include <stdio.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "protocol.h"

using lxq::runner::Receive;
using lxq::runner::Send;

namespace {

// What the container's init or an attached command inherits must not be Node's (nor ours):
// no blocked signals, no ignored ones (Node ignores SIGPIPE).
void ResetSignals() {
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, nullptr);
  struct sigaction dfl = {};
  dfl.sa_handler = SIG_DFL;
  for (int sig = 1; sig < NSIG; sig++)
    if (sig != SIGKILL && sig != SIGSTOP) sigaction(sig, &dfl, nullptr);
}

void Reply(int sock, const std::vector<std::string>& fields, const std::vector<int>& fds = {}) {
  Send(sock, fields, fds);
}

// start: fields name, lxcpath, argv...; the container is started daemonized from the saved config.
void Start(int sock, const std::vector<std::string>& f) {
  lxc_container* c = lxc_container_new(f[1].c_str(), f[2].c_str());
  if (!c) return Reply(sock, {std::to_string(ENOENT)});
  std::vector<char*> argv;
  for (size_t i = 3; i < f.size(); i++) argv.push_back(const_cast<char*>(f[i].c_str()));
  argv.push_back(nullptr);
  c->want_daemonize(c, true);
  c->want_close_all_fds(c, true);
  errno = 0;
  bool ok = c->start(c, 0, argv.size() > 1 ? argv.data() : nullptr);
  int err = ok ? 0 : (errno ? errno : EIO);
  Reply(sock, {std::to_string(err)});
}

struct Command {
  lxc_attach_command_t cmd;
  bool pty;
};

// The last step inside the container before the command: a session of its own on the terminal
// if asked, no fd but 0-2 (anything else would leak into the container), then exec.
// exec keeps ignored signals ignored. liblxc's attach leaves glibc's internal real-time signals
// (32, 33) ignored, and glibc's sigaction refuses to touch those, so the kernel call is used.
void UnignoreAllSignals() {
  struct KernelSigaction {
    void (*handler)(int);
    unsigned long flags;
    void (*restorer)();
    uint64_t mask;
  } dfl = {SIG_DFL, 0, nullptr, 0};
  for (int sig = 1; sig <= 64; sig++)
    if (sig != SIGKILL && sig != SIGSTOP) syscall(SYS_rt_sigaction, sig, &dfl, nullptr, sizeof(uint64_t));
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, nullptr);
}

int ExecCommand(void* payload) {
  auto* command = static_cast<Command*>(payload);
  UnignoreAllSignals();
  if (command->pty) {
    setsid();
    ioctl(0, TIOCSCTTY, 0);
  }
  syscall(SYS_close_range, 3U, ~0U, 0U);
  execvp(command->cmd.program, command->cmd.argv);
  int err = errno;
  dprintf(2, "lxq: cannot run %s: %s\n", command->cmd.program, strerror(err));
  return err == ENOENT ? 127 : 126;  // the shell's convention
}

// attach: fields name, lxcpath, cwd, uid, gid, pty, argc, argv..., env...; fds reply, stdin,
// stdout, stderr. Replies [0, pid] + pidfd once running, then [exit, code, signal] when it ends.
void Attach(int sock, const std::vector<std::string>& f, const std::vector<int>& fds) {
  if (fds.size() < 4 || f.size() < 8) return Reply(sock, {std::to_string(EINVAL)});
  lxc_container* c = lxc_container_new(f[1].c_str(), f[2].c_str());
  if (!c) return Reply(sock, {std::to_string(ENOENT)});
  size_t argc = std::strtoul(f[7].c_str(), nullptr, 10);
  if (argc == 0 || 8 + argc > f.size()) return Reply(sock, {std::to_string(EINVAL)});
  std::vector<char*> argv, env;
  for (size_t i = 8; i < 8 + argc; i++) argv.push_back(const_cast<char*>(f[i].c_str()));
  argv.push_back(nullptr);
  for (size_t i = 8 + argc; i < f.size(); i++) env.push_back(const_cast<char*>(f[i].c_str()));
  env.push_back(nullptr);

  lxc_attach_options_t opts = LXC_ATTACH_OPTIONS_DEFAULT;
  opts.env_policy = LXC_ATTACH_CLEAR_ENV;
  opts.extra_env_vars = env.data();
  opts.initial_cwd = f[3].empty() ? nullptr : const_cast<char*>(f[3].c_str());
  opts.uid = static_cast<uid_t>(std::strtoul(f[4].c_str(), nullptr, 10));
  opts.gid = static_cast<gid_t>(std::strtoul(f[5].c_str(), nullptr, 10));
  opts.stdin_fd = fds[1];  // never our fd 0: liblxc would then ignore SIGINT/SIGQUIT here
  opts.stdout_fd = fds[2];
  opts.stderr_fd = fds[3];
  Command cmd = {{argv[0], argv.data()}, f[6] == "1"};
  pid_t pid = -1;
  errno = 0;
  int rc = c->attach(c, ExecCommand, &cmd, &opts, &pid);
  int err = errno;
  for (size_t i = 1; i < fds.size(); i++) close(fds[i]);
  if (rc < 0 || pid <= 0) return Reply(sock, {std::to_string(err ? err : EIO)});
  int pidfd = static_cast<int>(syscall(SYS_pidfd_open, pid, 0));
  Reply(sock, {"0", std::to_string(pid)}, pidfd >= 0 ? std::vector<int>{pidfd} : std::vector<int>{});
  if (pidfd >= 0) close(pidfd);
  siginfo_t info = {};
  while (waitid(P_PID, pid, &info, WEXITED) < 0 && errno == EINTR) {
  }
  bool signalled = info.si_code == CLD_KILLED || info.si_code == CLD_DUMPED;
  Reply(sock, {"exit", signalled ? "-1" : std::to_string(info.si_status), signalled ? std::to_string(info.si_status) : "0"});
}

}  // namespace

int main() {
  const int requests = 3;
  syscall(SYS_close_range, 4U, ~0U, 0U);
  signal(SIGCHLD, SIG_IGN);  // handlers are reaped by the kernel
  for (;;) {
    std::vector<std::string> fields;
    std::vector<int> fds;
    int rc = Receive(requests, fields, fds);
    if (rc == ECONNRESET || rc == EBADF || rc == ENOTSOCK) return 0;  // the Node process is gone
    if (rc != 0 || fields.empty() || fds.empty()) {
      for (int fd : fds) close(fd);
      continue;
    }
    pid_t handler = fork();
    if (handler == 0) {
      close(requests);
      ResetSignals();
      if (fields[0] == "start" && fields.size() >= 3) Start(fds[0], fields);
      else if (fields[0] == "attach") Attach(fds[0], fields, fds);
      else Reply(fds[0], {std::to_string(EINVAL)});
      _exit(0);
    }
    if (handler < 0) Reply(fds[0], {std::to_string(errno)});
    for (int fd : fds) close(fd);
  }
}
