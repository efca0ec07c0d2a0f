// lxq's native core: liblxc's container API, asynchronous, one small class.
#include <napi.h>
#include <lxc/lxccontainer.h>

#include <sys/file.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "container.h"
#include "attach.h"
#include "mount.h"
#include "process.h"
#include "pidwatch.h"

namespace {

// listAllContainers(lxcpath) → Promise<{ defined: string[], active: string[] }>
class ListWorker : public Napi::AsyncWorker {
 public:
  ListWorker(Napi::Env env, std::string lxcpath)
      : Napi::AsyncWorker(env, "lxq:list_all_containers"), deferred_(Napi::Promise::Deferred::New(env)),
        lxcpath_(std::move(lxcpath)) {}
  Napi::Promise Promise() { return deferred_.Promise(); }

  void Execute() override {
    Collect(list_defined_containers, defined_);
    Collect(list_active_containers, active_);
  }
  void OnOK() override {
    Napi::Env env = Env();
    Napi::Object out = Napi::Object::New(env);
    out.Set("defined", ToArray(env, defined_));
    out.Set("active", ToArray(env, active_));
    deferred_.Resolve(out);
  }
  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

 private:
  template <typename Lister>
  void Collect(Lister list, std::vector<std::string>& into) {
    char** names = nullptr;
    int n = list(lxcpath_.c_str(), &names, nullptr);
    if (n < 0) return SetError("liblxc failed to list containers in " + lxcpath_);
    for (int i = 0; i < n; i++) {
      into.emplace_back(names[i]);
      free(names[i]);
    }
    free(names);
  }
  static Napi::Array ToArray(Napi::Env env, const std::vector<std::string>& v) {
    Napi::Array a = Napi::Array::New(env, v.size());
    for (size_t i = 0; i < v.size(); i++) a.Set(i, v[i]);
    return a;
  }
  Napi::Promise::Deferred deferred_;
  std::string lxcpath_;
  std::vector<std::string> defined_, active_;
};

Napi::Value ListAllContainers(const Napi::CallbackInfo& info) {
  if (info.Length() < 1 || !info[0].IsString()) throw Napi::TypeError::New(info.Env(), "lxcpath must be a string");
  auto* w = new ListWorker(info.Env(), info[0].As<Napi::String>().Utf8Value());
  Napi::Promise p = w->Promise();
  w->Queue();
  return p;
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("Container", lxq::Container::Define(env));
  exports.Set("listAllContainers", Napi::Function::New(env, ListAllContainers, "listAllContainers"));
  exports.Set("waitExit", Napi::Function::New(env, lxq::WaitExit, "waitExit"));
  exports.Set("watchPid", Napi::Function::New(env, lxq::WatchPid, "watchPid"));
  exports.Set("signalPidfd", Napi::Function::New(env, lxq::SignalPidfd, "signalPidfd"));
  exports.Set("openInRoot", Napi::Function::New(env, lxq::OpenInRoot, "openInRoot"));
  exports.Set("connectInNetns", Napi::Function::New(env, lxq::ConnectInNetns, "connectInNetns"));
  exports.Set("netnsInterfaces", Napi::Function::New(env, lxq::NetnsInterfaces, "netnsInterfaces"));
  exports.Set("mountInto", Napi::Function::New(env, lxq::MountInto, "mountInto"));
  exports.Set("umountIn", Napi::Function::New(env, lxq::UmountIn, "umountIn"));
  exports.Set("makeNode", Napi::Function::New(env, lxq::MakeNode, "makeNode"));
  exports.Set("setWindowSize", Napi::Function::New(env, [](const Napi::CallbackInfo& info) -> Napi::Value {
    return Napi::Boolean::New(info.Env(), lxq::SetWindowSize(info[0].ToNumber().Int32Value(),
                                                             static_cast<uint16_t>(info[1].ToNumber().Uint32Value()),
                                                             static_cast<uint16_t>(info[2].ToNumber().Uint32Value())));
  }, "setWindowSize"));
  // flock(2) without waiting (LOCK_NB), so it never blocks the event loop: "ex" or "sh" is true
  // when taken, false when another open file holds it (lib/util/lock.ts retries); "un" releases.
  exports.Set("flock", Napi::Function::New(env, [](const Napi::CallbackInfo& info) -> Napi::Value {
    const int fd = info[0].ToNumber().Int32Value();
    const std::string mode = info[1].ToString().Utf8Value();
    const int how = mode == "ex" ? LOCK_EX | LOCK_NB : mode == "sh" ? LOCK_SH | LOCK_NB : LOCK_UN;
    int rc;
    do rc = flock(fd, how); while (rc != 0 && errno == EINTR);
    if (rc == 0) return Napi::Boolean::New(info.Env(), true);
    if (errno == EWOULDBLOCK) return Napi::Boolean::New(info.Env(), false);
    throw Napi::Error::New(info.Env(), std::string("flock: ") + strerror(errno));
  }, "flock"));
  exports.Set("liblxcVersion", Napi::String::New(env, lxc_get_version()));
  return exports;
}

}  // namespace

NODE_API_MODULE(lxq_native, Init)
