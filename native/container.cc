#include "container.h"

#include <dirent.h>
#include <fcntl.h>
#include <time.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "attach.h"
#include "start.h"

namespace lxq {

namespace {

constexpr size_t kLogExcerptBytes = 4096;

// Reads a string-valued config getter with liblxc's "call once for the length" protocol.
template <typename Getter>
bool ReadSized(Getter get, std::string& out) {
  int len = get(nullptr, 0);
  if (len < 0) return false;
  std::string buf(static_cast<size_t>(len) + 1, '\0');
  int got = get(buf.data(), len + 1);
  if (got < 0) return false;
  buf.resize(static_cast<size_t>(got < len ? got : len));
  out = std::move(buf);
  return true;
}

std::string LogPath(lxc_container* c) {
  std::string path;
  ReadSized([&](char* b, int n) { return c->get_config_item(c, "lxc.log.file", b, n); }, path);
  return path;
}

off_t FileSize(const std::string& path) {
  struct stat st;
  if (path.empty() || stat(path.c_str(), &st) != 0) return 0;
  return st.st_size;
}

// What the container log gained since `from`, capped to its last few KiB.
std::string LogSince(const std::string& path, off_t from) {
  if (path.empty()) return "";
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return "";
  off_t end = lseek(fd, 0, SEEK_END);
  if (end - from > static_cast<off_t>(kLogExcerptBytes)) from = end - kLogExcerptBytes;
  std::string out;
  if (end > from) {
    out.resize(static_cast<size_t>(end - from));
    ssize_t n = pread(fd, out.data(), out.size(), from);
    out.resize(n > 0 ? static_cast<size_t>(n) : 0);
  }
  close(fd);
  return out;
}

std::string Arg(const Napi::CallbackInfo& info, size_t i) {
  if (info.Length() <= i || !info[i].IsString())
    throw Napi::TypeError::New(info.Env(), "argument " + std::to_string(i) + " must be a string");
  return info[i].As<Napi::String>().Utf8Value();
}

std::vector<std::string> StringArray(const Napi::CallbackInfo& info, size_t i) {
  std::vector<std::string> out;
  if (info.Length() <= i || info[i].IsUndefined() || info[i].IsNull()) return out;
  if (!info[i].IsArray()) throw Napi::TypeError::New(info.Env(), "argument " + std::to_string(i) + " must be an array");
  Napi::Array a = info[i].As<Napi::Array>();
  for (uint32_t k = 0; k < a.Length(); k++) out.push_back(a.Get(k).ToString().Utf8Value());
  return out;
}

std::vector<char*> Argv(std::vector<std::string>& args) {
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  return argv;
}

Napi::Value ToJs(Napi::Env env, const Result& v) {
  if (std::holds_alternative<bool>(v)) return Napi::Boolean::New(env, std::get<bool>(v));
  if (std::holds_alternative<int64_t>(v)) return Napi::Number::New(env, static_cast<double>(std::get<int64_t>(v)));
  if (std::holds_alternative<std::string>(v)) return Napi::String::New(env, std::get<std::string>(v));
  if (std::holds_alternative<std::vector<std::string>>(v)) {
    const auto& list = std::get<std::vector<std::string>>(v);
    Napi::Array a = Napi::Array::New(env, list.size());
    for (size_t i = 0; i < list.size(); i++) a.Set(i, list[i]);
    return a;
  }
  if (std::holds_alternative<std::vector<int64_t>>(v)) {
    const auto& list = std::get<std::vector<int64_t>>(v);
    Napi::Array a = Napi::Array::New(env, list.size());
    for (size_t i = 0; i < list.size(); i++) a.Set(i, Napi::Number::New(env, static_cast<double>(list[i])));
    return a;
  }
  return env.Undefined();
}

// liblxc reports failure as `false`; errno is the best cause it leaves behind.
Result Check(bool ok, Failure& f, const char* call) {
  if (!ok) {
    f.call = call;
    f.err = errno;
  }
  return ok;
}

// A precondition checked in the same job as the call it guards (a round trip less than asking
// first): fails as call "state" with ESRCH, and the state found as the message.
bool Expect(lxc_container* c, const std::string& expect, Failure& f) {
  if (expect.empty()) return true;
  const char* state = c->state(c);
  if (state && expect == state) return true;
  f = {"state", ESRCH, state ? state : "?"};
  return false;
}

}  // namespace

// ---- Job ----------------------------------------------------------------------------------

Job::Job(Container* owner, Napi::Env env, std::string call, Op op)
    : Napi::AsyncWorker(env, ("lxq:" + call).c_str()),
      owner_(owner),
      self_(Napi::Persistent(owner->Value())),
      deferred_(Napi::Promise::Deferred::New(env)),
      call_(std::move(call)),
      op_(std::move(op)) {}

void Job::Execute() {
  // The handle is opened by its first call, here: lxc_container_new parses the config and opens
  // (creates) the container's log, which takes milliseconds on a slow filesystem.
  if (!owner_->c_) owner_->c_ = lxc_container_new(owner_->name_.c_str(), owner_->lxcpath_.c_str());
  lxc_container* c = owner_->c_;
  if (!c) {
    failure_ = {"lxc_container_new", errno ? errno : ENOMEM, ""};
    return SetError(failure_.call);
  }
  std::string log = LogPath(c);
  off_t from = FileSize(log);
  errno = 0;
  result_ = op_(c, failure_);
  if (!failure_.call.empty()) {
    if (failure_.message.empty()) failure_.message = LogSince(log, from);
    SetError(failure_.call);
  }
}

void Job::OnOK() {
  deferred_.Resolve(ToJs(Env(), result_));
  owner_->JobDone();
  self_.Reset();
}

void Job::OnError(const Napi::Error&) {
  Napi::Env env = Env();
  std::string text = "liblxc " + failure_.call + " failed";
  if (failure_.err) text += ": " + std::string(strerror(failure_.err));
  Napi::Error e = Napi::Error::New(env, text);
  e.Set("call", failure_.call);
  e.Set("errno", Napi::Number::New(env, failure_.err));
  e.Set("log", failure_.message);
  deferred_.Reject(e.Value());
  owner_->JobDone();
  self_.Reset();
}

// ---- Container ----------------------------------------------------------------------------

Napi::Function Container::Define(Napi::Env env) {
  return DefineClass(env, "Container",
                     {
                         InstanceMethod<&Container::Release>("release"),
                         InstanceMethod<&Container::Defined>("defined"),
                         InstanceMethod<&Container::State>("state"),
                         InstanceMethod<&Container::InitPid>("initPid"),
                         InstanceMethod<&Container::Create>("create"),
                         InstanceMethod<&Container::Start>("start"),
                         InstanceMethod<&Container::Shutdown>("shutdown"),
                         InstanceMethod<&Container::Stop>("stop"),
                         InstanceMethod<&Container::Freeze>("freeze"),
                         InstanceMethod<&Container::Unfreeze>("unfreeze"),
                         InstanceMethod<&Container::Wait>("wait"),
                         InstanceMethod<&Container::GetConfigItem>("getConfigItem"),
                         InstanceMethod<&Container::SetConfigItem>("setConfigItem"),
                         InstanceMethod<&Container::ClearConfigItem>("clearConfigItem"),
                         InstanceMethod<&Container::GetRunningConfigItem>("getRunningConfigItem"),
                         InstanceMethod<&Container::GetKeys>("getKeys"),
                         InstanceMethod<&Container::SaveConfig>("saveConfig"),
                         InstanceMethod<&Container::GetCgroupItem>("getCgroupItem"),
                         InstanceMethod<&Container::SetCgroupItem>("setCgroupItem"),
                         InstanceMethod<&Container::GetIps>("getIps"),
                         InstanceMethod<&Container::Destroy>("destroy"),
                         InstanceMethod<&Container::Attach>("attach"),
                         InstanceMethod<&Container::ConsoleGetfd>("consoleGetfd"),
                     });
}

// new Container(name, lxcpath): nothing is opened yet (see Job::Execute).
Container::Container(const Napi::CallbackInfo& info)
    : Napi::ObjectWrap<Container>(info), name_(Arg(info, 0)), lxcpath_(Arg(info, 1)) {}

Container::~Container() { Put(); }

void Container::Put() {
  if (c_) lxc_container_put(c_);
  c_ = nullptr;
}

Napi::Value Container::Enqueue(Napi::Env env, std::string call, Op op) {
  if (released_) throw Napi::Error::New(env, "container handle was released");
  Job* job = new Job(this, env, std::move(call), std::move(op));
  Napi::Promise p = job->Promise();
  queue_.push_back(job);
  if (!busy_) JobDone();
  return p;
}

// Runs on the JS thread after each job: start the next one, or release the handle if asked to.
void Container::JobDone() {
  busy_ = false;
  if (queue_.empty()) {
    if (released_) Put();
    return;
  }
  busy_ = true;
  Job* next = queue_.front();
  queue_.pop_front();
  next->Queue();
}

// release(): drops the liblxc handle once queued calls have finished; later calls throw.
Napi::Value Container::Release(const Napi::CallbackInfo& info) {
  released_ = true;
  if (!busy_ && queue_.empty()) Put();
  return info.Env().Undefined();
}

Napi::Value Container::Defined(const Napi::CallbackInfo& info) {
  return Enqueue(info.Env(), "is_defined", [](lxc_container* c, Failure&) -> Result { return c->is_defined(c); });
}

Napi::Value Container::State(const Napi::CallbackInfo& info) {
  return Enqueue(info.Env(), "state", [](lxc_container* c, Failure&) -> Result { return std::string(c->state(c)); });
}

Napi::Value Container::InitPid(const Napi::CallbackInfo& info) {
  return Enqueue(info.Env(), "init_pid",
                 [](lxc_container* c, Failure&) -> Result { return static_cast<int64_t>(c->init_pid(c)); });
}

// create(template|null, bdevtype|null, templateArgs[]): with no template liblxc writes the config
// and an empty rootfs; the caller fills it from an image.
Napi::Value Container::Create(const Napi::CallbackInfo& info) {
  std::string tmpl = info.Length() > 0 && info[0].IsString() ? Arg(info, 0) : "";
  std::string bdev = info.Length() > 1 && info[1].IsString() ? Arg(info, 1) : "";
  std::vector<std::string> args = StringArray(info, 2);
  return Enqueue(info.Env(), "create", [tmpl, bdev, args](lxc_container* c, Failure& f) mutable -> Result {
    std::vector<char*> argv = Argv(args);
    return Check(c->create(c, tmpl.empty() ? nullptr : tmpl.c_str(), bdev.empty() ? nullptr : bdev.c_str(),
                           nullptr, LXC_CREATE_QUIET, argv.data()),
                 f, "create");
  });
}

// start(argv[]): daemonized start, from the saved config, by a handler of lxq_runner; see start.h.
Napi::Value Container::Start(const Napi::CallbackInfo& info) {
  std::vector<std::string> args = StringArray(info, 0);
  return Enqueue(info.Env(), "start", [args](lxc_container* c, Failure& f) mutable -> Result {
    return StartDetached(c, args, f);
  });
}

Napi::Value Container::Shutdown(const Napi::CallbackInfo& info) {
  int timeout = info.Length() > 0 ? info[0].ToNumber().Int32Value() : 30;
  return Enqueue(info.Env(), "shutdown", [timeout](lxc_container* c, Failure& f) -> Result {
    // A shutdown that times out is not an error of liblxc: report it as `false`.
    return c->shutdown(c, timeout);
  });
}

Napi::Value Container::Stop(const Napi::CallbackInfo& info) {
  return Enqueue(info.Env(), "stop", [](lxc_container* c, Failure& f) -> Result { return Check(c->stop(c), f, "stop"); });
}

// consoleGetfd(ttynum): liblxc asks the container's monitor over its command socket for the
// terminal `ttynum` (0: /dev/console, through the monitor's proxy pty). → [commandSocket, ptx]:
// the terminal stays reserved for this caller until it closes commandSocket.
Napi::Value Container::ConsoleGetfd(const Napi::CallbackInfo& info) {
  int ttynum = info.Length() > 0 ? info[0].ToNumber().Int32Value() : 0;
  return Enqueue(info.Env(), "console_getfd", [ttynum](lxc_container* c, Failure& f) -> Result {
    int tty = ttynum, ptx = -1;
    int sock = c->console_getfd(c, &tty, &ptx);
    if (sock < 0) {
      f.call = "console_getfd";
      f.err = errno;
      return false;
    }
    return std::vector<int64_t>{sock, ptx};
  });
}

// unfreeze(expect?): with `expect`, only while the container is in that state (see Expect).
Napi::Value Container::Unfreeze(const Napi::CallbackInfo& info) {
  std::string expect = info.Length() > 0 && info[0].IsString() ? Arg(info, 0) : "";
  return Enqueue(info.Env(), "unfreeze", [expect](lxc_container* c, Failure& f) -> Result {
    if (!Expect(c, expect, f)) return false;
    return Check(c->unfreeze(c), f, "unfreeze");
  });
}

namespace {

// The v1 cgroup of `pid` for `controller`, as /proc/<pid>/cgroup shows it from here.
std::string CgroupOf(pid_t pid, const std::string& controller) {
  std::string text;
  int fd = open(("/proc/" + std::to_string(pid) + "/cgroup").c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return "";
  char buf[4096];
  for (ssize_t n; (n = read(fd, buf, sizeof buf)) > 0;) text.append(buf, static_cast<size_t>(n));
  close(fd);
  size_t at = 0;
  while (at < text.size()) {
    size_t end = text.find('\n', at);
    if (end == std::string::npos) end = text.size();
    std::string line = text.substr(at, end - at);
    at = end + 1;
    size_t a = line.find(':'), b = line.find(':', a + 1);
    if (a == std::string::npos || b == std::string::npos) continue;
    std::string controllers = "," + line.substr(a + 1, b - a - 1) + ",";
    if (controllers.find("," + controller + ",") != std::string::npos) return line.substr(b + 1);
  }
  return "";
}

bool ReadTrimmed(const std::string& file, std::string& out) {
  int fd = open(file.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  char buf[64];
  ssize_t n = read(fd, buf, sizeof buf);
  close(fd);
  if (n < 0) return false;
  out.assign(buf, static_cast<size_t>(n));
  while (!out.empty() && (out.back() == '\n' || out.back() == ' ')) out.pop_back();
  return true;
}

bool WriteState(const std::string& file, const char* state) {
  int fd = open(file.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) return false;
  size_t len = strlen(state);
  bool wrote = write(fd, state, len) == static_cast<ssize_t>(len);
  int err = errno;
  close(fd);
  errno = err;
  return wrote;
}

double Now() {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) / 1e9;
}

// The tasks of the freezer cgroup `dir` (and of its children) that may have kept it FREEZING,
// each as "pid (comm) S in wchan". /proc cannot tell a frozen task from one in uninterruptible
// sleep (both read D, a task frozen in a freezable sleep keeps that sleep's wchan): tasks running
// or in an interruptible sleep (R, S…) were certainly not frozen and go to `running`; tasks in D
// outside the refrigerator may be frozen or stuck in the kernel and go to `uninterruptible`.
struct Unfrozen {
  std::string running, uninterruptible;
  int nRunning = 0, nUninterruptible = 0;
};

void UnfrozenTasks(const std::string& dir, Unfrozen& out, int depth = 0) {
  std::string tasks;
  int fd = open((dir + "/tasks").c_str(), O_RDONLY | O_CLOEXEC);
  if (fd >= 0) {
    char buf[4096];
    for (ssize_t n; (n = read(fd, buf, sizeof buf)) > 0;) tasks.append(buf, static_cast<size_t>(n));
    close(fd);
  }
  size_t at = 0;
  while (at < tasks.size()) {
    size_t end = tasks.find('\n', at);
    if (end == std::string::npos) end = tasks.size();
    std::string pid = tasks.substr(at, end - at);
    at = end + 1;
    if (pid.empty()) continue;
    std::string wchan, stat;
    ReadTrimmed("/proc/" + pid + "/wchan", wchan);
    if (wchan == "__refrigerator") continue;
    int sfd = open(("/proc/" + pid + "/stat").c_str(), O_RDONLY | O_CLOEXEC);
    if (sfd >= 0) {
      char buf[1024];
      ssize_t n = read(sfd, buf, sizeof buf);
      close(sfd);
      if (n > 0) stat.assign(buf, static_cast<size_t>(n));
    }
    size_t open_paren = stat.find('('), close_paren = stat.rfind(')');
    if (open_paren == std::string::npos || close_paren == std::string::npos || close_paren + 2 >= stat.size()) continue;  // gone
    std::string comm = stat.substr(open_paren + 1, close_paren - open_paren - 1);
    std::string state = stat.substr(close_paren + 2, 1);
    bool d = state == "D";
    std::string& list = d ? out.uninterruptible : out.running;
    int& count = d ? out.nUninterruptible : out.nRunning;
    if (count++ < 8) {
      if (!list.empty()) list += ", ";
      list += "pid " + pid + " (" + comm + ") " + state + (wchan.empty() || wchan == "0" ? "" : " in " + wchan);
    }
  }
  if (depth > 4) return;
  DIR* d = opendir(dir.c_str());
  if (!d) return;
  while (dirent* e = readdir(d)) {
    if (e->d_type == DT_DIR && e->d_name[0] != '.') UnfrozenTasks(dir + "/" + e->d_name, out, depth + 1);
  }
  closedir(d);
}

// Freezes the running container's v1 freezer cgroup and waits until the kernel has stopped every
// task, for 10 s at most. One write of FROZEN is not always enough: a task forked, or attached,
// while the cgroup is FREEZING can be missed, and then the cgroup reads FREEZING until it is
// written again (as runc and LXD do, FROZEN is written again at each poll, and after each second
// FREEZING the cgroup is thawed for a moment so that what was half-way through a fork completes). The limit is
// time, not a number of polls. On failure the cgroup is thawed (never left half frozen) and the
// message names the tasks that were not frozen, with their state and where they slept.
bool FreezeV1(lxc_container* c, const std::string& mount, Failure& f) {
  pid_t pid = c->init_pid(c);
  if (pid <= 0) return std::get<bool>(Check(false, f, "init_pid"));
  std::string cgroup = CgroupOf(pid, "freezer");
  if (cgroup.empty()) {
    errno = ENOENT;
    return std::get<bool>(Check(false, f, "freezer.state"));
  }
  std::string dir = mount + cgroup;
  std::string file = dir + "/freezer.state";
  const double started = Now();
  const double limit = 10.0;
  double thawed = started;
  for (int polls = 0;; polls++) {
    if (Now() - thawed > 1.0) {
      WriteState(file, "THAWED");
      usleep(10000);
      thawed = Now();
    }
    if (!WriteState(file, "FROZEN")) return std::get<bool>(Check(false, f, "freezer.state"));
    std::string now;
    if (!ReadTrimmed(file, now)) return std::get<bool>(Check(false, f, "freezer.state"));
    if (now == "FROZEN") return true;
    if (Now() - started > limit) break;
    if (polls > 20) usleep(polls > 200 ? 5000 : 200);
  }
  Unfrozen left;
  UnfrozenTasks(dir, left);
  WriteState(file, "THAWED");
  char seconds[32];
  snprintf(seconds, sizeof seconds, "%.1f", Now() - started);
  f.call = "freezer.state";
  f.err = ETIMEDOUT;
  f.message = "the freezer cgroup " + cgroup + " still read FREEZING after " + seconds + " s (thawed again)";
  if (left.nRunning) f.message += "; not frozen (running or in an interruptible sleep): " + left.running + (left.nRunning > 8 ? ", …" : "");
  if (left.nUninterruptible) f.message += "; in uninterruptible sleep (stuck in the kernel, or frozen there): " + left.uninterruptible + (left.nUninterruptible > 8 ? ", …" : "");
  if (!left.nRunning && !left.nUninterruptible) f.message += "; every task was frozen by then";
  return false;
}

}  // namespace

// freeze(v1Mount?, expect?): with a v1 freezer mount, first writes the container's freezer.state and
// waits here until it reads FROZEN: liblxc 5.0.2's freeze writes it too but, when its first read
// still says FREEZING, sleeps a whole second. liblxc's freeze then finds it frozen at once and
// tells the monitor, so that every liblxc client (lxc-info, lxc-wait) sees FROZEN.
Napi::Value Container::Freeze(const Napi::CallbackInfo& info) {
  std::string mount = info.Length() > 0 && info[0].IsString() ? Arg(info, 0) : "";
  std::string expect = info.Length() > 1 && info[1].IsString() ? Arg(info, 1) : "";
  return Enqueue(info.Env(), "freeze", [mount, expect](lxc_container* c, Failure& f) -> Result {
    if (!Expect(c, expect, f)) return false;
    if (!mount.empty() && !FreezeV1(c, mount, f)) return false;
    return Check(c->freeze(c), f, "freeze");
  });
}

Napi::Value Container::Wait(const Napi::CallbackInfo& info) {
  std::string state = Arg(info, 0);
  int timeout = info.Length() > 1 ? info[1].ToNumber().Int32Value() : -1;
  return Enqueue(info.Env(), "wait",
                 [state, timeout](lxc_container* c, Failure&) -> Result { return c->wait(c, state.c_str(), timeout); });
}

Napi::Value Container::GetConfigItem(const Napi::CallbackInfo& info) {
  std::string key = Arg(info, 0);
  return Enqueue(info.Env(), "get_config_item", [key](lxc_container* c, Failure& f) -> Result {
    std::string out;
    if (!ReadSized([&](char* b, int n) { return c->get_config_item(c, key.c_str(), b, n); }, out))
      return Check(false, f, "get_config_item");
    return out;
  });
}

Napi::Value Container::SetConfigItem(const Napi::CallbackInfo& info) {
  std::string key = Arg(info, 0);
  std::string value = Arg(info, 1);
  return Enqueue(info.Env(), "set_config_item", [key, value](lxc_container* c, Failure& f) -> Result {
    return Check(c->set_config_item(c, key.c_str(), value.c_str()), f, "set_config_item");
  });
}

Napi::Value Container::ClearConfigItem(const Napi::CallbackInfo& info) {
  std::string key = Arg(info, 0);
  return Enqueue(info.Env(), "clear_config_item", [key](lxc_container* c, Failure& f) -> Result {
    return Check(c->clear_config_item(c, key.c_str()), f, "clear_config_item");
  });
}

Napi::Value Container::GetRunningConfigItem(const Napi::CallbackInfo& info) {
  std::string key = Arg(info, 0);
  return Enqueue(info.Env(), "get_running_config_item", [key](lxc_container* c, Failure& f) -> Result {
    char* v = c->get_running_config_item(c, key.c_str());
    if (!v) return Check(false, f, "get_running_config_item");
    std::string out(v);
    free(v);
    return out;
  });
}

// getKeys(prefix?): the config keys liblxc knows (under a prefix such as "lxc.net.0").
Napi::Value Container::GetKeys(const Napi::CallbackInfo& info) {
  std::string prefix = info.Length() > 0 && info[0].IsString() ? Arg(info, 0) : "";
  return Enqueue(info.Env(), "get_keys", [prefix](lxc_container* c, Failure& f) -> Result {
    std::string out;
    const char* p = prefix.empty() ? nullptr : prefix.c_str();
    if (!ReadSized([&](char* b, int n) { return c->get_keys(c, p, b, n); }, out)) return Check(false, f, "get_keys");
    std::vector<std::string> keys;
    size_t start = 0;
    while (start < out.size()) {
      size_t nl = out.find('\n', start);
      if (nl == std::string::npos) nl = out.size();
      if (nl > start) keys.push_back(out.substr(start, nl - start));
      start = nl + 1;
    }
    return keys;
  });
}

Napi::Value Container::SaveConfig(const Napi::CallbackInfo& info) {
  std::string file = info.Length() > 0 && info[0].IsString() ? Arg(info, 0) : "";
  return Enqueue(info.Env(), "save_config", [file](lxc_container* c, Failure& f) -> Result {
    return Check(c->save_config(c, file.empty() ? nullptr : file.c_str()), f, "save_config");
  });
}

Napi::Value Container::GetCgroupItem(const Napi::CallbackInfo& info) {
  std::string key = Arg(info, 0);
  return Enqueue(info.Env(), "get_cgroup_item", [key](lxc_container* c, Failure& f) -> Result {
    std::string out;
    if (!ReadSized([&](char* b, int n) { return c->get_cgroup_item(c, key.c_str(), b, n); }, out))
      return Check(false, f, "get_cgroup_item");
    while (!out.empty() && (out.back() == '\n' || out.back() == '\0')) out.pop_back();
    return out;
  });
}

Napi::Value Container::SetCgroupItem(const Napi::CallbackInfo& info) {
  std::string key = Arg(info, 0);
  std::string value = Arg(info, 1);
  return Enqueue(info.Env(), "set_cgroup_item", [key, value](lxc_container* c, Failure& f) -> Result {
    return Check(c->set_cgroup_item(c, key.c_str(), value.c_str()), f, "set_cgroup_item");
  });
}

// getIps(interface?, family?, scope?): addresses seen inside the container's network namespace.
Napi::Value Container::GetIps(const Napi::CallbackInfo& info) {
  std::string iface = info.Length() > 0 && info[0].IsString() ? Arg(info, 0) : "";
  std::string family = info.Length() > 1 && info[1].IsString() ? Arg(info, 1) : "";
  int scope = info.Length() > 2 && info[2].IsNumber() ? info[2].ToNumber().Int32Value() : 0;
  return Enqueue(info.Env(), "get_ips", [iface, family, scope](lxc_container* c, Failure&) -> Result {
    char** ips = c->get_ips(c, iface.empty() ? nullptr : iface.c_str(), family.empty() ? nullptr : family.c_str(),
                            scope);
    std::vector<std::string> out;
    if (ips) {
      for (char** p = ips; *p; p++) {
        out.emplace_back(*p);
        free(*p);
      }
      free(ips);
    }
    return out;
  });
}

Napi::Value Container::Destroy(const Napi::CallbackInfo& info) {
  return Enqueue(info.Env(), "destroy",
                 [](lxc_container* c, Failure& f) -> Result { return Check(c->destroy(c), f, "destroy"); });
}

// attach(argv, env[], cwd|null, uid, gid, pty|null) → [pid, pidfd, stdinFd, stdoutFd, stderrFd, exitChannel]
// pty: { cols, rows } runs the command on a new terminal; stdinFd is then its master, the others -1.
Napi::Value Container::Attach(const Napi::CallbackInfo& info) {
  AttachRequest req;
  req.argv = StringArray(info, 0);
  req.env = StringArray(info, 1);
  if (req.argv.empty()) throw Napi::TypeError::New(info.Env(), "argv must not be empty");
  req.cwd = info.Length() > 2 && info[2].IsString() ? Arg(info, 2) : "";
  req.uid = info.Length() > 3 && info[3].IsNumber() ? info[3].ToNumber().Int64Value() : -1;
  req.gid = info.Length() > 4 && info[4].IsNumber() ? info[4].ToNumber().Int64Value() : -1;
  if (info.Length() > 5 && info[5].IsObject()) {
    Napi::Object pty = info[5].As<Napi::Object>();
    req.pty = true;
    req.cols = static_cast<uint16_t>(pty.Get("cols").ToNumber().Uint32Value());
    req.rows = static_cast<uint16_t>(pty.Get("rows").ToNumber().Uint32Value());
  }
  return Enqueue(info.Env(), "attach", [req](lxc_container* c, Failure& f) mutable -> Result {
    std::vector<int64_t> out;
    if (!AttachProcess(c, req, out, f)) return false;
    return out;
  });
}

}  // namespace lxq
