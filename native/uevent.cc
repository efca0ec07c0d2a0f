#include "uevent.h"

#include "fdwatch.h"

#include <linux/netlink.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <vector>

namespace lxq {

namespace {

void OnReadable(Napi::Env env, FdWatch* w) {
  // A uevent is at most 8 KiB (UEVENT_BUFFER_SIZE 2048 in the kernel, and its env).
  std::vector<char> buf(16384);
  for (int n = 0; n < 64 && !FdWatchClosed(w); n++) {
    sockaddr_nl from{};
    socklen_t len = sizeof from;
    ssize_t got = recvfrom(WatchedFd(w), buf.data(), buf.size() - 1, MSG_DONTWAIT, reinterpret_cast<sockaddr*>(&from), &len);
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
    CallFdWatch(w, {fields});
  }
}

}  // namespace

Napi::Value WatchUevents(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsFunction()) throw Napi::TypeError::New(env, "watchUevents(onEvent)");
  int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC | SOCK_NONBLOCK, NETLINK_KOBJECT_UEVENT);
  if (fd < 0) throw ErrnoError(env, "socket(NETLINK_KOBJECT_UEVENT)", errno);
  // A burst (many devices at once) should not overrun the default buffer; as root the limit is waived.
  int size = 4 << 20;
  if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof size) != 0) setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
  sockaddr_nl addr{};
  addr.nl_family = AF_NETLINK;
  addr.nl_groups = 1;  // the kernel's group (udevd's rebroadcasts are group 2)
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    int err = errno;
    close(fd);
    throw ErrnoError(env, "bind(NETLINK_KOBJECT_UEVENT)", err);
  }
  return WatchFd(env, fd, info[0].As<Napi::Function>(), "lxq:watchUevents", OnReadable, true, "uevents");
}

}  // namespace lxq
