// lxq_runner: a small process that makes liblxc's start and attach calls for the Node process.
//
// liblxc forks the caller in both (attach twice), and a fork costs in proportion to the caller's
// resident memory (on this project's hosts, ~0.45 ms per MiB). A Node program can be hundreds of
// MiB; this process is a few. It serves the addon's requests (fd 3) from one poll loop, with no
// thread to hand work to: on this project's hosts every wake-up of another thread costs more
// than the work itself (measured: a thread per request added ~0.4 ms to an exec).
// - attach is made here, in the loop: it blocks for the few ms liblxc takes to start the
//   command, which becomes this process's child (liblxc clones it with CLONE_PARENT); its pidfd
//   joins the loop, which reports the exit status on the request's own socket.
//   The price: a container monitor that never answers (stopped with SIGSTOP, stuck in a hook
//   while it starts) holds every later request until it does. lxq itself does not send a
//   command into a container it is still starting (spawn waits for a start under way).
// - start is made by a forked handler, because liblxc moves the process that calls start() into
//   the container's monitor cgroup: the handler is what it moves; it exits once the
//   container runs, and the loop replies when it has reaped it.
// `lxq_runner once FD` is the other way it runs: in place of the CLI's Node process, for one
// command on the CLI's own stdio (Once, below).
#include <dirent.h>
#include <fstream>
#include <fcntl.h>
#include <lxc/lxccontainer.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <sys/ioctl.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <algorithm>
#include <list>
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
// Runs in a forked handler (see the header); returns 0 or an errno, its exit status. The loop
// replies once it has reaped the handler: a handler that replied itself would still sit in the
// monitor's cgroups for a moment, and a stop in that moment left them behind (liblxc's monitor
// cannot remove a cgroup with a process in it).
int StartInHandler(const std::vector<std::string>& f) {
  lxc_container* c = lxc_container_new(f[1].c_str(), f[2].c_str());
  if (!c) return ENOENT;
  std::vector<char*> argv;
  for (size_t i = 3; i < f.size(); i++) argv.push_back(const_cast<char*>(f[i].c_str()));
  argv.push_back(nullptr);
  c->want_daemonize(c, true);
  c->want_close_all_fds(c, true);
  errno = 0;
  bool ok = c->start(c, 0, argv.size() > 1 ? argv.data() : nullptr);
  int err = ok ? 0 : (errno ? errno : EIO);
  return err > 0 && err < 256 ? err : (ok ? 0 : EIO);
}

// The last few containers attached to, parsed: lxc_container_new reads and parses the config
// (~0.2 ms) on every call otherwise. An entry serves while its config file is the same (inode,
// size, mtime). Few, because every byte this process holds makes each of liblxc's forks slower.
class Containers {
 public:
  lxc_container* Get(const std::string& name, const std::string& lxcpath) {
    std::string config = lxcpath + "/" + name + "/config";
    struct stat st = {};
    bool exists = stat(config.c_str(), &st) == 0;
    for (auto it = entries_.begin(); it != entries_.end(); ++it) {
      if (it->config != config) continue;
      if (exists && Same(it->st, st)) {
        entries_.splice(entries_.begin(), entries_, it);  // most recent first
        return it->c;
      }
      lxc_container_put(it->c);
      entries_.erase(it);
      break;
    }
    lxc_container* c = lxc_container_new(name.c_str(), lxcpath.c_str());
    if (!c || !exists) return c;  // the caller puts an uncached one
    entries_.push_front({config, st, c});
    if (entries_.size() > kKept) {
      lxc_container_put(entries_.back().c);
      entries_.pop_back();
    }
    return c;
  }
  // Whether `c` came from (and stays in) the cache.
  bool Cached(lxc_container* c) const {
    for (const auto& e : entries_)
      if (e.c == c) return true;
    return false;
  }

 private:
  static constexpr size_t kKept = 4;
  struct Entry {
    std::string config;
    struct stat st;
    lxc_container* c;
  };
  static bool Same(const struct stat& a, const struct stat& b) {
    return a.st_ino == b.st_ino && a.st_dev == b.st_dev && a.st_size == b.st_size && a.st_mtim.tv_sec == b.st_mtim.tv_sec &&
           a.st_mtim.tv_nsec == b.st_mtim.tv_nsec;
  }
  std::list<Entry> entries_;
};

Containers containers;

// A child this loop waits for: an attached command (whose exit goes to `sock`) or a start handler.
struct Child {
  pid_t pid;
  int pidfd;
  int sock;  // the request's socket, closed when the child is reaped
  bool report;
  bool start = false;  // a start handler: its exit status is the start's reply
};

int PidfdOpen(pid_t pid) { return static_cast<int>(syscall(SYS_pidfd_open, pid, 0)); }

// start: forks the handler; the handler replies. Returns the handler to reap, or replies itself.
bool Start(int sock, const std::vector<std::string>& f, Child& child) {
  if (f.size() < 3) return Reply(sock, {std::to_string(EINVAL)}), false;
  pid_t handler = fork();
  if (handler == 0) {
    // Nothing of other requests in flight (their pipes, sockets) may stay open in here for the
    // length of a start: keep only this request's socket, as fd 3.
    if (sock != 3) dup2(sock, 3);
    syscall(SYS_close_range, 4U, ~0U, 0U);
    ResetSignals();
    _exit(StartInHandler(f));
  }
  if (handler < 0) return Reply(sock, {std::to_string(errno)}), false;
  child = {handler, PidfdOpen(handler), sock, false, true};
  if (child.pidfd < 0) {  // cannot be watched: wait here rather than leave a zombie
    int status = 0;
    while (waitpid(handler, &status, 0) < 0 && errno == EINTR) {
    }
    return Reply(sock, {std::to_string(WIFEXITED(status) ? WEXITSTATUS(status) : EIO)}), false;
  }
  return true;
}

struct Command {
  lxc_attach_command_t cmd;
  bool pty;
  bool session;  // a session of its own without a terminal (handed over: see Once)
  int gate[2];   // {-1, -1}, or a pipe: the command runs once a byte comes (see AttachCommand)
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
  if (command->gate[0] >= 0) {  // the attach that made this process failed: it must not run
    close(command->gate[1]);
    char go = 0;
    ssize_t n;
    while ((n = read(command->gate[0], &go, 1)) < 0 && errno == EINTR) {
    }
    if (n != 1) _exit(126);
  }
  UnignoreAllSignals();
  if (command->pty || command->session) setsid();
  if (command->pty) ioctl(0, TIOCSCTTY, 0);
  syscall(SYS_close_range, 3U, ~0U, 0U);
  execvp(command->cmd.program, command->cmd.argv);
  int err = errno;
  dprintf(2, "lxq: cannot run %s: %s\n", command->cmd.program, strerror(err));
  return err == ENOENT ? 127 : 126;  // the shell's convention
}

// This process's open fds.
std::vector<int> OpenFds() {
  std::vector<int> fds;
  DIR* d = opendir("/proc/self/fd");
  if (!d) return fds;
  while (dirent* e = readdir(d))
    if (e->d_name[0] != '.') fds.push_back(std::atoi(e->d_name));
  closedir(d);
  return fds;
}

// liblxc's attach (5.0.2, and upstream to this day) leaves the container init's pidfd open in the
// caller at every call: get_attach_context takes it from the monitor (LXC_CMD_GET_INIT_PIDFD),
// only the attaching child closes its copy (after setns), and put_attach_context/put_namespaces
// close the namespace fds only when there is no pidfd. One pidfd per exec, for as long as this
// process lives. This process has one thread, so a pidfd that was not open before the call is
// that one (ours are opened after it): closed, on every path (a failed attach leaves it too).
void CloseLeftPidfds(const std::vector<int>& before) {
  char link[64];
  for (int fd : OpenFds()) {
    if (std::find(before.begin(), before.end(), fd) != before.end()) continue;
    ssize_t n = readlink(("/proc/self/fd/" + std::to_string(fd)).c_str(), link, sizeof link - 1);
    if (n > 0 && std::string(link, static_cast<size_t>(n)).find("[pidfd]") != std::string::npos) close(fd);
  }
}

// This process's children.
std::vector<pid_t> ChildPids() {
  std::ifstream list("/proc/self/task/" + std::to_string(getpid()) + "/children");
  std::vector<pid_t> pids;
  for (pid_t pid; list >> pid;) pids.push_back(pid);
  return pids;
}

// A failed attach may leave its process behind (liblxc does not say its pid; see
// kInterceptAttempts): a child nobody reaps, whose zombie keeps the container's init from ending
// at stop. Any child of this process not in `known` is such a one: killed, reaped.
void ReapStrays(const std::vector<pid_t>& known) {
  for (pid_t pid : ChildPids()) {
    if (std::find(known.begin(), known.end(), pid) != known.end()) continue;
    kill(pid, SIGKILL);
    while (waitpid(pid, nullptr, 0) < 0 && errno == EINTR) {
    }
  }
}

// The pids of `children`.
std::vector<pid_t> Pids(const std::vector<Child>& children) {
  std::vector<pid_t> pids;
  for (const Child& c : children) pids.push_back(c.pid);
  return pids;
}

// Whether the container's seccomp policy has notify rules (lxq_intercept answers them).
bool Intercepting(lxc_container* c) {
  char proxy[8] = "";
  return c->get_config_item(c, "lxc.seccomp.notify.proxy", proxy, sizeof proxy) > 0;
}

// liblxc's attach (5.0.2, and upstream to this day) fails now and then into a container whose
// policy has notify rules, with no error logged (errno is whatever was left): two processes write
// on the one stream socket the caller reads, the transient process the pid of the command and
// the command, after loading the policy, its notify fd. Without an LSM label to wait for (none
// on hosts without AppArmor) nothing orders them; when the fd's one byte comes first, the
// caller's 4-byte read of the pid is short and the attach fails, while the command goes on.
// So the command waits for a byte on a gate that is written only once the attach has succeeded
// (it exits otherwise), and a failed attach is made again: nothing of the first one ran.
constexpr int kInterceptAttempts = 3;

// Starts the command of an attach request `f` (runner/protocol.h's AttachFields) with stdin, stdout
// and stderr `in`, `out`, `err` (liblxc puts them at 0-2 in the command); `session`: in a session
// of its own; `known`: this process's children (any other is a stray of a failed attach). Returns
// 0 and its pid (our child: liblxc clones it with CLONE_PARENT), or an errno.
int AttachCommand(const std::vector<std::string>& f, int in, int out, int err, bool session, const std::vector<pid_t>& known, pid_t& pid) {
  if (f.size() < 8) return EINVAL;
  size_t argc = std::strtoul(f[7].c_str(), nullptr, 10);
  if (argc == 0 || 8 + argc > f.size()) return EINVAL;
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
  opts.stdin_fd = in;  // never our fd 0: liblxc would then ignore SIGINT/SIGQUIT here
  opts.stdout_fd = out;
  opts.stderr_fd = err;
  lxc_container* c = containers.Get(f[1], f[2]);
  if (!c) return ENOENT;
  // Only into a RUNNING container (ESRCH otherwise): in a frozen one the command would hang.
  const char* state = c->state(c);
  if (!state || strcmp(state, "RUNNING") != 0) {
    if (!containers.Cached(c)) lxc_container_put(c);
    return ESRCH;
  }
  Command cmd = {{argv[0], argv.data()}, f[6] == "1", session, {-1, -1}};
  bool gated = Intercepting(c);
  int error = 0;
  for (int attempt = 0; attempt < (gated ? kInterceptAttempts : 1); attempt++) {
    if (attempt > 0) ReapStrays(known);  // the failed attempt's command, gone through its gate
    if (gated && pipe2(cmd.gate, O_CLOEXEC) != 0) {
      error = errno;
      break;
    }
    pid = -1;
    std::vector<int> before = OpenFds();
    errno = 0;
    int rc = c->attach(c, ExecCommand, &cmd, &opts, &pid);
    error = rc < 0 || pid <= 0 ? (errno ? errno : EIO) : 0;
    CloseLeftPidfds(before);
    if (gated) {
      if (error == 0 && write(cmd.gate[1], "1", 1) != 1) error = errno;  // then the command exits
      close(cmd.gate[0]);
      close(cmd.gate[1]);
      cmd.gate[0] = cmd.gate[1] = -1;
    }
    if (error == 0) break;
  }
  if (!containers.Cached(c)) lxc_container_put(c);
  return error;
}

// A pidfd for the child `pid`, or (killed and reaped) -1 and errno.
int WatchedChild(pid_t pid) {
  int pidfd = PidfdOpen(pid);
  if (pidfd >= 0) return pidfd;
  int err = errno;
  kill(pid, SIGKILL);
  while (waitpid(pid, nullptr, 0) < 0 && errno == EINTR) {
  }
  errno = err;
  return -1;
}

// attach: fields as AttachFields; fds reply, stdin, stdout, stderr. Replies [0, pid] + pidfd once
// running; the loop sends [exit, code, signal] when it ends. Returns the command to wait for, or
// has replied with an errno.
bool Attach(int sock, const std::vector<std::string>& f, const std::vector<int>& fds, const std::vector<Child>& children, Child& child) {
  if (fds.size() < 4) return Reply(sock, {std::to_string(EINVAL)}), false;
  pid_t pid = -1;
  int err = AttachCommand(f, fds[1], fds[2], fds[3], false, Pids(children), pid);
  if (err != 0) return Reply(sock, {std::to_string(err)}), false;
  child = {pid, WatchedChild(pid), sock, true};
  if (child.pidfd < 0) return Reply(sock, {std::to_string(errno)}), false;
  Reply(sock, {"0", std::to_string(pid)}, {child.pidfd});
  return true;
}

// The child behind a readable pidfd has ended: reap it and report its exit if asked to.
void Reap(const Child& child) {
  siginfo_t info = {};
  while (waitid(P_PID, child.pid, &info, WEXITED) < 0 && errno == EINTR) {
  }
  if (child.start) Reply(child.sock, {std::to_string(info.si_code == CLD_EXITED ? info.si_status : EIO)});
  if (child.report) {
    bool signalled = info.si_code == CLD_KILLED || info.si_code == CLD_DUMPED;
    Reply(child.sock, {"exit", signalled ? "-1" : std::to_string(info.si_status), signalled ? std::to_string(info.si_status) : "0"});
  }
  close(child.pidfd);
  close(child.sock);
}

// One request. The command's ends of its pipes are closed here once it has its own copies (ours
// would keep them open after it exits); the request's socket stays open while a child needs it.
void Serve(const std::vector<std::string>& fields, const std::vector<int>& fds, std::vector<Child>& children) {
  Child child = {};
  bool waiting = false;
  if (fields[0] == "start") {
    waiting = Start(fds[0], fields, child);
  } else if (fields[0] == "attach") {
    waiting = Attach(fds[0], fields, fds, children, child);
    if (!waiting) ReapStrays(Pids(children));
  } else {
    Reply(fds[0], {std::to_string(EINVAL)});
  }
  for (size_t i = 1; i < fds.size(); i++) close(fds[i]);
  if (waiting) children.push_back(child);
  else close(fds[0]);
}


// The signals a handed-over command gets when this process gets them (as the CLI forwards them).
const int kForwarded[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT};

// Waits for the handed-over command, passing on the forwarded signals (blocked, read from a
// signalfd); its exit status as the CLI's: its code, or 128 + the signal that ended it.
int WaitForwarding(pid_t pid, int pidfd, const sigset_t& forwarded) {
  int sfd = signalfd(-1, &forwarded, SFD_CLOEXEC);
  for (;;) {
    pollfd watched[2] = {{pidfd, POLLIN, 0}, {sfd, POLLIN, 0}};
    if (poll(watched, sfd < 0 ? 1 : 2, -1) < 0) continue;  // EINTR
    signalfd_siginfo si;
    if (watched[1].revents && read(sfd, &si, sizeof si) == sizeof si) syscall(SYS_pidfd_send_signal, pidfd, si.ssi_signo, nullptr, 0);
    if (!watched[0].revents) continue;
    siginfo_t info = {};
    while (waitid(P_PID, pid, &info, WEXITED) < 0 && errno == EINTR) {
    }
    return info.si_code == CLD_EXITED ? info.si_status : 128 + info.si_status;
  }
}

// `lxq_runner once FD`: the CLI's `lxq exec` handed over (the addon's handOver exec'd this in
// place of the Node process; FD holds its one request: "exec", n, the fallback's n words, then
// an attach request). The command gets this process's fds 0-2 and, in a session of its own, no
// terminal; this process waits for it and exits as it does. If the command cannot start (the
// container not running, gone), this process becomes the fallback, the whole CLI
// (LXQ_NO_QUICK=1), which says why as it always does.
int Once(int sock) {
  std::vector<std::string> f;
  std::vector<int> fds;
  int rc = Receive(sock, f, fds);
  syscall(SYS_close_range, 3U, ~0U, 0U);  // the socket, and anything of Node's left open
  size_t n = rc == 0 && f.size() > 2 && f[0] == "exec" ? std::strtoul(f[1].c_str(), nullptr, 10) : 0;
  if (n == 0 || 2 + n > f.size()) return dprintf(2, "lxq: lxq_runner: a bad request\n"), 1;
  std::vector<std::string> fallback(f.begin() + 2, f.begin() + 2 + static_cast<long>(n));
  std::vector<std::string> attach(f.begin() + 2 + static_cast<long>(n), f.end());
  ResetSignals();
  signal(SIGPIPE, SIG_IGN);  // as in the server (liblxc's sync sockets); the command resets it
  // From now on, a forwarded signal waits for the command (or, refused, goes to the fallback).
  sigset_t forwarded;
  sigemptyset(&forwarded);
  for (int sig : kForwarded) sigaddset(&forwarded, sig);
  sigprocmask(SIG_BLOCK, &forwarded, nullptr);
  // The caller's stdio above 2 for the command, /dev/null at 0-2 meanwhile (as in the server:
  // whatever liblxc says on its way is not the command's output).
  int io[3];
  for (int fd = 0; fd <= 2; fd++) io[fd] = fcntl(fd, F_DUPFD_CLOEXEC, 3);
  int null = open("/dev/null", O_RDWR | O_CLOEXEC);
  for (int fd = 0; fd <= 2; fd++) dup2(null, fd);
  close(null);
  pid_t pid = -1;
  int err = AttachCommand(attach, io[0], io[1], io[2], true, ChildPids(), pid);  // Node's, if any, are not strays
  int pidfd = err == 0 ? WatchedChild(pid) : -1;
  if (err == 0 && pidfd < 0) err = errno;
  for (int fd = 0; fd <= 2; fd++) {
    dup2(io[fd], fd);
    close(io[fd]);
  }
  if (err == 0) return WaitForwarding(pid, pidfd, forwarded);
  std::vector<char*> argv;
  for (auto& a : fallback) argv.push_back(a.data());
  argv.push_back(nullptr);
  sigprocmask(SIG_UNBLOCK, &forwarded, nullptr);
  signal(SIGPIPE, SIG_DFL);
  setenv("LXQ_NO_QUICK", "1", 1);
  execv(argv[0], argv.data());
  dprintf(2, "lxq: cannot run %s: %s\n", argv[0], strerror(errno));
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 3 && strcmp(argv[1], "once") == 0) return Once(std::atoi(argv[2]));
  const int requests = 3;
  syscall(SYS_close_range, 4U, ~0U, 0U);
  ResetSignals();  // SIGCHLD at its default, so that children wait to be reaped
  // A write to a peer that went away (an attach's sync socket, a request's socket) must fail
  // with EPIPE, not end the runner and every exit report in flight. Children reset it.
  signal(SIGPIPE, SIG_IGN);
  std::vector<Child> children;
  std::vector<pollfd> watched;
  for (;;) {
    watched.assign(1, {requests, POLLIN, 0});
    for (const Child& c : children) watched.push_back({c.pidfd, POLLIN, 0});
    if (poll(watched.data(), watched.size(), -1) < 0) continue;  // EINTR
    for (size_t i = watched.size() - 1; i > 0; i--) {
      if (!watched[i].revents) continue;
      Reap(children[i - 1]);
      children.erase(children.begin() + static_cast<long>(i - 1));
    }
    if (!watched[0].revents) continue;
    std::vector<std::string> fields;
    std::vector<int> fds;
    int rc = Receive(requests, fields, fds);
    if (rc == ECONNRESET || rc == EBADF || rc == ENOTSOCK) return 0;  // the Node process is gone
    if (rc != 0 || fields.empty() || fds.empty()) {
      for (int fd : fds) close(fd);
      continue;
    }
    Serve(fields, fds, children);
  }
}
