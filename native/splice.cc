#include "splice.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <string>
#include <thread>

namespace lxq {

namespace {

// Bytes a direction's pipe may hold (F_SETPIPE_SZ, up to the host's pipe-max-size): larger pipes
// mean fewer wake-ups per MiB.
constexpr int kPipeBytes = 1 << 20;

// One direction: src → pipe → dst.
struct Direction {
  int src, dst;
  int pipe[2] = {-1, -1};
  size_t capacity = 0;
  size_t held = 0;        // bytes in the pipe
  bool eof = false;       // src has ended
  bool done = false;      // eof and everything passed on, dst shut for writing
  bool wantIn = false;    // waits for src to be readable
  bool wantOut = false;   // waits for dst to be writable
};

// Moves what it can without blocking; false with the error text on a failure.
bool Step(Direction& d, std::string& error) {
  for (;;) {
    d.wantIn = d.wantOut = false;
    bool moved = false;
    if (d.held > 0) {
      ssize_t n = splice(d.pipe[0], nullptr, d.dst, nullptr, d.held, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
      if (n > 0) {
        d.held -= static_cast<size_t>(n);
        moved = true;
      } else if (n < 0 && errno == EAGAIN) {
        d.wantOut = true;
      } else if (n < 0 && errno == EINTR) {
        continue;
      } else {
        error = std::string("write: ") + strerror(n < 0 ? errno : EIO);
        return false;
      }
    }
    if (!d.eof && d.held < d.capacity) {
      ssize_t n = splice(d.src, nullptr, d.pipe[1], nullptr, d.capacity - d.held, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
      if (n > 0) {
        d.held += static_cast<size_t>(n);
        moved = true;
      } else if (n == 0) {
        d.eof = true;
        moved = true;
      } else if (errno == EAGAIN) {
        // With bytes held the pipe may be full (it counts pages, not bytes): dst's POLLOUT wakes us.
        if (d.held == 0) d.wantIn = true;
      } else if (errno != EINTR) {
        error = std::string("read: ") + strerror(errno);
        return false;
      }
    }
    if (d.eof && d.held == 0) {
      shutdown(d.dst, SHUT_WR);  // the peer may already be gone: nothing to pass on then
      d.done = true;
      return true;
    }
    if (!moved) return true;
  }
}

bool WriteAll(int fd, const std::string& head, int cancel, std::string& error) {
  size_t at = 0;
  while (at < head.size()) {
    ssize_t n = send(fd, head.data() + at, head.size() - at, MSG_NOSIGNAL);
    if (n > 0) {
      at += static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno != EAGAIN) {
      error = std::string("write: ") + strerror(errno);
      return false;
    }
    struct pollfd p[2] = {{fd, POLLOUT, 0}, {cancel, POLLIN, 0}};
    if (poll(p, 2, -1) < 0 && errno != EINTR) return false;
    if (p[1].revents) return false;
  }
  return true;
}

struct Link {
  int a, b, cancel;
  std::string head;
  Napi::ThreadSafeFunction onEnd;
};

void Run(std::unique_ptr<Link> link) {
  std::string error;
  Direction ab{link->a, link->b}, ba{link->b, link->a};
  bool ok = true;
  for (Direction* d : {&ab, &ba}) {
    if (pipe2(d->pipe, O_CLOEXEC | O_NONBLOCK) < 0) {
      error = std::string("pipe: ") + strerror(errno);
      ok = false;
      break;
    }
    int size = fcntl(d->pipe[1], F_SETPIPE_SZ, kPipeBytes);
    if (size < 0) size = fcntl(d->pipe[1], F_GETPIPE_SZ);
    d->capacity = static_cast<size_t>(size > 0 ? size : 65536);
  }
  if (ok && !link->head.empty()) ok = WriteAll(link->b, link->head, link->cancel, error);
  while (ok && !(ab.done && ba.done)) {
    if (!ab.done && !(ok = Step(ab, error))) break;
    if (!ba.done && !(ok = Step(ba, error))) break;
    if (ab.done && ba.done) break;
    // Each fd once, with what its directions wait for; one not waited on is left out (-1), so its
    // POLLHUP cannot wake us for nothing.
    short ea = static_cast<short>((ab.wantIn ? POLLIN : 0) | (ba.wantOut ? POLLOUT : 0));
    short eb = static_cast<short>((ba.wantIn ? POLLIN : 0) | (ab.wantOut ? POLLOUT : 0));
    struct pollfd p[3] = {{ea ? link->a : -1, ea, 0}, {eb ? link->b : -1, eb, 0}, {link->cancel, POLLIN, 0}};
    if (poll(p, 3, -1) < 0 && errno != EINTR) {
      error = std::string("poll: ") + strerror(errno);
      ok = false;
    } else if (p[2].revents) {
      ok = false;  // cancelled: no error to report
    }
  }
  for (Direction* d : {&ab, &ba}) {
    if (d->pipe[0] >= 0) close(d->pipe[0]);
    if (d->pipe[1] >= 0) close(d->pipe[1]);
  }
  close(link->a);
  close(link->b);
  auto* text = new std::string(error);
  link->onEnd.BlockingCall(text, [](Napi::Env env, Napi::Function cb, std::string* text) {
    std::string t = *text;
    delete text;
    cb.Call({Napi::String::New(env, t)});
  });
  link->onEnd.Release();
}

// The eventfd the cancel function writes to; closed by whichever of the thread and the cancel
// function lets go of it last.
struct Cancel {
  int fd;
  explicit Cancel(int f) : fd(f) {}
  ~Cancel() { close(fd); }
};

}  // namespace

Napi::Value SpliceStreams(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 4 || !info[0].IsNumber() || !info[1].IsNumber() || !info[2].IsBuffer() || !info[3].IsFunction()) {
    throw Napi::TypeError::New(env, "spliceStreams(a, b, head, onEnd)");
  }
  auto head = info[2].As<Napi::Buffer<char>>();
  int a = fcntl(info[0].As<Napi::Number>().Int32Value(), F_DUPFD_CLOEXEC, 0);
  int b = a < 0 ? -1 : fcntl(info[1].As<Napi::Number>().Int32Value(), F_DUPFD_CLOEXEC, 0);
  int ev = b < 0 ? -1 : eventfd(0, EFD_CLOEXEC);
  if (ev < 0) {
    int err = errno;
    if (a >= 0) close(a);
    if (b >= 0) close(b);
    throw Napi::Error::New(env, std::string("spliceStreams: ") + strerror(err));
  }
  for (int fd : {a, b}) fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
  auto cancel = std::make_shared<Cancel>(ev);
  auto link = std::make_unique<Link>(Link{a, b, ev, std::string(head.Data(), head.Length()),
                                          Napi::ThreadSafeFunction::New(env, info[3].As<Napi::Function>(), "lxq:spliceStreams", 0, 1)});
  std::thread([link = std::move(link), cancel]() mutable { Run(std::move(link)); }).detach();
  return Napi::Function::New(env, [cancel](const Napi::CallbackInfo&) {
    uint64_t one = 1;
    ssize_t n = write(cancel->fd, &one, sizeof one);
    (void)n;
  }, "cancel");
}

}  // namespace lxq
