// Mounts into a running container, with the new mount API (no fork of this process, which
// liblxc's mount() does, and which also needs shared mounts set up at start).
//
// The source is cloned into a detached mount on the host (open_tree), given its attributes
// there (read-only, propagation, and an id map taken from the container's user namespace:
// an idmapped mount), then a thread of its own enters the container's mount namespace and
// attaches it (move_mount) to a target resolved inside the container's root with openat2
// RESOLVE_IN_ROOT: a symlink planted at the target resolves as the container sees it and can
// never make the mount land on the host. The thread ends there; no pool thread ever moves.
#include "mount.h"

#include <fcntl.h>
#include <linux/openat2.h>
#include <sched.h>
#include <sys/fsuid.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

namespace lxq {

namespace {

struct Fd {
  int fd = -1;
  explicit Fd(int f = -1) : fd(f) {}
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  Fd& operator=(Fd&& o) noexcept {
    if (this != &o) {
      reset();
      fd = o.fd;
      o.fd = -1;
    }
    return *this;
  }
  ~Fd() { reset(); }
  void reset() {
    if (fd >= 0) close(fd);
    fd = -1;
  }
};

int OpenInside(int root, const std::string& rel, uint64_t flags, uint64_t mode = 0) {
  struct open_how how = {};
  how.flags = flags | O_CLOEXEC;
  how.mode = mode;
  how.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS;
  return static_cast<int>(syscall(SYS_openat2, root, rel.c_str(), &how, sizeof how));
}

// The target inside the container, made if missing (its parents as directories, itself as a
// directory or an empty file), every step resolved inside `root`.
// What it makes is owned by `owner` (the container's root on the host), as a file the container
// made: a filesystem mounted inside its user namespace (its /dev) takes no other owner.
int OpenTarget(int root, const std::string& rel, bool dir, std::pair<uid_t, gid_t> owner, std::string& failed) {
  std::vector<std::string> parts;
  for (size_t i = 0; i < rel.size();) {
    size_t j = rel.find('/', i);
    if (j == std::string::npos) j = rel.size();
    if (j > i) parts.push_back(rel.substr(i, j - i));
    i = j + 1;
  }
  std::string prefix;
  for (size_t i = 0; i < parts.size(); i++) {
    bool last = i + 1 == parts.size();
    std::string parent = prefix.empty() ? "." : prefix;
    prefix += (prefix.empty() ? "" : "/") + parts[i];
    // The target itself is never followed: a symlink there (to "/", to "/etc"…) is refused,
    // and a later umount of the path meets the same mount.
    int fd = OpenInside(root, prefix, last ? (O_PATH | O_NOFOLLOW) : (O_PATH | O_DIRECTORY));
    if (fd >= 0) {
      if (!last) {
        close(fd);
        continue;
      }
      struct stat st;
      if (fstat(fd, &st) != 0 || S_ISLNK(st.st_mode) || (dir && !S_ISDIR(st.st_mode)) || (!dir && S_ISDIR(st.st_mode))) {
        int err = S_ISLNK(st.st_mode) ? ELOOP : dir ? ENOTDIR : EISDIR;
        close(fd);
        failed = "/" + prefix + (err == ELOOP ? " is a symbolic link inside the container" : err == ENOTDIR ? " is not a directory" : " is a directory");
        errno = err;
        return -1;
      }
      return fd;
    }
    if (errno != ENOENT) {
      failed = "open " + prefix;
      return -1;
    }
    Fd p(OpenInside(root, parent, O_PATH | O_DIRECTORY));
    if (p.fd < 0) {
      failed = "open " + parent;
      return -1;
    }
    // setfsuid/setfsgid change this thread's filesystem ids alone (glibc does not broadcast them).
    setfsgid(owner.second);
    setfsuid(owner.first);
    int made = 0;
    if (last && !dir) {
      made = static_cast<int>(syscall(SYS_openat, p.fd, parts[i].c_str(), O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC | O_NOFOLLOW, 0644));
      if (made < 0 && errno != EEXIST) {
        failed = "create " + prefix;
        return -1;
      }
      if (made >= 0) close(made);
    } else if (mkdirat(p.fd, parts[i].c_str(), 0755) != 0 && errno != EEXIST) {
      failed = "mkdir " + prefix;
      return -1;
    }
    fd = OpenInside(root, prefix, O_PATH | ((last && !dir) ? 0 : O_DIRECTORY));
    if (fd < 0) {
      failed = "open " + prefix;
      return -1;
    }
    if (last) return fd;
    close(fd);
  }
  failed = "empty target";
  errno = EINVAL;
  return -1;
}

uint64_t Propagation(const std::string& p) {
  if (p == "shared" || p == "rshared") return MS_SHARED;
  if (p == "slave" || p == "rslave") return MS_SLAVE;
  if (p == "unbindable" || p == "runbindable") return MS_UNBINDABLE;
  return MS_PRIVATE;
}

class MountWorker : public Napi::AsyncWorker {
 public:
  MountWorker(Napi::Env env, const char* name) : Napi::AsyncWorker(env, name), deferred_(Napi::Promise::Deferred::New(env)) {}
  Napi::Promise Promise() { return deferred_.Promise(); }
  void OnOK() override { deferred_.Resolve(Env().Undefined()); }
  void OnError(const Napi::Error& e) override {
    Napi::Error err = Napi::Error::New(Env(), e.Message());
    err.Set("errno", Napi::Number::New(Env(), errno_));
    err.Set("code", Napi::String::New(Env(), strerrorname_np(errno_) ? strerrorname_np(errno_) : "EIO"));
    deferred_.Reject(err.Value());
  }

 protected:
  void Fail(const std::string& what, int err) {
    errno_ = err;
    SetError(what + ": " + strerror(err));
  }
  // What went wrong inside the namespace: the step, and errno (an empty step: nothing did).
  struct Failure {
    std::string what;
    int err = 0;
  };
  static Failure Failed(std::string what) { return {std::move(what), errno}; }

  // Runs `fn` on a thread of its own inside the mount namespace of `pid` (its root becomes the
  // namespace's root, the container's "/"), and fails the call with what it returns.
  template <typename Fn>
  void InNamespace(int pid, Fn fn) {
    Fd ns(open(("/proc/" + std::to_string(pid) + "/ns/mnt").c_str(), O_RDONLY | O_CLOEXEC));
    if (ns.fd < 0) return Fail("open the mount namespace of pid " + std::to_string(pid), errno);
    Failure failure;
    std::thread([&] {
      // A thread shares its filesystem context with the process: unshare it so that setns may
      // change this thread's root and cwd alone.
      if (unshare(CLONE_FS) != 0 || setns(ns.fd, CLONE_NEWNS) != 0) {
        failure = Failed("enter the mount namespace");
        return;
      }
      failure = fn();
    }).join();
    if (!failure.what.empty()) Fail(failure.what, failure.err);
  }
  Napi::Promise::Deferred deferred_;
  int errno_ = 0;
};

class MountIntoWorker : public MountWorker {
 public:
  MountIntoWorker(Napi::Env env, int pid, std::string source, std::string target, bool dir, bool readonly, bool idmap,
                  bool recursive, std::string propagation, std::pair<uid_t, gid_t> owner)
      : MountWorker(env, "lxq:mountInto"), pid_(pid), source_(std::move(source)), target_(std::move(target)), dir_(dir),
        readonly_(readonly), idmap_(idmap), recursive_(recursive), propagation_(std::move(propagation)), owner_(owner) {}

  void Execute() override {
    unsigned int tflags = OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | (recursive_ ? AT_RECURSIVE : 0);
    Fd tree(open_tree(AT_FDCWD, source_.c_str(), tflags));
    if (tree.fd < 0) return Fail("open_tree " + source_, errno);
    struct mount_attr attr = {};
    attr.propagation = Propagation(propagation_);
    if (readonly_) attr.attr_set |= MOUNT_ATTR_RDONLY;
    Fd userns;
    if (idmap_) {
      userns = Fd(open(("/proc/" + std::to_string(pid_) + "/ns/user").c_str(), O_RDONLY | O_CLOEXEC));
      if (userns.fd < 0) return Fail("open the user namespace of pid " + std::to_string(pid_), errno);
      attr.attr_set |= MOUNT_ATTR_IDMAP;
      attr.userns_fd = static_cast<uint64_t>(userns.fd);
    }
    if (mount_setattr(tree.fd, "", AT_EMPTY_PATH | (recursive_ ? AT_RECURSIVE : 0), &attr, sizeof attr) != 0) {
      return Fail(std::string("mount_setattr") + (idmap_ ? " (idmapped)" : "") + " " + source_, errno);
    }
    InNamespace(pid_, [&]() -> Failure {
      Fd root(open("/", O_PATH | O_DIRECTORY | O_CLOEXEC));
      if (root.fd < 0) return Failed("open /");
      std::string step;
      Fd target(OpenTarget(root.fd, target_, dir_, owner_, step));
      if (target.fd < 0) return Failed(step);
      if (move_mount(tree.fd, "", target.fd, "", MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH) != 0) return Failed("move_mount onto " + target_);
      return {};
    });
  }

 private:
  int pid_;
  std::string source_, target_;
  bool dir_, readonly_, idmap_, recursive_;
  std::string propagation_;
  std::pair<uid_t, gid_t> owner_;
};

class UmountWorker : public MountWorker {
 public:
  UmountWorker(Napi::Env env, int pid, std::string target, bool remove)
      : MountWorker(env, "lxq:umountIn"), pid_(pid), target_(std::move(target)), remove_(remove) {}

  void Execute() override {
    InNamespace(pid_, [&]() -> Failure {
      // The thread's root is the container's: the path resolves as inside it, never above it.
      if (umount2(("/" + target_).c_str(), MNT_DETACH | UMOUNT_NOFOLLOW) != 0) return Failed("umount /" + target_);
      // The file lxq made to mount a node on (unlink never follows the last component).
      if (remove_ && unlink(("/" + target_).c_str()) != 0 && errno != ENOENT) return Failed("remove /" + target_);
      return {};
    });
  }

 private:
  int pid_;
  std::string target_;
  bool remove_;
};

// A device node on the host (Node has no mknod), owned as given: what a unix device of a
// container bind-mounts, since an unprivileged container cannot make nodes itself.
class MakeNodeWorker : public MountWorker {
 public:
  MakeNodeWorker(Napi::Env env, std::string path, bool block, int mode, int major, int minor, int uid, int gid)
      : MountWorker(env, "lxq:makeNode"), path_(std::move(path)), block_(block), mode_(mode), major_(major), minor_(minor),
        uid_(uid), gid_(gid) {}

  void Execute() override {
    mode_t type = block_ ? S_IFBLK : S_IFCHR;
    if (mknod(path_.c_str(), type | static_cast<mode_t>(mode_ & 07777), makedev(major_, minor_)) != 0) return Fail("mknod " + path_, errno);
    if (chown(path_.c_str(), uid_, gid_) != 0 || chmod(path_.c_str(), static_cast<mode_t>(mode_ & 07777)) != 0) {
      int err = errno;
      unlink(path_.c_str());
      return Fail("chown/chmod " + path_, err);
    }
  }

 private:
  std::string path_;
  bool block_;
  int mode_, major_, minor_, uid_, gid_;
};

}  // namespace

Napi::Value MakeNode(const Napi::CallbackInfo& info) {
  auto n = [&](int i) { return info[i].ToNumber().Int32Value(); };
  auto* w = new MakeNodeWorker(info.Env(), info[0].ToString().Utf8Value(), info[1].ToBoolean().Value(), n(2), n(3), n(4), n(5), n(6));
  Napi::Promise p = w->Promise();
  w->Queue();
  return p;
}

Napi::Value MountInto(const Napi::CallbackInfo& info) {
  Napi::Object o = info[3].As<Napi::Object>();
  auto flag = [&](const char* k) { return o.Has(k) && o.Get(k).ToBoolean().Value(); };
  std::string propagation = o.Has("propagation") && o.Get("propagation").IsString() ? o.Get("propagation").ToString().Utf8Value() : "private";
  auto* w = new MountIntoWorker(info.Env(), info[0].ToNumber().Int32Value(), info[1].ToString().Utf8Value(),
                                info[2].ToString().Utf8Value(), flag("dir"), flag("readonly"), flag("idmap"), flag("recursive"),
                                propagation, {static_cast<uid_t>(o.Get("uid").ToNumber().Uint32Value()),
                                              static_cast<gid_t>(o.Get("gid").ToNumber().Uint32Value())});
  Napi::Promise p = w->Promise();
  w->Queue();
  return p;
}

Napi::Value UmountIn(const Napi::CallbackInfo& info) {
  auto* w = new UmountWorker(info.Env(), info[0].ToNumber().Int32Value(), info[1].ToString().Utf8Value(), info[2].ToBoolean().Value());
  Napi::Promise p = w->Promise();
  w->Queue();
  return p;
}

}  // namespace lxq
