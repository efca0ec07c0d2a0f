// lxq-agent: runs commands inside a VM for the host, over one virtio-serial port, with lxq's own
// framed and multiplexed protocol (PROTOCOL.md beside this file).
//
// One poll loop, no threads: the port, a signalfd (children's exits; SIGIO when the host
// connects) and each command's pipes or terminal. Nothing in here grows with what the other side
// sends: frames are bounded (kMaxPayload), each stream has a window of unacknowledged bytes, and
// the port is not read while the frames for the host pile up past kMaxOutput.
// Built static (no runtime in the guest): the image builder compiles it from this directory.
//
//   lxq-agent [--port NAME|PATH]  serve the virtio-serial port of that name (default org.lxq.agent.0)
//                                 or that device
//   lxq-agent --listen PATH       serve a unix socket, one client at a time (tests on the host)
//   --root DIR                    resolve the paths of file operations inside DIR (default /)
// In a guest (the port), it first grows the root filesystem to its disk (grow.h).
#include <dirent.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include <algorithm>
#include <cstdarg>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <map>
#include <string>
#include <vector>

#include "files.h"
#include "grow.h"
#include "identity.h"
#include "protocol.h"

extern char** environ;

namespace {

using namespace lxq::agent;

constexpr const char* kDefaultPort = "org.lxq.agent.0";
// Frames for the host held at most (roughly): past it neither the port nor any output is read
// until the host takes some.
constexpr size_t kMaxOutput = 4 * 1024 * 1024;
// How often a port whose host is away is tried again when no SIGIO says it came back.
constexpr int kHostAwayRetryMs = 1000;

void Log(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
void Log(const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fputs("lxq-agent: ", stderr);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
}

void SetNonBlocking(int fd) { fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK); }

// A command's process must not inherit the agent's signal state (SIGCHLD and SIGIO blocked for
// the signalfd, SIGPIPE ignored). The kernel call, because glibc refuses its own internal signals.
void ResetSignals() {
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

// The last words of a command that could not be run, on its own stderr, as a shell says them.
[[noreturn]] void ChildFail(int code, const char* what, const char* arg, int err) {
  dprintf(2, "lxq: %s %s: %s\n", what, arg, strerror(err));
  _exit(code);
}

struct ExecRequest {
  bool pty = false;
  uint32_t uid = 0, gid = 0;
  uint16_t cols = 80, rows = 24;
  std::string cwd;
  std::vector<std::string> argv, env;
};

// Parses an EXEC payload; false if it is malformed.
bool ParseExec(const unsigned char* p, size_t n, ExecRequest& r) {
  if (n < 24) return false;
  uint32_t flags = GetU32(p);
  if (flags & ~1U) return false;
  r.pty = flags & 1;
  r.uid = GetU32(p + 4);
  r.gid = GetU32(p + 8);
  r.cols = GetU16(p + 12);
  r.rows = GetU16(p + 14);
  uint32_t argc = GetU32(p + 16), envc = GetU32(p + 20);
  if (argc == 0 || argc > n || envc > n) return false;
  std::vector<std::string> strings;
  size_t start = 24;
  for (size_t i = 24; i < n; i++) {
    if (p[i]) continue;
    strings.emplace_back(reinterpret_cast<const char*>(p) + start, i - start);
    start = i + 1;
  }
  if (start != n || strings.size() != 1 + static_cast<size_t>(argc) + envc) return false;
  r.cwd = strings[0];
  r.argv.assign(strings.begin() + 1, strings.begin() + 1 + argc);
  r.env.assign(strings.begin() + 1 + argc, strings.end());
  return !r.argv[0].empty();
}

struct Command {
  uint32_t channel = 0;
  pid_t pid = -1;
  bool pty = false;
  int in = -1;   // its stdin: a pipe, or a dup of the terminal's master
  int out = -1;  // its stdout, or the terminal's master
  int err = -1;  // its stderr (none on a terminal)
  std::string pending_in;  // STDIN bytes not yet written to `in`
  bool in_ended = false;   // the host ended stdin: close `in` once pending_in is written
  uint32_t out_unacked = 0, err_unacked = 0;
  bool exited = false;
};

// A file moving through a channel: read from the guest (`fd`, or `pending` for a listing) to the
// host, or written from the host into a temporary file that replaces `name` in `dir` at its end.
struct Transfer {
  uint32_t channel = 0;
  bool to_host = true;
  int fd = -1;
  int dir = -1;              // a write: the target's directory (O_PATH)
  std::string name, temp;    // a write: the target's name and the temporary one beside it
  uint32_t mode = 0, uid = 0, gid = 0;
  std::string pending;       // a listing: what is left to send
  uint32_t unacked = 0;      // to the host: bytes sent and not yet acknowledged
};

struct Request {
  uint32_t op = 0, mode = 0, uid = 0, gid = 0, flags = 0;
  std::string path, arg;
};

// Parses a REQUEST payload: five u32, then two NUL-terminated strings.
bool ParseRequest(const unsigned char* p, size_t n, Request& r) {
  if (n < 22 || p[n - 1]) return false;
  r.op = GetU32(p), r.mode = GetU32(p + 4), r.uid = GetU32(p + 8), r.gid = GetU32(p + 12), r.flags = GetU32(p + 16);
  const char* s = reinterpret_cast<const char*>(p) + 20;
  size_t first = strnlen(s, n - 20);
  if (first + 1 >= n - 20) return false;
  r.path.assign(s, first);
  r.arg.assign(s + first + 1);
  if (20 + first + 1 + r.arg.size() + 1 != n) return false;
  while (!r.path.empty() && r.path[0] == '/') r.path.erase(0, 1);
  return r.op >= kOpStat && r.op <= kOpIdentity && r.mode <= 07777;
}

class Agent {
 public:
  Agent(int signals, bool virtio) : signals_(signals), virtio_(virtio) {}
  int port() const { return port_; }
  void Attach(int port) {
    port_ = port;
    SetNonBlocking(port_);
    host_away_ = false;
  }
  int Loop(int listener);

 private:
  void Read();
  void Parse();
  bool Handle(uint8_t type, uint32_t channel, const unsigned char* p, size_t n);
  void ProtocolError(const char* message);
  void EndSession();
  void Hello(const unsigned char* p, size_t n);
  void Exec(uint32_t channel, const unsigned char* p, size_t n);
  void Stdin(Command& c, const unsigned char* p, size_t n);
  void WriteInput(Command& c);
  void ReadOutput(Command& c, bool stderr_stream);
  void Reap();
  void MaybeForget(uint32_t channel);
  void Serve(uint32_t channel, const unsigned char* p, size_t n);
  void StartWrite(uint32_t channel, const Request& r);
  void Data(Transfer& t, const unsigned char* p, size_t n);
  void FinishWrite(Transfer& t);
  bool Pump(Transfer& t);
  bool CanPump() const;
  void EndTransfer(uint32_t channel, int err = 0, const std::string& message = {});
  void Flush();
  void HostGone();
  void Send(Type type, uint32_t channel, const std::string& payload = {}) { PutFrame(output_, type, channel, payload); }
  void SendError(uint32_t channel, int err, const std::string& message) {
    std::string payload;
    PutU32(payload, static_cast<uint32_t>(err));
    payload += message;
    Send(kError, channel, payload);
  }
  void Ack(uint32_t channel, Stream stream, uint32_t bytes) {
    std::string payload(4, '\0');
    payload[0] = static_cast<char>(stream);
    PutU32(payload, bytes);
    Send(kAck, channel, payload);
  }

  const int signals_;
  const bool virtio_;
  int port_ = -1;
  bool host_away_ = false;  // virtio: the host's end is closed; wait for SIGIO (or a retry)
  bool in_session_ = false;
  std::string input_;   // read from the port, not yet parsed
  std::string output_;  // frames not yet written to the port
  std::map<uint32_t, Command> commands_;
  std::map<uint32_t, Transfer> transfers_;
};

// Ends a transfer: its fds closed, a write's temporary file removed; an ERROR when `err`.
void Agent::EndTransfer(uint32_t channel, int err, const std::string& message) {
  auto it = transfers_.find(channel);
  if (it == transfers_.end()) return;
  Transfer& t = it->second;
  if (t.fd >= 0) close(t.fd);
  if (!t.temp.empty()) unlinkat(t.dir, t.temp.c_str(), 0);
  if (t.dir >= 0) close(t.dir);
  transfers_.erase(it);
  if (err) SendError(channel, err, message + ": " + strerror(err));
}

// A REQUEST: answered at once (RESULT or ERROR), or the start of a transfer.
void Agent::Serve(uint32_t channel, const unsigned char* p, size_t n) {
  Request r;
  if (!ParseRequest(p, n, r)) return ProtocolError("malformed REQUEST");
  if (channel == 0 || commands_.count(channel) || transfers_.count(channel)) return ProtocolError("REQUEST on channel 0 or on a channel in use");
  std::string out;
  int err = 0;
  switch (r.op) {
    case kOpStat: err = StatPath(r.path, out); break;
    case kOpReadlink: err = ReadlinkPath(r.path, out); break;
    case kOpMkdir: err = MkdirPath(r.path, r.mode, r.uid, r.gid, r.flags & 1); break;
    case kOpRemove: err = RemovePath(r.path, r.flags & 1); break;
    case kOpSymlink: err = SymlinkPath(r.path, r.arg, r.uid, r.gid); break;
    case kOpState: out = GuestState(); break;
    case kOpNic: err = ConfigureNic(r.path, r.arg, r.flags); break;
    case kOpUtimes: err = UtimesPath(r.path, r.arg); break;
    case kOpIdentity: {
      std::string failed;
      if ((err = RenewIdentity(r.arg, failed))) return SendError(channel, err, "identity: " + failed + ": " + strerror(err));
      break;
    }
    case kOpWrite: return StartWrite(channel, r);
    case kOpList:
    case kOpRead: {
      Transfer t;
      t.channel = channel;
      if (r.op == kOpList) {
        err = ListDir(r.path, t.pending);
      } else {
        t.fd = OpenInRoot(r.path, O_RDONLY | O_NOCTTY | O_NONBLOCK);
        struct stat st;
        err = t.fd < 0 ? errno : fstat(t.fd, &st) ? errno : S_ISDIR(st.st_mode) ? EISDIR : 0;
        if (err && t.fd >= 0) close(t.fd);
      }
      if (!err) transfers_[channel] = std::move(t);
      break;
    }
  }
  if (err) return SendError(channel, err, r.path + ": " + strerror(err));
  if (r.op != kOpList && r.op != kOpRead) Send(kResult, channel, out);
}

// A WRITE: a new temporary file beside the target, filled by DATA, renamed over it at the end.
void Agent::StartWrite(uint32_t channel, const Request& r) {
  Transfer t;
  t.channel = channel;
  t.to_host = false;
  t.mode = r.mode, t.uid = r.uid, t.gid = r.gid;
  int err = OpenParent(r.path, t.dir, t.name);
  for (int tries = 0; !err && t.fd < 0 && tries < 100; tries++) {
    char temp[64];
    snprintf(temp, sizeof temp, ".lxq-%08lx%04x.tmp", random(), tries);
    t.fd = openat(t.dir, temp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (t.fd >= 0) t.temp = temp;
    else if (errno != EEXIST) err = errno;
  }
  transfers_[channel] = std::move(t);
  if (err) EndTransfer(channel, err, r.path);
}

void Agent::Data(Transfer& t, const unsigned char* p, size_t n) {
  if (n == 0) return FinishWrite(t);
  for (size_t done = 0; done < n;) {
    ssize_t w = write(t.fd, p + done, n - done);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) return EndTransfer(t.channel, errno, "write");
    done += static_cast<size_t>(w);
  }
  Ack(t.channel, kStreamStdin, static_cast<uint32_t>(n));
}

void Agent::FinishWrite(Transfer& t) {
  uint32_t channel = t.channel;
  // Owner first: chown clears the set-id bits the mode may carry.
  if (fchown(t.fd, t.uid, t.gid)) return EndTransfer(channel, errno, "chown");
  if (fchmod(t.fd, t.mode)) return EndTransfer(channel, errno, "chmod");
  if (fsync(t.fd)) return EndTransfer(channel, errno, "fsync");
  if (renameat(t.dir, t.temp.c_str(), t.dir, t.name.c_str())) return EndTransfer(channel, errno, "rename");
  t.temp.clear();
  EndTransfer(channel);
  Send(kResult, channel);
}

// Sends what the window allows of a transfer to the host; false once it has ended.
bool Agent::Pump(Transfer& t) {
  size_t room = std::min<size_t>(kMaxData, kWindow - t.unacked);
  if (room == 0) return true;
  char buf[kMaxData];
  ssize_t n;
  if (t.fd >= 0) {
    n = read(t.fd, buf, room);
    if (n < 0 && errno == EINTR) return true;
    if (n < 0) return EndTransfer(t.channel, errno, "read"), false;
  } else {
    n = static_cast<ssize_t>(std::min(room, t.pending.size()));
    memcpy(buf, t.pending.data(), static_cast<size_t>(n));
    t.pending.erase(0, static_cast<size_t>(n));
  }
  if (n == 0) {
    uint32_t channel = t.channel;
    EndTransfer(channel);
    Send(kData, channel);  // the end
    return false;
  }
  t.unacked += static_cast<uint32_t>(n);
  PutFrame(output_, kData, t.channel, buf, static_cast<size_t>(n));
  return true;
}

// Whether some transfer to the host may send now (poll must not wait then).
bool Agent::CanPump() const {
  if (output_.size() >= kMaxOutput) return false;
  for (auto& [channel, t] : transfers_)
    if (t.to_host && t.unacked < kWindow) return true;
  return false;
}

void Agent::EndSession() {
  for (auto& [channel, c] : commands_) {
    // Its whole process group (it is a session leader), and itself: a command killed right after
    // the fork may not have called setsid yet, and then has no group of its own.
    kill(-c.pid, SIGKILL);
    kill(c.pid, SIGKILL);
    for (int fd : {c.in, c.out, c.err})
      if (fd >= 0) close(fd);
  }
  commands_.clear();  // their exits are reaped and ignored
  while (!transfers_.empty()) EndTransfer(transfers_.begin()->first);
  in_session_ = false;
}

void Agent::ProtocolError(const char* message) {
  Log("protocol error: %s; session ended", message);
  SendError(0, EPROTO, message);
  EndSession();
}

// The host's end went away: its commands go with it, and what was meant for it is dropped.
void Agent::HostGone() {
  EndSession();
  input_.clear();
  output_.clear();
  if (virtio_) {
    host_away_ = true;
  } else {
    close(port_);
    port_ = -1;
  }
}

void Agent::Hello(const unsigned char* p, size_t n) {
  if (n != kHostHelloSize || memcmp(p, kMagic, sizeof kMagic) != 0) return ProtocolError("malformed HELLO");
  EndSession();
  uint16_t lowest = GetU16(p + 8), highest = GetU16(p + 10);
  uint16_t chosen = lowest <= kVersion && kVersion <= highest ? kVersion : 0;
  std::string payload(kMagic, sizeof kMagic);
  PutU16(payload, chosen);
  PutU16(payload, 0);
  PutU32(payload, kMaxPayload);
  PutU32(payload, kWindow);
  payload.append(reinterpret_cast<const char*>(p + 16), 8);  // the host's nonce
  Send(kHello, 0, payload);
  in_session_ = chosen != 0;
  if (!chosen) Log("the host speaks versions %u-%u, this agent %u", lowest, highest, kVersion);
}

void Agent::Exec(uint32_t channel, const unsigned char* p, size_t n) {
  ExecRequest r;
  if (!ParseExec(p, n, r)) return ProtocolError("malformed EXEC");
  if (channel == 0 || commands_.count(channel) || transfers_.count(channel)) return ProtocolError("EXEC on channel 0 or on a channel in use");
  Command c;
  c.channel = channel;
  c.pty = r.pty;
  int child_in = -1, child_out = -1, child_err = -1;
  std::string terminal;
  auto fail = [&](const char* what) {
    int err = errno;
    for (int fd : {c.in, c.out, c.err, child_in, child_out, child_err})
      if (fd >= 0) close(fd);
    SendError(channel, err, std::string(what) + ": " + strerror(err));
  };
  if (r.pty) {
    c.out = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (c.out < 0) return fail("posix_openpt");
    char name[128];
    if (grantpt(c.out) || unlockpt(c.out) || ptsname_r(c.out, name, sizeof name)) return fail("a terminal");
    terminal = name;
    struct winsize ws = {};
    ws.ws_col = r.cols;
    ws.ws_row = r.rows;
    ioctl(c.out, TIOCSWINSZ, &ws);
    c.in = fcntl(c.out, F_DUPFD_CLOEXEC, 3);
    if (c.in < 0) return fail("dup");
  } else {
    int in[2], out[2], err[2];
    if (pipe2(in, O_CLOEXEC)) return fail("pipe");
    child_in = in[0], c.in = in[1];
    if (pipe2(out, O_CLOEXEC)) return fail("pipe");
    c.out = out[0], child_out = out[1];
    if (pipe2(err, O_CLOEXEC)) return fail("pipe");
    c.err = err[0], child_err = err[1];
  }
  std::vector<char*> argv, env;
  for (auto& a : r.argv) argv.push_back(a.data());
  argv.push_back(nullptr);
  const char* home = nullptr;
  for (auto& e : r.env) {
    env.push_back(e.data());
    if (e.compare(0, 5, "HOME=") == 0) home = e.c_str() + 5;
  }
  env.push_back(nullptr);

  pid_t pid = fork();
  if (pid < 0) return fail("fork");
  if (pid == 0) {
    ResetSignals();
    setsid();
    if (r.pty) {
      int slave = open(terminal.c_str(), O_RDWR);  // a session leader's first terminal: its controlling one
      if (slave < 0) _exit(126);
      ioctl(slave, TIOCSCTTY, 0);
      dup2(slave, 0), dup2(slave, 1), dup2(slave, 2);
    } else {
      dup2(child_in, 0), dup2(child_out, 1), dup2(child_err, 2);
    }
    syscall(SYS_close_range, 3U, ~0U, 0U);
    gid_t gid = r.gid;
    if (setgroups(1, &gid) || setgid(gid)) ChildFail(126, "cannot switch to group", std::to_string(r.gid).c_str(), errno);
    if (setuid(r.uid)) ChildFail(126, "cannot switch to user", std::to_string(r.uid).c_str(), errno);
    const char* dir = !r.cwd.empty() ? r.cwd.c_str() : home;
    if (dir && chdir(dir) != 0) {
      if (!r.cwd.empty()) ChildFail(126, "cannot change to directory", dir, errno);
      if (chdir("/") != 0) _exit(126);  // no home: / as login(1) does
    } else if (!dir && chdir("/") != 0) {
      _exit(126);
    }
    environ = env.data();  // execvp looks the program up in the command's PATH
    execvp(argv[0], argv.data());
    int err = errno;
    ChildFail(err == ENOENT ? 127 : 126, "cannot run", argv[0], err);
  }
  for (int fd : {child_in, child_out, child_err})
    if (fd >= 0) close(fd);
  c.pid = pid;
  for (int fd : {c.in, c.out, c.err})
    if (fd >= 0) SetNonBlocking(fd);
  commands_[channel] = std::move(c);
  std::string payload;
  PutU32(payload, static_cast<uint32_t>(pid));
  Send(kStarted, channel, payload);
}

void Agent::Stdin(Command& c, const unsigned char* p, size_t n) {
  if (n == 0) {
    c.in_ended = true;
  } else if (c.in < 0) {
    Ack(c.channel, kStreamStdin, static_cast<uint32_t>(n));  // nobody reads it any more: dropped
    return;
  } else {
    c.pending_in.append(reinterpret_cast<const char*>(p), n);
  }
  WriteInput(c);
}

void Agent::WriteInput(Command& c) {
  if (c.in < 0) return;
  if (!c.pending_in.empty()) {
    ssize_t n = write(c.in, c.pending_in.data(), c.pending_in.size());
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
    // EPIPE: the command closed its stdin; what it did not read is dropped, as for a pipe.
    size_t done = n < 0 ? c.pending_in.size() : static_cast<size_t>(n);
    Ack(c.channel, kStreamStdin, static_cast<uint32_t>(done));
    c.pending_in.erase(0, done);
    if (n < 0) {
      close(c.in);
      c.in = -1;
      return;
    }
  }
  if (c.pending_in.empty() && c.in_ended) {
    close(c.in);  // on a terminal only our dup of the master: the terminal stays
    c.in = -1;
  }
}

void Agent::ReadOutput(Command& c, bool stderr_stream) {
  int& fd = stderr_stream ? c.err : c.out;
  uint32_t& unacked = stderr_stream ? c.err_unacked : c.out_unacked;
  char buf[kMaxData];
  size_t room = std::min<size_t>(kMaxData, kWindow - unacked);
  if (room == 0) return;
  ssize_t n = read(fd, buf, room);
  if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
  Type type = stderr_stream ? kStderr : kStdout;
  if (n <= 0) {  // the end (a terminal whose last holder is gone reads EIO)
    close(fd);
    fd = -1;
    if (c.pty && c.in >= 0) close(c.in), c.in = -1;
    Send(type, c.channel);
    return MaybeForget(c.channel);
  }
  unacked += static_cast<uint32_t>(n);
  PutFrame(output_, type, c.channel, buf, static_cast<size_t>(n));
}

void Agent::MaybeForget(uint32_t channel) {
  auto it = commands_.find(channel);
  if (it == commands_.end()) return;
  Command& c = it->second;
  if (!c.exited || c.out >= 0 || c.err >= 0) return;
  if (c.in >= 0) close(c.in);
  commands_.erase(it);
}

void Agent::Reap() {
  for (;;) {
    int status = 0;
    pid_t pid = waitpid(-1, &status, WNOHANG);
    if (pid <= 0) return;
    for (auto& [channel, c] : commands_) {
      if (c.pid != pid) continue;
      c.exited = true;
      std::string payload;
      bool signalled = WIFSIGNALED(status);
      PutU32(payload, signalled ? 0 : static_cast<uint32_t>(WEXITSTATUS(status)));
      PutU32(payload, signalled ? static_cast<uint32_t>(WTERMSIG(status)) : 0);
      payload.push_back(signalled && WCOREDUMP(status) ? 1 : 0);
      payload.append(3, '\0');
      Send(kExit, channel, payload);
      MaybeForget(channel);
      break;
    }
  }
}

// Returns false when the frame was a protocol error (the session has ended).
bool Agent::Handle(uint8_t type, uint32_t channel, const unsigned char* p, size_t n) {
  if (type == kHello) {
    if (channel != 0) return ProtocolError("HELLO on a command's channel"), false;
    Hello(p, n);
    return in_session_;
  }
  if (type == kPing) {
    if (channel != 0 || n > 64) return ProtocolError("malformed PING"), false;
    Send(kPong, 0, std::string(reinterpret_cast<const char*>(p), n));
    return true;
  }
  if (type == kExec) {
    Exec(channel, p, n);
    return in_session_;
  }
  if (type == kRequest) {
    Serve(channel, p, n);
    return in_session_;
  }
  auto tr = transfers_.find(channel);
  if (type == kCancel) {
    if (n != 0) return ProtocolError("malformed CANCEL"), false;
    EndTransfer(channel, tr == transfers_.end() ? 0 : ECANCELED, "cancelled");  // none: its end is on its way
    return true;
  }
  if (type == kData || (type == kAck && tr != transfers_.end())) {
    if (n > (type == kData ? kMaxData : 8)) return ProtocolError("DATA frame over 32 KiB or a malformed ACK"), false;
    if (tr == transfers_.end()) return true;  // a transfer that failed: what was in flight is dropped
    Transfer& t = tr->second;
    if (type == kData) {
      if (t.to_host) return ProtocolError("DATA to a read"), false;
      Data(t, p, n);
    } else {
      if (n != 8 || p[0] != kStreamStdout || !t.to_host || GetU32(p + 4) > t.unacked) return ProtocolError("malformed ACK"), false;
      t.unacked -= GetU32(p + 4);
    }
    return true;
  }
  if (type != kStdin && type != kAck && type != kSignal && type != kResize) return ProtocolError("unknown frame type"), false;
  auto it = commands_.find(channel);
  // A command already forgotten (it ended while the host was still writing to it): dropped.
  Command* c = it == commands_.end() ? nullptr : &it->second;
  if (type == kStdin) {
    if (n > kMaxData) return ProtocolError("STDIN frame over 32 KiB"), false;
    if (c && c->pending_in.size() + n > kWindow) return ProtocolError("stdin window exceeded"), false;
    if (c) Stdin(*c, p, n);
  } else if (type == kAck) {
    if (n != 8 || (p[0] != kStreamStdout && p[0] != kStreamStderr)) return ProtocolError("malformed ACK"), false;
    if (!c) return true;
    uint32_t& unacked = p[0] == kStreamStdout ? c->out_unacked : c->err_unacked;
    if (GetU32(p + 4) > unacked) return ProtocolError("ACK of more than was sent"), false;
    unacked -= GetU32(p + 4);
  } else if (type == kSignal) {
    if (n != 4 || GetU32(p) < 1 || GetU32(p) > 64) return ProtocolError("malformed SIGNAL"), false;
    if (c && !c->exited) kill(c->pid, static_cast<int>(GetU32(p)));
  } else {
    if (n != 4) return ProtocolError("malformed RESIZE"), false;
    if (c && c->pty && c->out >= 0) {
      struct winsize ws = {};
      ws.ws_col = GetU16(p);
      ws.ws_row = GetU16(p + 2);
      ioctl(c->out, TIOCSWINSZ, &ws);
    }
  }
  return true;
}

// The 20 bytes a host HELLO begins with: its header, then the magic.
std::string HelloPrefix() {
  std::string prefix;
  PutFrame(prefix, kHello, 0, nullptr, 0);
  prefix[3] = static_cast<char>(kHostHelloSize);
  return prefix + std::string(kMagic, sizeof kMagic);
}

void Agent::Parse() {
  static const std::string prefix = HelloPrefix();
  size_t pos = 0;
  while (pos < input_.size()) {
    if (!in_session_) {
      // Out of session: everything up to a host HELLO is left over from before, and dropped.
      size_t found = input_.find(prefix, pos);
      if (found == std::string::npos) {
        pos = std::max(pos, input_.size() - std::min(input_.size(), prefix.size() - 1));
        break;
      }
      pos = found;
    }
    if (input_.size() - pos < kHeaderSize) break;
    const auto* h = reinterpret_cast<const unsigned char*>(input_.data() + pos);
    uint32_t length = GetU32(h), channel = GetU32(h + 4);
    if (length > kMaxPayload || h[9] || h[10] || h[11]) {
      ProtocolError(length > kMaxPayload ? "frame over the maximum size" : "non-zero reserved bytes");
      pos++;  // then look for the next HELLO
      continue;
    }
    if (input_.size() - pos < kHeaderSize + length) break;
    bool ok = Handle(h[8], channel, h + kHeaderSize, length);
    pos = ok || in_session_ ? pos + kHeaderSize + length : pos + 1;
  }
  input_.erase(0, pos);
}

void Agent::Read() {
  char buf[64 * 1024];
  ssize_t n = read(port_, buf, sizeof buf);
  if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
  if (n <= 0) return HostGone();
  input_.append(buf, static_cast<size_t>(n));
  Parse();
}

void Agent::Flush() {
  while (!output_.empty()) {
    ssize_t n = write(port_, output_.data(), output_.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) return;
    if (n < 0) return HostGone();
    output_.erase(0, static_cast<size_t>(n));
  }
}

int Agent::Loop(int listener) {
  // What each pollfd after the first two stands for: a command's channel and which of its fds.
  struct Watched {
    uint32_t channel;
    int which;  // 0 stdin, 1 stdout, 2 stderr
  };
  std::vector<pollfd> fds;
  std::vector<Watched> watched;
  for (;;) {
    fds.clear();
    watched.clear();
    fds.push_back({signals_, POLLIN, 0});
    bool port_live = port_ >= 0 && !host_away_;
    short port_events = 0;
    if (port_live) port_events = static_cast<short>((output_.size() < kMaxOutput ? POLLIN : 0) | (output_.empty() ? 0 : POLLOUT));
    // No port: wait for a host on the listener instead (test mode).
    fds.push_back({port_live ? port_ : (port_ < 0 ? listener : -1), static_cast<short>(port_live ? port_events : POLLIN), 0});
    for (auto& [channel, c] : commands_) {
      if (c.in >= 0 && !c.pending_in.empty()) fds.push_back({c.in, POLLOUT, 0}), watched.push_back({channel, 0});
      bool room = output_.size() < kMaxOutput;
      if (c.out >= 0 && room && c.out_unacked < kWindow) fds.push_back({c.out, POLLIN, 0}), watched.push_back({channel, 1});
      if (c.err >= 0 && room && c.err_unacked < kWindow) fds.push_back({c.err, POLLIN, 0}), watched.push_back({channel, 2});
    }
    int rc = poll(fds.data(), fds.size(), host_away_ ? kHostAwayRetryMs : CanPump() ? 0 : -1);
    if (rc < 0) continue;  // EINTR
    if (rc == 0 && host_away_) host_away_ = false;
    if (fds[0].revents) {
      signalfd_siginfo info;
      while (read(signals_, &info, sizeof info) == sizeof info) {
        if (info.ssi_signo == SIGIO) host_away_ = false;  // the host may be back: poll the port again
      }
      Reap();
    }
    for (size_t i = 0; i < watched.size(); i++) {
      if (!fds[i + 2].revents) continue;
      auto it = commands_.find(watched[i].channel);
      if (it == commands_.end()) continue;
      if (watched[i].which == 0) WriteInput(it->second);
      else ReadOutput(it->second, watched[i].which == 2);
    }
    short port_revents = fds[1].revents;
    if (port_revents && fds[1].fd == listener) {
      int conn = accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
      if (conn >= 0) Attach(conn);
    } else if (port_revents && port_live) {
      if (port_revents & (POLLIN | POLLHUP | POLLERR)) Read();
    }
    if (port_ >= 0 && !host_away_ && in_session_) {
      for (auto it = transfers_.begin(); it != transfers_.end() && output_.size() < kMaxOutput;) {
        auto next = std::next(it);
        if (it->second.to_host) Pump(it->second);
        it = next;
      }
    }
    if (port_ >= 0 && !host_away_) Flush();
  }
}

// The device of the virtio-serial port named `name`, from sysfs: /dev/virtio-ports/<name> is a
// link udev makes, and this agent starts before udev (or where there is none).
std::string PortDevice(const std::string& name) {
  DIR* dir = opendir("/sys/class/virtio-ports");
  if (!dir) return {};
  std::string found;
  while (dirent* e = readdir(dir)) {
    if (e->d_name[0] == '.') continue;
    std::string file = std::string("/sys/class/virtio-ports/") + e->d_name + "/name";
    int fd = open(file.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) continue;
    char buf[256];
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) continue;
    while (n > 0 && buf[n - 1] == '\n') n--;
    if (std::string(buf, static_cast<size_t>(n)) == name) {
      found = std::string("/dev/") + e->d_name;
      break;
    }
  }
  closedir(dir);
  return found;
}

// `port`: a path, or the name of a virtio-serial port.
int OpenPort(const char* port) {
  // The port appears when its driver has probed it (and its name a moment later), which may be
  // after this program starts.
  for (int tries = 0;; tries++) {
    std::string path = port;
    if (port[0] != '/') {
      path = std::string("/dev/virtio-ports/") + port;
      if (access(path.c_str(), F_OK) != 0) path = PortDevice(port);
    }
    int fd = path.empty() ? (errno = ENOENT, -1) : open(path.c_str(), O_RDWR | O_NONBLOCK | O_CLOEXEC);
    if (fd >= 0) {
      // SIGIO when the host connects: a port whose host is away polls POLLHUP, so it is not
      // watched then (that would spin) and this signal says when to watch it again.
      fcntl(fd, F_SETOWN, getpid());
      fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_ASYNC);
      return fd;
    }
    if (errno != ENOENT && errno != ENXIO && errno != ENODEV) return -1;
    if (tries == 100) Log("still waiting for the port %s", port);  // 5 s: worth a line on the console
    usleep(50 * 1000);
  }
}

int Listen(const char* path) {
  sockaddr_un addr = {};
  addr.sun_family = AF_UNIX;
  if (strlen(path) >= sizeof addr.sun_path) return errno = ENAMETOOLONG, -1;
  strcpy(addr.sun_path, path);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  unlink(path);
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) || listen(fd, 4)) return -1;
  return fd;
}

}  // namespace

int main(int argc, char** argv) {
  const char* port_path = kDefaultPort;
  const char* listen_path = nullptr;
  const char* root = "/";
  for (int i = 1; i < argc; i++) {
    std::string a = argv[i];
    if (a == "--port" && i + 1 < argc) port_path = argv[++i];
    else if (a == "--listen" && i + 1 < argc) listen_path = argv[++i];
    else if (a == "--root" && i + 1 < argc) root = argv[++i];
    else if (a == "--version") return printf("lxq-agent protocol %u\n", kVersion), 0;
    else return fprintf(stderr, "usage: lxq-agent [--port NAME|PATH | --listen PATH] [--root DIR]\n"), 2;
  }
  // 0-2 open whatever started us, so that no pipe or port ever lands on them.
  for (int fd = open("/dev/null", O_RDWR); fd >= 0 && fd <= 2; fd = open("/dev/null", O_RDWR)) {
  }
  syscall(SYS_close_range, 3U, ~0U, 0U);
  signal(SIGPIPE, SIG_IGN);  // a command that closed its stdin is EPIPE, not our end
  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGCHLD);
  sigaddset(&mask, SIGIO);
  sigprocmask(SIG_BLOCK, &mask, nullptr);
  srandom(static_cast<unsigned>(getpid() ^ time(nullptr)));
  RootFd() = open(root, O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (RootFd() < 0) return Log("cannot open %s: %s", root, strerror(errno)), 1;
  int signals = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
  if (signals < 0) return Log("signalfd: %s", strerror(errno)), 1;

  if (listen_path) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);  // a test's agent ends with the test
    int listener = Listen(listen_path);
    if (listener < 0) return Log("cannot listen on %s: %s", listen_path, strerror(errno)), 1;
    Agent agent(signals, false);
    return agent.Loop(listener);
  }
  // In the guest (not --listen on a host): a root disk made or grown larger than its filesystem.
  if (strcmp(root, "/") == 0) GrowRoot(Log);
  int port = OpenPort(port_path);
  if (port < 0) return Log("cannot open %s: %s", port_path, strerror(errno)), 1;
  Agent agent(signals, true);
  agent.Attach(port);
  return agent.Loop(-1);
}
