#include "attach.h"

#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <pty.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace lxq {

namespace {

// Runs inside the container, last step before the command: the process must not inherit
// Node's signal mask or ignored signals, nor any fd but 0-2 (an fd without close-on-exec from
// another thread of this process would otherwise leak into the container).
struct Command {
  lxc_attach_command_t cmd;
  bool pty;
};

int ExecCommand(void* payload) {
  auto* command = static_cast<Command*>(payload);
  auto* cmd = &command->cmd;
  if (command->pty) {
    // A session of its own with the terminal (fd 0) as controlling tty, as login_tty does.
    setsid();
    ioctl(0, TIOCSCTTY, 0);
  }
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, nullptr);
  struct sigaction dfl = {};
  dfl.sa_handler = SIG_DFL;
  for (int sig = 1; sig < NSIG; sig++)
    if (sig != SIGKILL && sig != SIGSTOP) sigaction(sig, &dfl, nullptr);
  syscall(SYS_close_range, 3U, ~0U, 0U);
  execvp(cmd->program, cmd->argv);
  int err = errno;
  dprintf(2, "lxq: cannot run %s: %s\n", cmd->program, strerror(err));
  return err == ENOENT ? 127 : 126;  // the shell's convention
}

void CloseAll(std::initializer_list<int> fds) {
  for (int fd : fds)
    if (fd >= 0) close(fd);
}

}  // namespace

bool AttachProcess(lxc_container* c, AttachRequest& req, std::vector<int64_t>& out, Failure& failure) {
  int in[2] = {-1, -1}, outp[2] = {-1, -1}, errp[2] = {-1, -1};
  if (req.pty) {
    int master = -1, slave = -1;
    struct winsize ws = {req.rows, req.cols, 0, 0};
    if (openpty(&master, &slave, nullptr, nullptr, &ws) != 0) {
      failure = {"attach", errno, "openpty"};
      return false;
    }
    fcntl(master, F_SETFD, FD_CLOEXEC);
    fcntl(slave, F_SETFD, FD_CLOEXEC);
    // The slave serves as all three; liblxc dup2s each onto 0, 1 and 2.
    in[0] = slave;
    in[1] = master;
    outp[1] = dup(slave);
    errp[1] = dup(slave);
    fcntl(outp[1], F_SETFD, FD_CLOEXEC);
    fcntl(errp[1], F_SETFD, FD_CLOEXEC);
  } else if (pipe2(in, O_CLOEXEC) || pipe2(outp, O_CLOEXEC) || pipe2(errp, O_CLOEXEC)) {
    failure = {"attach", errno, "pipe2"};
    CloseAll({in[0], in[1], outp[0], outp[1], errp[0], errp[1]});
    return false;
  }
  std::vector<char*> argv, env;
  for (auto& a : req.argv) argv.push_back(a.data());
  argv.push_back(nullptr);
  for (auto& e : req.env) env.push_back(e.data());
  env.push_back(nullptr);

  lxc_attach_options_t opts = LXC_ATTACH_OPTIONS_DEFAULT;
  opts.env_policy = LXC_ATTACH_CLEAR_ENV;
  opts.extra_env_vars = env.data();
  opts.initial_cwd = req.cwd.empty() ? nullptr : req.cwd.data();
  opts.uid = req.uid < 0 ? 0 : static_cast<uid_t>(req.uid);
  opts.gid = req.gid < 0 ? 0 : static_cast<gid_t>(req.gid);
  // Never the caller's fd 0: liblxc would then ignore SIGINT/SIGQUIT in this process.
  opts.stdin_fd = in[0];
  opts.stdout_fd = outp[1];
  opts.stderr_fd = errp[1];

  Command cmd = {{argv[0], argv.data()}, req.pty};
  pid_t pid = -1;
  int rc = c->attach(c, ExecCommand, &cmd, &opts, &pid);
  int err = errno;
  CloseAll({in[0], outp[1], errp[1]});
  if (rc < 0 || pid <= 0) {
    CloseAll({in[1], outp[0], errp[0]});
    failure = {"attach", err ? err : EIO, ""};
    return false;
  }
  int pidfd = static_cast<int>(syscall(SYS_pidfd_open, pid, 0));
  if (pidfd < 0) {
    failure = {"attach", errno, "pidfd_open"};
    kill(pid, SIGKILL);
    CloseAll({in[1], outp[0], errp[0]});
    return false;
  }
  fcntl(pidfd, F_SETFD, FD_CLOEXEC);
  out = {pid, pidfd, in[1], outp[0], errp[0]};
  return true;
}

bool SetWindowSize(int fd, uint16_t cols, uint16_t rows) {
  struct winsize ws = {rows, cols, 0, 0};
  return ioctl(fd, TIOCSWINSZ, &ws) == 0;
}

}  // namespace lxq
