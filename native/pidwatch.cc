#include "pidwatch.h"

#include <sys/syscall.h>
#include <unistd.h>
#include <uv.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <string>

namespace lxq {

namespace {

struct PidWatch {
  uv_poll_t poll;
  int pidfd;
  bool closed = false;
  napi_env env;
  Napi::FunctionReference callback;
  Napi::AsyncContext context;
  // Shared with the cancel function, which may outlive the watch (or be collected first).
  std::shared_ptr<PidWatch*> self;
  PidWatch(Napi::Env e, int fd, Napi::Function cb)
      : pidfd(fd), env(e), callback(Napi::Persistent(cb)), context(e, "lxq:watchPid"), self(std::make_shared<PidWatch*>(this)) {}
};

void Close(PidWatch* w) {
  if (w->closed) return;
  w->closed = true;
  *w->self = nullptr;
  uv_poll_stop(&w->poll);
  uv_close(reinterpret_cast<uv_handle_t*>(&w->poll), [](uv_handle_t* h) {
    auto* w = static_cast<PidWatch*>(h->data);
    close(w->pidfd);
    delete w;
  });
}

void OnReadable(uv_poll_t* handle, int status, int events) {
  auto* w = static_cast<PidWatch*>(handle->data);
  Napi::Env env(w->env);
  Napi::HandleScope scope(env);
  Napi::Function cb = w->callback.Value();
  Close(w);  // before the call: a callback that cancels finds it closed
  cb.MakeCallback(env.Global(), {}, w->context);
}

}  // namespace

Napi::Value WatchPid(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsNumber() || !info[1].IsFunction()) throw Napi::TypeError::New(env, "watchPid(pid, onExit)");
  int pid = info[0].As<Napi::Number>().Int32Value();
  int fd = static_cast<int>(syscall(SYS_pidfd_open, pid, 0));
  if (fd < 0) {
    int err = errno;
    Napi::Error e = Napi::Error::New(env, std::string("pidfd_open ") + std::to_string(pid) + ": " + strerror(err));
    e.Set("errno", Napi::Number::New(env, err));
    e.Set("code", Napi::String::New(env, strerrorname_np(err) ? strerrorname_np(err) : "EIO"));
    throw e;
  }
  uv_loop_t* loop = nullptr;
  napi_get_uv_event_loop(env, &loop);
  auto* w = new PidWatch(env, fd, info[1].As<Napi::Function>());
  w->poll.data = w;
  int rc = uv_poll_init(loop, &w->poll, fd);
  if (rc != 0) {
    close(fd);
    delete w;
  } else if ((rc = uv_poll_start(&w->poll, UV_READABLE, OnReadable)) != 0) {
    Close(w);
  }
  if (rc != 0) throw Napi::Error::New(env, std::string("cannot watch pid ") + std::to_string(pid) + ": " + uv_strerror(rc));
  uv_unref(reinterpret_cast<uv_handle_t*>(&w->poll));
  std::shared_ptr<PidWatch*> self = w->self;
  return Napi::Function::New(env, [self](const Napi::CallbackInfo&) {
    if (*self) Close(*self);
  }, "cancel");
}

}  // namespace lxq
