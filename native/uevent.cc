#include "uevent.h"

#include <linux/netlink.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

namespace lxq {

namespace {

struct UeventWatch {
  uv_poll_t poll;
  int fd;
  bool closed = false;
  napi_env env;
  Napi::FunctionReference callback;
  Napi::AsyncContext context;
  std::shared_ptr<UeventWatch*> self;
  UeventWatch(Napi::Env e, int s, Napi::Function cb)
      : fd(s), env(e), callback(Napi::Persistent(cb)), context(e, "lxq:watchUevents"), self(std::make_shared<UeventWatch*>(this)) {}
};

void Close(UeventWatch* w) {
  if (w->closed) return;
  w->closed = true;
  *w->self = nullptr;
  uv_poll_stop(&w->poll);
  uv_close(reinterpret_cast<uv_handle_t*>(&w->poll), [](uv_handle_t* h) {
    auto* w = static_cast<UeventWatch*>(h->data);
    close(w->fd);
    delete w;
  });
}

void OnReadable(uv_poll_t* handle, int status, int events) {
  auto* w = static_cast<UeventWatch*>(handle->data);
  Napi::Env env(w->env);
  Napi::HandleScope scope(env);
  // A uevent is at most 8 KiB (UEVENT_BUFFER_SIZE 2048 in the kernel, and its env).
  std::vector<char> buf(16384);
  for (int n = 0; n < 64 && !w->closed; n++) {
    sockaddr_nl from{};
    socklen_t len = sizeof from;
    ssize_t got = recvfrom(w->fd, buf.data(), buf.size() - 1, MSG_DONTWAIT, reinterpret_cast<sockaddr*>(&from), &len);
    Napi::Array fields = Napi::Array::New(env);
    if (got < 0) {
      if (errno == EAGAIN || errno == EINTR) return;
      if (errno != ENOBUFS) return;
      // Lost events: an empty array tells the caller to look again.
    } else {
      if (from.nl_pid != 0) continue;  // not the kernel's
      buf[got] = '\0';
      uint32_t k = 0;
      size_t at = strnlen(buf.data(), got) + 1;  // "action@devpath"
      while (at < static_cast<size_t>(got)) {
        size_t l = strnlen(buf.data() + at, got - at);
        if (l) fields.Set(k++, Napi::String::New(env, buf.data() + at, l));
        at += l + 1;
      }
      if (k == 0) continue;
    }
    w->callback.Value().MakeCallback(env.Global(), {fields}, w->context);
  }
}

}  // namespace

Napi::Value WatchUevents(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsFunction()) throw Napi::TypeError::New(env, "watchUevents(onEvent)");
  auto fail = [&](const char* what, int err) {
    Napi::Error e = Napi::Error::New(env, std::string(what) + ": " + strerror(err));
    e.Set("errno", Napi::Number::New(env, err));
    e.Set("code", Napi::String::New(env, strerrorname_np(err) ? strerrorname_np(err) : "EIO"));
    return e;
  };
  int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC | SOCK_NONBLOCK, NETLINK_KOBJECT_UEVENT);
  if (fd < 0) throw fail("socket(NETLINK_KOBJECT_UEVENT)", errno);
  // A burst (many devices at once) should not overrun the default buffer; as root the limit is waived.
  int size = 4 << 20;
  if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof size) != 0) setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
  sockaddr_nl addr{};
  addr.nl_family = AF_NETLINK;
  addr.nl_groups = 1;  // the kernel's group (udevd's rebroadcasts are group 2)
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    int err = errno;
    close(fd);
    throw fail("bind(NETLINK_KOBJECT_UEVENT)", err);
  }
  uv_loop_t* loop = nullptr;
  napi_get_uv_event_loop(env, &loop);
  auto* w = new UeventWatch(env, fd, info[0].As<Napi::Function>());
  w->poll.data = w;
  int rc = uv_poll_init(loop, &w->poll, fd);
  if (rc != 0) {
    close(fd);
    delete w;
  } else if ((rc = uv_poll_start(&w->poll, UV_READABLE, OnReadable)) != 0) {
    Close(w);
  }
  if (rc != 0) throw Napi::Error::New(env, std::string("cannot watch uevents: ") + uv_strerror(rc));
  std::shared_ptr<UeventWatch*> self = w->self;
  return Napi::Function::New(env, [self](const Napi::CallbackInfo&) {
    if (*self) Close(*self);
  }, "cancel");
}

}  // namespace lxq
