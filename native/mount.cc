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
#include <libgen.h>
#include <linux/btrfs.h>
#include <sys/ioctl.h>
#include <linux/openat2.h>
#include <sched.h>
#include <sys/fsuid.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <signal.h>
#include <pthread.h>
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
                  bool recursive, std::string propagation, std::pair<uid_t, gid_t> owner, uint64_t attr_set, uint64_t attr_clr)
      : MountWorker(env, "lxq:mountInto"), pid_(pid), source_(std::move(source)), target_(std::move(target)), dir_(dir),
        readonly_(readonly), idmap_(idmap), recursive_(recursive), propagation_(std::move(propagation)), owner_(owner),
        attr_set_(attr_set), attr_clr_(attr_clr) {}

  void Execute() override {
    unsigned int tflags = OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | (recursive_ ? AT_RECURSIVE : 0);
    Fd tree(open_tree(AT_FDCWD, source_.c_str(), tflags));
    if (tree.fd < 0) return Fail("open_tree " + source_, errno);
    struct mount_attr attr = {};
    attr.propagation = Propagation(propagation_);
    // raw.mount.options: per-mount flags (nosuid, nodev, noexec, atime modes…), as mount_setattr takes them.
    attr.attr_set = attr_set_;
    attr.attr_clr = attr_clr_;
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
  uint64_t attr_set_, attr_clr_;
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

// A user namespace with the given uid_map and gid_map lines ("ns host count\n"…; a container's
// range alone is "0 base size"): what an idmapped mount of an image takes for a container that is
// not running yet (its whole map, raw.idmap's extents included). A child is made
// in a new user namespace only to be given the map and have its namespace opened; the fd keeps
// the namespace once the child is gone. The child shares this process's memory (CLONE_VM: no
// copy of the Node heap's page tables) on a small stack of its own, with every signal blocked,
// and does nothing but wait for SIGKILL; exit signal 0, so libuv's SIGCHLD handling never sees it.
int UsernsFor(const std::string& uid_map, const std::string& gid_map, std::string& failed) {
  const size_t stack_size = 64 * 1024;
  void* stack = mmap(nullptr, stack_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
  if (stack == MAP_FAILED) {
    failed = "mmap a stack for the user namespace's child";
    return -1;
  }
  sigset_t all, previous;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &previous);
  pid_t pid = clone([](void*) -> int {
    for (;;) syscall(SYS_pause);
    return 0;
  }, static_cast<char*>(stack) + stack_size, CLONE_NEWUSER | CLONE_VM, nullptr);
  int clone_errno = errno;
  pthread_sigmask(SIG_SETMASK, &previous, nullptr);
  if (pid < 0) {
    munmap(stack, stack_size);
    errno = clone_errno;
    failed = "clone a child in a new user namespace";
    return -1;
  }
  int fd = -1;
  int err = 0;
  for (const char* file : {"uid_map", "gid_map"}) {
    const std::string& map = file[0] == 'u' ? uid_map : gid_map;
    Fd f(open(("/proc/" + std::to_string(pid) + "/" + file).c_str(), O_WRONLY | O_CLOEXEC));
    if (f.fd < 0 || write(f.fd, map.data(), map.size()) != static_cast<ssize_t>(map.size())) {
      err = errno;
      failed = std::string("write the id map ") + file;
      break;
    }
  }
  if (!err) {
    fd = open(("/proc/" + std::to_string(pid) + "/ns/user").c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      err = errno;
      failed = "open the new user namespace";
    }
  }
  kill(pid, SIGKILL);
  while (waitpid(pid, nullptr, __WALL) < 0 && errno == EINTR) {
  }
  munmap(stack, stack_size);
  errno = err;
  return fd;
}

// Characters overlayfs's option string gives a meaning to: a layer path holding one is refused
// rather than escaped (lxq's own paths never hold them).
bool PlainLayerPath(const std::string& p) { return !p.empty() && p.find_first_of(",:\\=") == std::string::npos; }

// Mounts an overlay at `target` from the host's mount namespace: `layers` (read-only, topmost
// first) over `image`, with `upper` and `work` when given (else a read-only overlay). With an
// id map the image is seen through an idmapped, read-only clone (open_tree + mount_setattr
// MOUNT_ATTR_IDMAP): attached at `stage` only for overlayfs to take it as a lower layer (it
// clones its layers privately), then detached again, so no mount is left there.
class OverlayWorker : public MountWorker {
 public:
  OverlayWorker(Napi::Env env, std::string target, std::vector<std::string> layers, std::string image, std::string upper,
                std::string work, std::string stage, std::string uid_map, std::string gid_map)
      : MountWorker(env, "lxq:mountOverlay"), target_(std::move(target)), layers_(std::move(layers)), image_(std::move(image)),
        upper_(std::move(upper)), work_(std::move(work)), stage_(std::move(stage)), uid_map_(std::move(uid_map)), gid_map_(std::move(gid_map)) {}

  void Execute() override {
    for (const std::string* p : {&image_, &stage_}) {
      if (!PlainLayerPath(*p)) return Fail("layer path " + *p + " holds one of , : \\ =", EINVAL);
    }
    for (const std::string& p : layers_) {
      if (!PlainLayerPath(p)) return Fail("layer path " + p + " holds one of , : \\ =", EINVAL);
    }
    if (!upper_.empty() && (!PlainLayerPath(upper_) || !PlainLayerPath(work_))) return Fail("upper or work path holds one of , : \\ =", EINVAL);
    std::string bottom = image_;
    bool staged = false;
    if (!uid_map_.empty()) {
      std::string step;
      Fd userns(UsernsFor(uid_map_, gid_map_, step));
      if (userns.fd < 0) return Fail(step, errno);
      Fd tree(open_tree(AT_FDCWD, image_.c_str(), OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC));
      if (tree.fd < 0) return Fail("open_tree " + image_, errno);
      struct mount_attr attr = {};
      attr.attr_set = MOUNT_ATTR_IDMAP | MOUNT_ATTR_RDONLY;
      attr.userns_fd = static_cast<uint64_t>(userns.fd);
      attr.propagation = MS_PRIVATE;
      if (mount_setattr(tree.fd, "", AT_EMPTY_PATH, &attr, sizeof attr) != 0) return Fail("mount_setattr (idmapped, read-only) " + image_, errno);
      if (move_mount(tree.fd, "", AT_FDCWD, stage_.c_str(), MOVE_MOUNT_F_EMPTY_PATH) != 0) return Fail("move_mount onto " + stage_, errno);
      bottom = stage_;
      staged = true;
    }
    std::string lower;
    for (const std::string& p : layers_) lower += p + ":";
    lower += bottom;
    std::string options = "lowerdir=" + lower;
    if (!upper_.empty()) options += ",upperdir=" + upper_ + ",workdir=" + work_;
    // index=off: an upper directory is copied (snapshots, copies) and swapped (restore); the
    // index would tie it to one lower's inode numbers and refuse it on another mount.
    options += ",index=off";
    int rc = mount("overlay", target_.c_str(), "overlay", 0, options.c_str());
    int err = errno;
    if (staged) umount2(stage_.c_str(), MNT_DETACH | UMOUNT_NOFOLLOW);
    if (rc != 0) return Fail("mount overlay at " + target_ + " (" + options + ")", err);
  }

 private:
  std::string target_;
  std::vector<std::string> layers_;
  std::string image_, upper_, work_, stage_;
  std::string uid_map_, gid_map_;  // empty: the image as stored
};

class UnmountWorker : public MountWorker {
 public:
  UnmountWorker(Napi::Env env, std::string target, bool detach) : MountWorker(env, "lxq:unmount"), target_(std::move(target)), detach_(detach) {}
  void Execute() override {
    if (umount2(target_.c_str(), UMOUNT_NOFOLLOW | (detach_ ? MNT_DETACH : 0)) != 0) return Fail("umount " + target_, errno);
  }

 private:
  std::string target_;
  bool detach_;
};

class BindWorker : public MountWorker {
 public:
  BindWorker(Napi::Env env, std::string source, std::string target, bool readonly)
      : MountWorker(env, "lxq:bindMount"), source_(std::move(source)), target_(std::move(target)), readonly_(readonly) {}
  void Execute() override {
    if (mount(source_.c_str(), target_.c_str(), nullptr, MS_BIND, nullptr) != 0) return Fail("bind " + source_ + " at " + target_, errno);
    if (readonly_ && mount(nullptr, target_.c_str(), nullptr, MS_BIND | MS_REMOUNT | MS_RDONLY, nullptr) != 0) {
      int err = errno;
      umount2(target_.c_str(), MNT_DETACH | UMOUNT_NOFOLLOW);
      return Fail("remount " + target_ + " read-only", err);
    }
  }

 private:
  std::string source_, target_;
  bool readonly_;
};

// BTRFS_IOC_SNAP_CREATE_V2 on the target's parent, as `btrfs subvolume snapshot` does.
class SnapshotWorker : public MountWorker {
 public:
  SnapshotWorker(Napi::Env env, std::string source, std::string target, bool readonly)
      : MountWorker(env, "lxq:btrfsSnapshot"), source_(std::move(source)), target_(std::move(target)), readonly_(readonly) {}
  void Execute() override {
    std::string dir = target_, base = target_;
    Fd src(open(source_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW));
    if (src.fd < 0) return Fail("open " + source_, errno);
    Fd parent(open(dirname(dir.data()), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (parent.fd < 0) return Fail("open the parent of " + target_, errno);
    struct btrfs_ioctl_vol_args_v2 args;
    memset(&args, 0, sizeof(args));
    args.fd = src.fd;
    if (readonly_) args.flags = BTRFS_SUBVOL_RDONLY;
    const char* name = basename(base.data());
    if (strlen(name) >= sizeof(args.name)) return Fail("snapshot name " + std::string(name), ENAMETOOLONG);
    strncpy(args.name, name, sizeof(args.name) - 1);
    if (ioctl(parent.fd, BTRFS_IOC_SNAP_CREATE_V2, &args) != 0) return Fail("snapshot " + source_ + " at " + target_, errno);
  }

 private:
  std::string source_, target_;
  bool readonly_;
};

}  // namespace

Napi::Value BindMount(const Napi::CallbackInfo& info) {
  auto* w = new BindWorker(info.Env(), info[0].ToString().Utf8Value(), info[1].ToString().Utf8Value(), info[2].ToBoolean().Value());
  Napi::Promise p = w->Promise();
  w->Queue();
  return p;
}

Napi::Value BtrfsSnapshot(const Napi::CallbackInfo& info) {
  auto* w = new SnapshotWorker(info.Env(), info[0].ToString().Utf8Value(), info[1].ToString().Utf8Value(), info[2].ToBoolean().Value());
  Napi::Promise p = w->Promise();
  w->Queue();
  return p;
}

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
                                              static_cast<gid_t>(o.Get("gid").ToNumber().Uint32Value())},
                                o.Has("attrSet") ? o.Get("attrSet").ToNumber().Uint32Value() : 0,
                                o.Has("attrClear") ? o.Get("attrClear").ToNumber().Uint32Value() : 0);
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

Napi::Value MountOverlay(const Napi::CallbackInfo& info) {
  Napi::Object o = info[0].As<Napi::Object>();
  auto str = [&](const char* k) { return o.Has(k) && o.Get(k).IsString() ? o.Get(k).ToString().Utf8Value() : std::string(); };
  std::vector<std::string> layers;
  if (o.Has("layers") && o.Get("layers").IsArray()) {
    Napi::Array a = o.Get("layers").As<Napi::Array>();
    for (uint32_t i = 0; i < a.Length(); i++) layers.push_back(a.Get(i).ToString().Utf8Value());
  }
  // idmap: { base, size } (one extent of each kind), or { uid, gid }: arrays of { ns, host, count }.
  std::string maps[2];
  if (o.Has("idmap") && o.Get("idmap").IsObject()) {
    Napi::Object m = o.Get("idmap").As<Napi::Object>();
    const char* kinds[2] = {"uid", "gid"};
    for (int k = 0; k < 2; k++) {
      if (!m.Has(kinds[k]) || !m.Get(kinds[k]).IsArray()) {
        maps[k] = "0 " + std::to_string(m.Get("base").ToNumber().Uint32Value()) + " " + std::to_string(m.Get("size").ToNumber().Uint32Value()) + "\n";
        continue;
      }
      Napi::Array a = m.Get(kinds[k]).As<Napi::Array>();
      for (uint32_t i = 0; i < a.Length(); i++) {
        Napi::Object e = a.Get(i).As<Napi::Object>();
        maps[k] += std::to_string(e.Get("ns").ToNumber().Uint32Value()) + " " + std::to_string(e.Get("host").ToNumber().Uint32Value()) + " " +
                   std::to_string(e.Get("count").ToNumber().Uint32Value()) + "\n";
      }
    }
  }
  auto* w = new OverlayWorker(info.Env(), str("target"), std::move(layers), str("image"), str("upper"), str("work"), str("stage"), maps[0], maps[1]);
  Napi::Promise p = w->Promise();
  w->Queue();
  return p;
}

Napi::Value Unmount(const Napi::CallbackInfo& info) {
  auto* w = new UnmountWorker(info.Env(), info[0].ToString().Utf8Value(), info[1].ToBoolean().Value());
  Napi::Promise p = w->Promise();
  w->Queue();
  return p;
}

}  // namespace lxq
