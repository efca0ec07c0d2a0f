#include "start.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>

namespace lxq {

namespace {

// The container's init inherits signal dispositions and the mask of the process that starts
// it; Node blocks some signals on its threads and ignores SIGPIPE. Give init a clean slate.
void ResetSignals() {
  sigset_t none;
  sigemptyset(&none);
  pthread_sigmask(SIG_SETMASK, &none, nullptr);
  struct sigaction dfl = {};
  dfl.sa_handler = SIG_DFL;
  for (int sig = 1; sig < NSIG; sig++) {
    if (sig == SIGKILL || sig == SIGSTOP) continue;
    sigaction(sig, &dfl, nullptr);
  }
}

}  // namespace

bool StartDetached(lxc_container* c, std::vector<std::string>& args, Failure& failure) {
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);

  // The child reports liblxc's errno through this pipe; its exit status says success.
  int report[2];
  if (pipe2(report, O_CLOEXEC) != 0) {
    failure = {"start", errno, ""};
    return false;
  }
  pid_t child = fork();
  if (child < 0) {
    failure = {"start", errno, ""};
    close(report[0]);
    close(report[1]);
    return false;
  }
  if (child == 0) {
    // Only async-signal-safe work and liblxc itself here: this is a fork of a threaded process.
    ResetSignals();
    c->want_daemonize(c, true);
    c->want_close_all_fds(c, true);
    bool ok = c->start(c, 0, args.empty() ? nullptr : argv.data());
    int err = ok ? 0 : (errno ? errno : EIO);
    ssize_t unused = write(report[1], &err, sizeof err);
    (void)unused;
    _exit(ok ? 0 : 1);
  }
  close(report[1]);
  int status = 0;
  while (waitpid(child, &status, 0) < 0 && errno == EINTR) {
  }
  int err = 0;
  ssize_t n;
  do n = read(report[0], &err, sizeof err); while (n < 0 && errno == EINTR);
  close(report[0]);
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return true;
  failure = {"start", n == static_cast<ssize_t>(sizeof err) ? err : EIO, ""};
  return false;
}

}  // namespace lxq
