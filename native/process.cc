#include "process.h"

#include <fcntl.h>
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

}  // namespace lxq
