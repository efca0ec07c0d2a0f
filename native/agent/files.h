// The lxq agent's file operations, the guest's state and interface settings (PROTOCOL.md,
// "Files and state"). Each function returns 0 or an errno; none keeps state between calls.
//
// Every path is resolved from the agent's root directory with openat2(RESOLVE_IN_ROOT |
// RESOLVE_NO_MAGICLINKS): ".." and absolute symlinks stop at that root, and /proc's magic links
// are refused. An operation on a final component (create, rename, mkdir, unlink, lstat) acts on
// the name through its opened parent (the *at calls), never following it.
#pragma once

#include <dirent.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <linux/if_link.h>
#include <linux/openat2.h>
#include <net/if.h>
#include <netinet/in.h>
#include <netpacket/packet.h>
#include <arpa/inet.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>

#include "protocol.h"

namespace lxq::agent {

// The root every path is resolved in (O_PATH): the guest's "/", or `--root DIR` (tests on the host).
inline int& RootFd() {
  static int fd = -1;
  return fd;
}

// Opens `rel` inside the root. Without openat2 (kernels before 5.6) a plain open from "/": the
// root is then the kernel's own "/" of the agent, which ".." and absolute links cannot leave
// either; only the magic links of /proc are not refused.
inline int OpenInRoot(const std::string& rel, int flags, mode_t mode = 0) {
  open_how how = {};
  how.flags = static_cast<uint64_t>(flags | O_CLOEXEC);
  how.mode = (flags & O_CREAT) ? mode : 0;
  how.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS;
  const char* p = rel.empty() ? "." : rel.c_str();
  long fd = syscall(SYS_openat2, RootFd(), p, &how, sizeof how);
  if (fd < 0 && errno == ENOSYS) fd = openat(RootFd(), p[0] == '/' ? p + 1 : p, flags | O_CLOEXEC, mode);
  return static_cast<int>(fd);
}

// Splits `rel` (no leading "/", normalised by the host) into its parent, opened O_PATH, and its
// final name. EINVAL for the root itself or a final "." or "..".
inline int OpenParent(const std::string& rel, int& dirfd, std::string& name) {
  size_t slash = rel.find_last_of('/');
  name = slash == std::string::npos ? rel : rel.substr(slash + 1);
  if (name.empty() || name == "." || name == "..") return EINVAL;
  dirfd = OpenInRoot(slash == std::string::npos ? "" : rel.substr(0, slash), O_PATH | O_DIRECTORY);
  return dirfd < 0 ? errno : 0;
}

struct Fd {
  int fd = -1;
  ~Fd() {
    if (fd >= 0) close(fd);
  }
};

// The 40-byte stat of RESULT: u32 mode, uid, gid, 0; u64 size, mtime seconds; u32 nanoseconds, 0.
inline std::string StatRecord(const struct stat& st) {
  std::string out;
  PutU32(out, st.st_mode);
  PutU32(out, st.st_uid);
  PutU32(out, st.st_gid);
  PutU32(out, 0);
  PutU64(out, static_cast<uint64_t>(st.st_size));
  PutU64(out, static_cast<uint64_t>(st.st_mtim.tv_sec));
  PutU32(out, static_cast<uint32_t>(st.st_mtim.tv_nsec));
  PutU32(out, 0);
  return out;
}

inline int StatPath(const std::string& rel, std::string& out) {
  struct stat st;
  if (rel.empty()) {
    if (fstat(RootFd(), &st)) return errno;
  } else {
    Fd dir;
    std::string name;
    if (int err = OpenParent(rel, dir.fd, name)) return err;
    if (fstatat(dir.fd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW)) return errno;
  }
  out = StatRecord(st);
  return 0;
}

inline char TypeLetter(unsigned char d_type) {
  return d_type == DT_REG ? 'f' : d_type == DT_DIR ? 'd' : d_type == DT_LNK ? 'l' : 'o';
}

// Every entry but "." and "..": a type letter (f, d, l, o) and the name, NUL-terminated.
inline int ListDir(const std::string& rel, std::string& out) {
  int fd = OpenInRoot(rel, O_RDONLY | O_DIRECTORY);
  if (fd < 0) return errno;
  DIR* dir = fdopendir(fd);
  if (!dir) {
    int err = errno;
    close(fd);
    return err;
  }
  while (dirent* e = readdir(dir)) {
    if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
    unsigned char type = e->d_type;
    if (type == DT_UNKNOWN) {
      struct stat st;
      if (fstatat(dirfd(dir), e->d_name, &st, AT_SYMLINK_NOFOLLOW)) continue;
      type = S_ISREG(st.st_mode) ? DT_REG : S_ISDIR(st.st_mode) ? DT_DIR : S_ISLNK(st.st_mode) ? DT_LNK : DT_UNKNOWN;
    }
    out.push_back(TypeLetter(type));
    out.append(e->d_name);
    out.push_back('\0');
  }
  closedir(dir);
  return 0;
}

// Creates `name` in `dirfd` owned and moded as asked (after chown, which clears set-id bits;
// the mode is set whole, whatever the umask).
inline int MakeDir(int dirfd, const std::string& name, mode_t mode, uid_t uid, gid_t gid) {
  if (mkdirat(dirfd, name.c_str(), 0700)) return errno;
  if (fchownat(dirfd, name.c_str(), uid, gid, AT_SYMLINK_NOFOLLOW) || fchmodat(dirfd, name.c_str(), mode, 0)) {
    int err = errno;
    unlinkat(dirfd, name.c_str(), AT_REMOVEDIR);
    return err;
  }
  return 0;
}

// mkdir; with `parents`, each missing directory on the way (an existing one, or a symlink to one
// inside the root, is gone through; anything else is ENOTDIR).
inline int MkdirPath(const std::string& rel, mode_t mode, uid_t uid, gid_t gid, bool parents) {
  if (!parents) {
    Fd dir;
    std::string name;
    if (int err = OpenParent(rel, dir.fd, name)) return err;
    return MakeDir(dir.fd, name, mode, uid, gid);
  }
  for (size_t end = 0; end != std::string::npos;) {
    end = rel.find('/', end + 1);
    std::string sub = rel.substr(0, end);
    if (sub.empty() || sub.back() == '/') continue;
    Fd existing;
    existing.fd = OpenInRoot(sub, O_PATH | O_DIRECTORY);
    if (existing.fd >= 0) continue;
    if (errno != ENOENT) return errno;
    Fd dir;
    std::string name;
    if (int err = OpenParent(sub, dir.fd, name)) return err;
    int err = MakeDir(dir.fd, name, mode, uid, gid);
    if (err && err != EEXIST) return err;
  }
  return 0;
}

// Removes `name` in `parent` and, for a directory, everything in it: each level is opened with
// O_NOFOLLOW through its parent's fd, so a directory swapped for a symlink mid-walk fails the
// walk instead of leading it elsewhere.
inline int RemoveTree(int parent, const char* name) {
  struct stat st;
  if (fstatat(parent, name, &st, AT_SYMLINK_NOFOLLOW)) return errno;
  if (!S_ISDIR(st.st_mode)) return unlinkat(parent, name, 0) ? errno : 0;
  int fd = openat(parent, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return errno;
  DIR* dir = fdopendir(fd);
  if (!dir) {
    int err = errno;
    close(fd);
    return err;
  }
  int err = 0;
  while (dirent* e = readdir(dir)) {
    if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
    if ((err = RemoveTree(dirfd(dir), e->d_name))) break;
  }
  closedir(dir);
  if (err) return err;
  return unlinkat(parent, name, AT_REMOVEDIR) ? errno : 0;
}

inline int RemovePath(const std::string& rel, bool recursive) {
  Fd dir;
  std::string name;
  if (int err = OpenParent(rel, dir.fd, name)) return err;
  if (recursive) return RemoveTree(dir.fd, name.c_str());
  struct stat st;
  if (fstatat(dir.fd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW)) return errno;
  return unlinkat(dir.fd, name.c_str(), S_ISDIR(st.st_mode) ? AT_REMOVEDIR : 0) ? errno : 0;
}

inline int SymlinkPath(const std::string& rel, const std::string& target, uid_t uid, gid_t gid) {
  Fd dir;
  std::string name;
  if (int err = OpenParent(rel, dir.fd, name)) return err;
  if (symlinkat(target.c_str(), dir.fd, name.c_str())) return errno;
  if (fchownat(dir.fd, name.c_str(), uid, gid, AT_SYMLINK_NOFOLLOW)) {
    int err = errno;
    unlinkat(dir.fd, name.c_str(), 0);
    return err;
  }
  return 0;
}

// Sets the times of `rel` ("" the root), not following a final symlink. `times`: four decimal
// numbers, the access and modification times' seconds and nanoseconds.
inline int UtimesPath(const std::string& rel, const std::string& times) {
  timespec ts[2];
  long long v[4];
  char rest;
  if (sscanf(times.c_str(), "%lld %lld %lld %lld%c", &v[0], &v[1], &v[2], &v[3], &rest) != 4) return EINVAL;
  if (v[1] < 0 || v[1] > 999999999 || v[3] < 0 || v[3] > 999999999) return EINVAL;
  ts[0] = {static_cast<time_t>(v[0]), static_cast<long>(v[1])};
  ts[1] = {static_cast<time_t>(v[2]), static_cast<long>(v[3])};
  if (rel.empty()) {
    Fd root;  // futimens needs more than the root's O_PATH fd
    root.fd = OpenInRoot("", O_RDONLY | O_DIRECTORY);
    return root.fd < 0 || futimens(root.fd, ts) ? errno : 0;
  }
  Fd dir;
  std::string name;
  if (int err = OpenParent(rel, dir.fd, name)) return err;
  return utimensat(dir.fd, name.c_str(), ts, AT_SYMLINK_NOFOLLOW) ? errno : 0;
}

inline int ReadlinkPath(const std::string& rel, std::string& out) {
  Fd dir;
  std::string name;
  if (int err = OpenParent(rel, dir.fd, name)) return err;
  char buf[4096];
  ssize_t n = readlinkat(dir.fd, name.c_str(), buf, sizeof buf);
  if (n < 0) return errno;
  out.assign(buf, static_cast<size_t>(n));
  return 0;
}

inline std::string ReadSmall(const char* path) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return {};
  char buf[8192];
  ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  return n > 0 ? std::string(buf, static_cast<size_t>(n)) : std::string();
}

// "<field>: N kB" of /proc/meminfo, in bytes.
inline unsigned long long MeminfoBytes(const std::string& meminfo, const char* field) {
  size_t at = meminfo.find(field);
  if (at == std::string::npos) return 0;
  return strtoull(meminfo.c_str() + at + strlen(field) + 1, nullptr, 10) * 1024;
}

inline int PrefixOf(const sockaddr* mask) {
  int bits = 0;
  const unsigned char* p = nullptr;
  size_t n = 0;
  if (mask && mask->sa_family == AF_INET) p = reinterpret_cast<const unsigned char*>(&reinterpret_cast<const sockaddr_in*>(mask)->sin_addr), n = 4;
  if (mask && mask->sa_family == AF_INET6) p = reinterpret_cast<const unsigned char*>(&reinterpret_cast<const sockaddr_in6*>(mask)->sin6_addr), n = 16;
  for (size_t i = 0; i < n; i++) bits += __builtin_popcount(p[i]);
  return bits;
}

// The guest's state as lines of text (PROTOCOL.md): processes, memory, disk, interfaces and their
// addresses.
inline std::string GuestState() {
  char line[512];
  std::string out;
  unsigned processes = 0;
  if (DIR* proc = opendir("/proc")) {
    while (dirent* e = readdir(proc))
      if (e->d_name[0] >= '1' && e->d_name[0] <= '9') processes++;
    closedir(proc);
  }
  snprintf(line, sizeof line, "processes %u\n", processes);
  out += line;
  std::string meminfo = ReadSmall("/proc/meminfo");
  snprintf(line, sizeof line, "memory %llu %llu\n", MeminfoBytes(meminfo, "MemTotal:"), MeminfoBytes(meminfo, "MemAvailable:"));
  out += line;
  struct statvfs vfs;
  if (statvfs("/", &vfs) == 0) {
    snprintf(line, sizeof line, "disk %llu %llu\n", static_cast<unsigned long long>(vfs.f_blocks) * vfs.f_frsize,
             static_cast<unsigned long long>(vfs.f_bavail) * vfs.f_frsize);
    out += line;
  }
  ifaddrs* list = nullptr;
  if (getifaddrs(&list) != 0) return out;
  for (ifaddrs* i = list; i; i = i->ifa_next) {
    if (!i->ifa_addr || i->ifa_addr->sa_family != AF_PACKET || !i->ifa_data) continue;
    const auto* ll = reinterpret_cast<const sockaddr_ll*>(i->ifa_addr);
    char mac[18] = "";
    if (ll->sll_halen == 6)
      snprintf(mac, sizeof mac, "%02x:%02x:%02x:%02x:%02x:%02x", ll->sll_addr[0], ll->sll_addr[1], ll->sll_addr[2], ll->sll_addr[3], ll->sll_addr[4], ll->sll_addr[5]);
    const auto* stats = static_cast<const rtnl_link_stats*>(i->ifa_data);
    std::string mtu = ReadSmall(("/sys/class/net/" + std::string(i->ifa_name) + "/mtu").c_str());
    snprintf(line, sizeof line, "if %s %s %lu %u %u %u %u\n", i->ifa_name, mac[0] ? mac : "-", strtoul(mtu.c_str(), nullptr, 10), stats->rx_bytes,
             stats->tx_bytes, stats->rx_packets, stats->tx_packets);
    out += line;
  }
  for (ifaddrs* i = list; i; i = i->ifa_next) {
    if (!i->ifa_addr || (i->ifa_addr->sa_family != AF_INET && i->ifa_addr->sa_family != AF_INET6)) continue;
    char addr[INET6_ADDRSTRLEN] = "";
    const void* a = i->ifa_addr->sa_family == AF_INET ? static_cast<const void*>(&reinterpret_cast<sockaddr_in*>(i->ifa_addr)->sin_addr)
                                                      : static_cast<const void*>(&reinterpret_cast<sockaddr_in6*>(i->ifa_addr)->sin6_addr);
    inet_ntop(i->ifa_addr->sa_family, a, addr, sizeof addr);
    snprintf(line, sizeof line, "addr %s %s %s %d\n", i->ifa_name, i->ifa_addr->sa_family == AF_INET ? "inet" : "inet6", addr, PrefixOf(i->ifa_netmask));
    out += line;
  }
  freeifaddrs(list);
  if (out.size() > kMaxPayload) out.resize(kMaxPayload);
  return out;
}

// The name of the interface whose MAC is `mac` ("" if none).
inline std::string InterfaceWithMac(const std::string& mac) {
  ifaddrs* list = nullptr;
  if (getifaddrs(&list) != 0) return {};
  std::string current;
  for (ifaddrs* i = list; i; i = i->ifa_next) {
    if (!i->ifa_addr || i->ifa_addr->sa_family != AF_PACKET) continue;
    const auto* ll = reinterpret_cast<const sockaddr_ll*>(i->ifa_addr);
    char buf[18];
    if (ll->sll_halen != 6) continue;
    snprintf(buf, sizeof buf, "%02x:%02x:%02x:%02x:%02x:%02x", ll->sll_addr[0], ll->sll_addr[1], ll->sll_addr[2], ll->sll_addr[3], ll->sll_addr[4], ll->sll_addr[5]);
    if (strcasecmp(buf, mac.c_str()) == 0) current = i->ifa_name;
  }
  freeifaddrs(list);
  return current;
}

// The interface whose MAC is `mac` gets the name `name` (if not empty) and MTU `mtu` (if not 0),
// as LXD's agent does for agent.nic_config. A renamed interface is taken down and brought back up
// if it was up.
inline int ConfigureNic(const std::string& mac, const std::string& name, uint32_t mtu) {
  if (name.size() >= IFNAMSIZ) return EINVAL;
  std::string current = InterfaceWithMac(mac);
  if (current.empty()) return ENODEV;
  Fd sock;
  sock.fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (sock.fd < 0) return errno;
  ifreq req = {};
  if (mtu) {
    snprintf(req.ifr_name, IFNAMSIZ, "%s", current.c_str());
    req.ifr_mtu = static_cast<int>(mtu);
    if (ioctl(sock.fd, SIOCSIFMTU, &req)) return errno;
  }
  if (name.empty() || name == current) return 0;
  snprintf(req.ifr_name, IFNAMSIZ, "%s", current.c_str());
  if (ioctl(sock.fd, SIOCGIFFLAGS, &req)) return errno;
  short flags = req.ifr_flags;
  if (flags & IFF_UP) {
    req.ifr_flags = static_cast<short>(flags & ~IFF_UP);
    if (ioctl(sock.fd, SIOCSIFFLAGS, &req)) return errno;
  }
  snprintf(req.ifr_newname, IFNAMSIZ, "%s", name.c_str());
  int err = ioctl(sock.fd, SIOCSIFNAME, &req) ? errno : 0;
  snprintf(req.ifr_name, IFNAMSIZ, "%s", err ? current.c_str() : name.c_str());
  if (flags & IFF_UP) {
    req.ifr_flags = flags;
    ioctl(sock.fd, SIOCSIFFLAGS, &req);
  }
  return err;
}

}  // namespace lxq::agent
