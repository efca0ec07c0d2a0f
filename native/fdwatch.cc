#include "fdwatch.h"

#include <unistd.h>
#include <uv.h>

#include <cstring>
#include <memory>

namespace lxq {

struct FdWatch {
  uv_poll_t poll;
  int fd;
  bool closed = false;
  napi_env env;
  Napi::FunctionReference callback;
  Napi::AsyncContext context;
  OnFdReadable onReadable;
  // Shared with the cancel function, which may outlive the watch (or be collected first).
  std::shared_ptr<FdWatch*> self;
  FdWatch(Napi::Env e, int f, Napi::Function cb, const char* resource, OnFdReadable on)
      : fd(f), env(e), callback(Napi::Persistent(cb)), context(e, resource), onReadable(on), self(std::make_shared<FdWatch*>(this)) {}
};

int WatchedFd(const FdWatch* w) { return w->fd; }

bool FdWatchClosed(const FdWatch* w) { return w->closed; }

void CallFdWatch(FdWatch* w, const std::initializer_list<napi_value>& args) {
  Napi::Env env(w->env);
  w->callback.Value().MakeCallback(env.Global(), args, w->context);
}

void CloseFdWatch(FdWatch* w) {
  if (w->closed) return;
  w->closed = true;
  *w->self = nullptr;
  uv_poll_stop(&w->poll);
  uv_close(reinterpret_cast<uv_handle_t*>(&w->poll), [](uv_handle_t* h) {
    auto* w = static_cast<FdWatch*>(h->data);
    close(w->fd);
    delete w;
  });
}

Napi::Error ErrnoError(Napi::Env env, const std::string& what, int err) {
  Napi::Error e = Napi::Error::New(env, what + ": " + strerror(err));
  e.Set("errno", Napi::Number::New(env, err));
  e.Set("code", Napi::String::New(env, strerrorname_np(err) ? strerrorname_np(err) : "EIO"));
  return e;
}

Napi::Function WatchFd(Napi::Env env, int fd, Napi::Function callback, const char* resource, OnFdReadable onReadable, bool keepAlive, const std::string& what) {
  uv_loop_t* loop = nullptr;
  napi_get_uv_event_loop(env, &loop);
  auto* w = new FdWatch(env, fd, callback, resource, onReadable);
  w->poll.data = w;
  int rc = uv_poll_init(loop, &w->poll, fd);
  if (rc != 0) {
    close(fd);
    delete w;
  } else if ((rc = uv_poll_start(&w->poll, UV_READABLE, [](uv_poll_t* handle, int, int) {
               auto* w = static_cast<FdWatch*>(handle->data);
               Napi::Env env(w->env);
               Napi::HandleScope scope(env);
               w->onReadable(env, w);
             })) != 0) {
    CloseFdWatch(w);
  }
  if (rc != 0) throw Napi::Error::New(env, "cannot watch " + what + ": " + uv_strerror(rc));
  if (!keepAlive) uv_unref(reinterpret_cast<uv_handle_t*>(&w->poll));
  std::shared_ptr<FdWatch*> self = w->self;
  return Napi::Function::New(env, [self](const Napi::CallbackInfo&) {
    if (*self) CloseFdWatch(*self);
  }, "cancel");
}

}  // namespace lxq
