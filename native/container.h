// A thin, faithful wrapper of liblxc's `struct lxc_container`.
//
// Every call runs on a libuv pool thread and resolves a Promise. Calls on one container are
// serialized through a per-object queue (liblxc's per-container locks are not thread-safe across
// threads of one process); calls on different containers run in parallel.
#pragma once

#include <napi.h>
#include <lxc/lxccontainer.h>

#include <cstdint>
#include <deque>
#include <functional>
#include <string>
#include <variant>
#include <vector>

namespace lxq {

// What an operation hands back to JavaScript; converted on the JS thread.
using Result = std::variant<std::monostate, bool, int64_t, std::string, std::vector<std::string>, std::vector<int64_t>>;

// A failed liblxc call: the call's name, errno and the part of the container log it wrote.
struct Failure {
  std::string call;
  int err = 0;
  std::string message;
};

class Container;
using Op = std::function<Result(lxc_container*, Failure&)>;

class Job : public Napi::AsyncWorker {
 public:
  Job(Container* owner, Napi::Env env, std::string call, Op op);
  Napi::Promise Promise() { return deferred_.Promise(); }
  void Execute() override;
  void OnOK() override;
  void OnError(const Napi::Error& e) override;

 private:
  Container* owner_;
  Napi::ObjectReference self_;  // keeps the container alive while the job is queued or running
  Napi::Promise::Deferred deferred_;
  std::string call_;
  Op op_;
  Result result_;
  Failure failure_;
};

class Container : public Napi::ObjectWrap<Container> {
  friend class Job;

 public:
  static Napi::Function Define(Napi::Env env);
  explicit Container(const Napi::CallbackInfo& info);
  ~Container() override;

  void JobDone();

 private:
  Napi::Value Enqueue(Napi::Env env, std::string call, Op op);
  void Put();

  // Methods exposed to JavaScript (one per liblxc call).
  Napi::Value Release(const Napi::CallbackInfo& info);
  Napi::Value Defined(const Napi::CallbackInfo& info);
  Napi::Value State(const Napi::CallbackInfo& info);
  Napi::Value InitPid(const Napi::CallbackInfo& info);
  Napi::Value Create(const Napi::CallbackInfo& info);
  Napi::Value Start(const Napi::CallbackInfo& info);
  Napi::Value Shutdown(const Napi::CallbackInfo& info);
  Napi::Value Stop(const Napi::CallbackInfo& info);
  Napi::Value Freeze(const Napi::CallbackInfo& info);
  Napi::Value Unfreeze(const Napi::CallbackInfo& info);
  Napi::Value Wait(const Napi::CallbackInfo& info);
  Napi::Value GetConfigItem(const Napi::CallbackInfo& info);
  Napi::Value SetConfigItem(const Napi::CallbackInfo& info);
  Napi::Value ClearConfigItem(const Napi::CallbackInfo& info);
  Napi::Value GetRunningConfigItem(const Napi::CallbackInfo& info);
  Napi::Value GetKeys(const Napi::CallbackInfo& info);
  Napi::Value SaveConfig(const Napi::CallbackInfo& info);
  Napi::Value GetCgroupItem(const Napi::CallbackInfo& info);
  Napi::Value SetCgroupItem(const Napi::CallbackInfo& info);
  Napi::Value GetIps(const Napi::CallbackInfo& info);
  Napi::Value Destroy(const Napi::CallbackInfo& info);
  Napi::Value ConsoleGetfd(const Napi::CallbackInfo& info);
  Napi::Value Attach(const Napi::CallbackInfo& info);

  std::string name_, lxcpath_;
  lxc_container* c_ = nullptr;  // opened by the first job; jobs on one container never overlap
  std::deque<Job*> queue_;
  bool busy_ = false;
  bool released_ = false;
};

}  // namespace lxq
