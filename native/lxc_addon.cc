// lxq's liblxc layer: liblxc's container API, asynchronous, one small class (lxq_lxc, built only
// where liblxc's headers are present; its system calls without liblxc are lxq_sys, sys_addon.cc).
#include <napi.h>
#include <lxc/lxccontainer.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "container.h"

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
  exports.Set("liblxcVersion", Napi::String::New(env, lxc_get_version()));
  return exports;
}

}  // namespace

NODE_API_MODULE(lxq_lxc, Init)
