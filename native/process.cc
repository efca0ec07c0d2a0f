#include "process.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <linux/if_link.h>
#include <linux/if_packet.h>
#include <net/if.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/stat.h>
#include <cstddef>
#include <netinet/in.h>
#include <sched.h>
#include <linux/openat2.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include <uv.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "runner/protocol.h"

namespace lxq {

namespace {

struct Watch {
  uv_poll_t poll;
  int channel;
  int pidfd;
  napi_env env;
  Napi::Promise::Deferred deferred;
  Napi::AsyncContext context;
  Watch(Napi::Env e, int ch, int pfd)
      : channel(ch), pidfd(pfd), env(e), deferred(Napi::Promise::Deferred::New(e)), context(e, "lxq:waitExit") {}
};

void OnExit(uv_poll_t* handle, int status, int events) {
  Watch* w = static_cast<Watch*>(handle->data);
  std::vector<std::string> fields;
  std::vector<int> fds;
  int rc = runner::Receive(w->channel, fields, fds);
  for (int fd : fds) close(fd);
  if (rc == EAGAIN) return;
  uv_poll_stop(handle);
  Napi::Env env(w->env);
  {
    Napi::HandleScope scope(env);
    Napi::CallbackScope callbackScope(env, w->context);  // runs the microtasks the resolution queues
    if (rc == 0 && fields.size() == 3 && fields[0] == "exit") {
      int code = std::atoi(fields[1].c_str()), sig = std::atoi(fields[2].c_str());
      Napi::Object out = Napi::Object::New(env);
      out.Set("code", code < 0 ? env.Null() : Napi::Number::New(env, code));
      out.Set("signal", sig > 0 ? Napi::Number::New(env, sig) : env.Null());
      w->deferred.Resolve(out);
    } else {
      w->deferred.Reject(Napi::Error::New(env, "lxq_runner stopped reporting on this process").Value());
    }
  }
  close(w->channel);
  close(w->pidfd);
  uv_close(reinterpret_cast<uv_handle_t*>(handle), [](uv_handle_t* h) { delete static_cast<Watch*>(h->data); });
}

}  // namespace

Napi::Value WaitExit(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int channel = info[0].ToNumber().Int32Value();
  int pidfd = info[1].ToNumber().Int32Value();
  uv_loop_t* loop = nullptr;
  napi_get_uv_event_loop(env, &loop);
  auto* w = new Watch(env, channel, pidfd);
  Napi::Promise p = w->deferred.Promise();
  w->poll.data = w;
  int rc = uv_poll_init(loop, &w->poll, channel);
  if (rc == 0) rc = uv_poll_start(&w->poll, UV_READABLE | UV_DISCONNECT, OnExit);
  if (rc != 0) {
    w->deferred.Reject(Napi::Error::New(env, std::string("cannot watch process: ") + uv_strerror(rc)).Value());
    delete w;
  }
  return p;
}

Napi::Value SignalPidfd(const Napi::CallbackInfo& info) {
  int fd = info[0].ToNumber().Int32Value();
  int sig = info[1].ToNumber().Int32Value();
  return Napi::Boolean::New(info.Env(), syscall(SYS_pidfd_send_signal, fd, sig, nullptr, 0) == 0);
}

namespace {

class OpenWorker : public Napi::AsyncWorker {
 public:
  OpenWorker(Napi::Env env, std::string root, std::string path, int flags, int mode)
      : Napi::AsyncWorker(env, "lxq:openInRoot"), deferred_(Napi::Promise::Deferred::New(env)), root_(std::move(root)),
        path_(std::move(path)), flags_(flags), mode_(mode) {}
  Napi::Promise Promise() { return deferred_.Promise(); }

  void Execute() override {
    int rootfd = open(root_.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (rootfd < 0) return Fail("open root");
    struct open_how how = {};
    how.flags = static_cast<uint64_t>(flags_) | O_CLOEXEC;
    how.mode = (flags_ & (O_CREAT | O_TMPFILE)) ? static_cast<uint64_t>(mode_) : 0;
    // Absolute symlinks and ".." stay inside root; no /proc magic links out of it.
    how.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS;
    fd_ = static_cast<int>(syscall(SYS_openat2, rootfd, path_.c_str(), &how, sizeof how));
    int err = errno;
    close(rootfd);
    if (fd_ < 0) {
      errno = err;
      Fail("openat2");
    }
  }
  void OnOK() override { deferred_.Resolve(Napi::Number::New(Env(), fd_)); }
  void OnError(const Napi::Error& e) override {
    Napi::Error err = Napi::Error::New(Env(), e.Message());
    err.Set("errno", Napi::Number::New(Env(), err_));
    err.Set("code", Napi::String::New(Env(), code_));
    deferred_.Reject(err.Value());
  }

 private:
  void Fail(const char* what) {
    err_ = errno;
    code_ = strerrorname_np(err_) ? strerrorname_np(err_) : "EIO";
    SetError(std::string(what) + " " + path_ + ": " + strerror(err_));
  }
  Napi::Promise::Deferred deferred_;
  std::string root_, path_;
  int flags_, mode_;
  int fd_ = -1;
  int err_ = 0;
  std::string code_;
};

}  // namespace

Napi::Value OpenInRoot(const Napi::CallbackInfo& info) {
  auto* w = new OpenWorker(info.Env(), info[0].ToString().Utf8Value(), info[1].ToString().Utf8Value(),
                           info[2].ToNumber().Int32Value(), info[3].ToNumber().Int32Value());
  Napi::Promise p = w->Promise();
  w->Queue();
  return p;
}

namespace {

// The interfaces of a network namespace — name, MAC, MTU, addresses with their prefix, and
// counters — read without liblxc's fork of the calling process (get_ips forks, which costs in
// proportion to the Node process's memory: 21 ms at 360 MiB here). A thread of its own joins
// the namespace (setns affects only the calling thread) and ends there; no pool thread moves.
struct Iface {
  std::string name, hwaddr;
  int mtu = 0;
  std::vector<std::tuple<std::string, std::string, int, int>> addrs;  // family, address, prefix, scope id
  uint64_t rxBytes = 0, txBytes = 0, rxPackets = 0, txPackets = 0;
};

int PrefixLength(const struct sockaddr* mask) {
  if (!mask) return 0;
  const unsigned char* b;
  size_t n;
  if (mask->sa_family == AF_INET) {
    b = reinterpret_cast<const unsigned char*>(&reinterpret_cast<const struct sockaddr_in*>(mask)->sin_addr);
    n = 4;
  } else {
    b = reinterpret_cast<const unsigned char*>(&reinterpret_cast<const struct sockaddr_in6*>(mask)->sin6_addr);
    n = 16;
  }
  int bits = 0;
  for (size_t i = 0; i < n; i++) bits += __builtin_popcount(b[i]);
  return bits;
}

class InterfacesWorker : public Napi::AsyncWorker {
 public:
  InterfacesWorker(Napi::Env env, int pid)
      : Napi::AsyncWorker(env, "lxq:netnsInterfaces"), deferred_(Napi::Promise::Deferred::New(env)), pid_(pid) {}
  Napi::Promise Promise() { return deferred_.Promise(); }

  void Execute() override {
    int ns = open(("/proc/" + std::to_string(pid_) + "/ns/net").c_str(), O_RDONLY | O_CLOEXEC);
    if (ns < 0) return SetError(std::string("open network namespace: ") + strerror(errno));
    int err = 0;
    std::thread([&] {
      struct ifaddrs* list = nullptr;
      if (setns(ns, CLONE_NEWNET) != 0 || getifaddrs(&list) != 0) {
        err = errno;
        return;
      }
      int sock = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);  // in the namespace: for the MTUs
      for (struct ifaddrs* i = list; i; i = i->ifa_next) {
        Iface& f = Get(i->ifa_name);
        if (!i->ifa_addr) continue;
        int family = i->ifa_addr->sa_family;
        if (family == AF_PACKET) {
          auto* ll = reinterpret_cast<struct sockaddr_ll*>(i->ifa_addr);
          f.hwaddr.clear();
          for (int k = 0; k < ll->sll_halen && k < 8; k++) {
            char byte[4];
            snprintf(byte, sizeof byte, k ? ":%02x" : "%02x", ll->sll_addr[k]);
            f.hwaddr += byte;
          }
          if (i->ifa_data) {
            auto* st = static_cast<struct rtnl_link_stats*>(i->ifa_data);
            f.rxBytes = st->rx_bytes, f.txBytes = st->tx_bytes, f.rxPackets = st->rx_packets, f.txPackets = st->tx_packets;
          }
          struct ifreq req = {};
          std::strncpy(req.ifr_name, i->ifa_name, IFNAMSIZ - 1);
          if (sock >= 0 && ioctl(sock, SIOCGIFMTU, &req) == 0) f.mtu = req.ifr_mtu;
        } else if (family == AF_INET || family == AF_INET6) {
          char text[INET6_ADDRSTRLEN] = "";
          int scope = 0;
          if (family == AF_INET) {
            inet_ntop(AF_INET, &reinterpret_cast<struct sockaddr_in*>(i->ifa_addr)->sin_addr, text, sizeof text);
          } else {
            auto* a6 = reinterpret_cast<struct sockaddr_in6*>(i->ifa_addr);
            inet_ntop(AF_INET6, &a6->sin6_addr, text, sizeof text);
            scope = static_cast<int>(a6->sin6_scope_id);
          }
          f.addrs.emplace_back(family == AF_INET ? "inet" : "inet6", text, PrefixLength(i->ifa_netmask), scope);
        }
      }
      if (sock >= 0) close(sock);
      freeifaddrs(list);
    }).join();
    close(ns);
    if (err) SetError(std::string("read interfaces: ") + strerror(err));
  }
  void OnOK() override {
    Napi::Env env = Env();
    Napi::Array a = Napi::Array::New(env, out_.size());
    for (size_t i = 0; i < out_.size(); i++) {
      const Iface& f = out_[i];
      Napi::Object o = Napi::Object::New(env);
      o.Set("name", f.name);
      o.Set("hwaddr", f.hwaddr);
      o.Set("mtu", f.mtu);
      Napi::Array addrs = Napi::Array::New(env, f.addrs.size());
      for (size_t k = 0; k < f.addrs.size(); k++) {
        Napi::Object ad = Napi::Object::New(env);
        ad.Set("family", std::get<0>(f.addrs[k]));
        ad.Set("address", std::get<1>(f.addrs[k]));
        ad.Set("prefix", std::get<2>(f.addrs[k]));
        ad.Set("linkLocal", std::get<3>(f.addrs[k]) != 0);
        addrs.Set(static_cast<uint32_t>(k), ad);
      }
      o.Set("addresses", addrs);
      Napi::Object counters = Napi::Object::New(env);
      counters.Set("bytesReceived", static_cast<double>(f.rxBytes));
      counters.Set("bytesSent", static_cast<double>(f.txBytes));
      counters.Set("packetsReceived", static_cast<double>(f.rxPackets));
      counters.Set("packetsSent", static_cast<double>(f.txPackets));
      o.Set("counters", counters);
      a.Set(static_cast<uint32_t>(i), o);
    }
    deferred_.Resolve(a);
  }
  void OnError(const Napi::Error& e) override { deferred_.Reject(Napi::Error::New(Env(), e.Message()).Value()); }

 private:
  Iface& Get(const char* name) {
    for (auto& f : out_) if (f.name == name) return f;
    out_.push_back(Iface{});
    out_.back().name = name;
    return out_.back();
  }
  Napi::Promise::Deferred deferred_;
  int pid_;
  std::vector<Iface> out_;
};

}  // namespace

Napi::Value NetnsInterfaces(const Napi::CallbackInfo& info) {
  auto* w = new InterfacesWorker(info.Env(), info[0].ToNumber().Int32Value());
  Napi::Promise p = w->Promise();
  w->Queue();
  return p;
}

namespace {

// A socket made from inside the network namespace of `pid` (0: this process's own; a thread of
// its own joins it, and a socket keeps the namespace it was made in): what a proxy device
// connects to or listens on. Stream: connected, or bound and listening; datagram: bound when
// listening, else left for libuv to connect. `uid`/`gid` (>= 0, host ids) are taken by that
// thread alone (raw syscalls: glibc's setresuid would change every thread) before the socket is
// made, so a unix socket's permissions and its peer's SO_PEERCRED see them (security.uid/gid);
// `mode`, a listening unix path's, is the thread's own umask (no chmod after: that follows a
// symlink put in its place).
struct SocketSpec {
  int pid = 0;
  bool stream = true, listen = false;
  std::string host, path;  // host: an IP address; path: a unix path ("\0…" abstract)
  int port = 0;
  long uid = -1, gid = -1;
  int mode = -1;  // a listening unix path's mode (umask of this thread alone)
};

class SocketWorker : public Napi::AsyncWorker {
 public:
  SocketWorker(Napi::Env env, SocketSpec spec)
      : Napi::AsyncWorker(env, "lxq:socketInNetns"), deferred_(Napi::Promise::Deferred::New(env)), spec_(std::move(spec)) {}
  Napi::Promise Promise() { return deferred_.Promise(); }

  void Execute() override {
    int ns = -1;
    if (spec_.pid > 0) {
      ns = open(("/proc/" + std::to_string(spec_.pid) + "/ns/net").c_str(), O_RDONLY | O_CLOEXEC);
      if (ns < 0) return Fail("open network namespace", errno);
    }
    std::thread([&] { Make(ns); }).join();
    if (ns >= 0) close(ns);
  }
  void OnOK() override { deferred_.Resolve(Napi::Number::New(Env(), fd_)); }
  void OnError(const Napi::Error& e) override {
    Napi::Error err = Napi::Error::New(Env(), e.Message());
    err.Set("code", Napi::String::New(Env(), strerrorname_np(errno_) ? strerrorname_np(errno_) : "EIO"));
    deferred_.Reject(err.Value());
  }

 private:
  void Make(int ns) {
    if (ns >= 0 && setns(ns, CLONE_NEWNET) != 0) return Fail("enter the network namespace", errno);
    if (spec_.gid >= 0 && (syscall(SYS_setgroups, 0, nullptr) != 0 || syscall(SYS_setresgid, spec_.gid, spec_.gid, spec_.gid) != 0)) {
      return Fail("take gid " + std::to_string(spec_.gid), errno);
    }
    if (spec_.mode >= 0) {
      if (unshare(CLONE_FS) != 0) return Fail("unshare the thread's filesystem context", errno);
      umask(static_cast<mode_t>(~spec_.mode & 0777));
    }
    if (spec_.uid >= 0 && syscall(SYS_setresuid, spec_.uid, spec_.uid, spec_.uid) != 0) return Fail("take uid " + std::to_string(spec_.uid), errno);
    struct sockaddr_storage addr = {};
    socklen_t len;
    auto* a4 = reinterpret_cast<struct sockaddr_in*>(&addr);
    auto* a6 = reinterpret_cast<struct sockaddr_in6*>(&addr);
    auto* un = reinterpret_cast<struct sockaddr_un*>(&addr);
    std::string where;
    if (!spec_.path.empty()) {
      if (spec_.path.size() >= sizeof un->sun_path) return Fail("a unix socket path this long", ENAMETOOLONG);
      un->sun_family = AF_UNIX;
      std::memcpy(un->sun_path, spec_.path.data(), spec_.path.size());
      len = static_cast<socklen_t>(offsetof(struct sockaddr_un, sun_path) + spec_.path.size() + (spec_.path[0] ? 1 : 0));
      where = spec_.path[0] ? spec_.path : "@" + spec_.path.substr(1);
    } else if (inet_pton(AF_INET, spec_.host.c_str(), &a4->sin_addr) == 1) {
      a4->sin_family = AF_INET, a4->sin_port = htons(static_cast<uint16_t>(spec_.port)), len = sizeof *a4;
    } else if (inet_pton(AF_INET6, spec_.host.c_str(), &a6->sin6_addr) == 1) {
      a6->sin6_family = AF_INET6, a6->sin6_port = htons(static_cast<uint16_t>(spec_.port)), len = sizeof *a6;
    } else {
      return Fail("not an IP address: " + spec_.host, EINVAL);
    }
    if (where.empty()) where = spec_.host + ":" + std::to_string(spec_.port);
    int fd = socket(addr.ss_family, (spec_.stream ? SOCK_STREAM : SOCK_DGRAM) | SOCK_CLOEXEC, 0);
    if (fd < 0) return Fail("socket", errno);
    if (spec_.listen) {
      int one = 1;
      if (addr.ss_family != AF_UNIX) setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
      if (bind(fd, reinterpret_cast<struct sockaddr*>(&addr), len) != 0 || (spec_.stream && listen(fd, 128) != 0)) {
        int err = errno;
        close(fd);
        return Fail("listen on " + where, err);
      }
    } else if (spec_.stream) {
      struct timeval tv = {5, 0};  // a connect never holds the thread longer
      setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
      if (connect(fd, reinterpret_cast<struct sockaddr*>(&addr), len) != 0) {
        int err = errno;
        close(fd);
        return Fail("connect to " + where, err);
      }
      tv = {0, 0};
      setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    }  // else a datagram socket libuv connects (it refuses one connected already)
    fd_ = fd;
  }
  void Fail(const std::string& what, int err) {
    errno_ = err;
    SetError(what + ": " + strerror(err));
  }
  Napi::Promise::Deferred deferred_;
  SocketSpec spec_;
  int fd_ = -1;
  int errno_ = 0;
};

}  // namespace

// socketInNetns(pid, { stream, listen, host, port, path, uid, gid }) → Promise<fd>
Napi::Value SocketInNetns(const Napi::CallbackInfo& info) {
  SocketSpec spec;
  spec.pid = info[0].ToNumber().Int32Value();
  Napi::Object o = info[1].As<Napi::Object>();
  auto has = [&](const char* k) { return o.Has(k) && !o.Get(k).IsUndefined(); };
  spec.stream = !has("stream") || o.Get("stream").ToBoolean().Value();
  spec.listen = has("listen") && o.Get("listen").ToBoolean().Value();
  if (has("host")) spec.host = o.Get("host").ToString().Utf8Value();
  if (has("port")) spec.port = o.Get("port").ToNumber().Int32Value();
  if (has("path")) spec.path = o.Get("path").ToString().Utf8Value();
  if (has("uid")) spec.uid = static_cast<long>(o.Get("uid").ToNumber().Int64Value());
  if (has("gid")) spec.gid = static_cast<long>(o.Get("gid").ToNumber().Int64Value());
  if (has("mode")) spec.mode = o.Get("mode").ToNumber().Int32Value();
  auto* w = new SocketWorker(info.Env(), std::move(spec));
  Napi::Promise p = w->Promise();
  w->Queue();
  return p;
}

}  // namespace lxq
