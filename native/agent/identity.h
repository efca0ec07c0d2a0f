// The IDENTITY request (PROTOCOL.md): a VM started from a saved, booted state of its image is a
// clone of the VM that was saved (its machine id, hostname, clock, random pool and MACs); the
// host sends the instance's own, and this renews each in the guest. Lines of the argument, each
// optional, applied in this order: `entropy HEX` (mixed into the kernel's pool, then the CRNG
// reseeded from it, so nothing random the guest makes from here on repeats the saved one's),
// `time SECONDS NANOSECONDS` (CLOCK_REALTIME), `machine-id HEX32` (/etc/machine-id rewritten in
// place: systemd bind-mounts /run/machine-id over it), `hostname NAME` (the kernel's, and
// /etc/hostname when there is one), `mac OLD NEW` (the interface whose address is OLD gets NEW,
// taken down and up again so that its DHCP client starts over).
#pragma once

#include <fcntl.h>
#include <linux/random.h>
#include <net/if.h>
#include <net/if_arp.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "files.h"

namespace lxq::agent {

inline bool ParseHex(const std::string& hex, std::vector<unsigned char>& out) {
  if (hex.empty() || hex.size() % 2) return false;
  out.clear();
  for (size_t i = 0; i < hex.size(); i += 2) {
    char byte[3] = {hex[i], hex[i + 1], 0};
    char* end = nullptr;
    unsigned long v = strtoul(byte, &end, 16);
    if (*end || !isxdigit(static_cast<unsigned char>(hex[i]))) return false;
    out.push_back(static_cast<unsigned char>(v));
  }
  return true;
}

inline bool ParseMac(const std::string& text, unsigned char mac[6]) {
  unsigned v[6];
  char tail;
  if (sscanf(text.c_str(), "%2x:%2x:%2x:%2x:%2x:%2x%c", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &tail) != 6) return false;
  for (int i = 0; i < 6; i++) mac[i] = static_cast<unsigned char>(v[i]);
  return true;
}

// Credits the bytes to the input pool and reseeds the CRNG from it at once (without
// RNDRESEEDCRNG, a CRNG already initialised would keep the saved state's key until its next
// scheduled reseed).
inline int AddEntropy(const std::vector<unsigned char>& bytes) {
  if (bytes.size() < 16 || bytes.size() > 512) return EINVAL;
  Fd fd;
  fd.fd = open("/dev/random", O_WRONLY | O_CLOEXEC);
  if (fd.fd < 0) return errno;
  std::vector<unsigned char> buf(sizeof(rand_pool_info) + bytes.size());
  auto* info = reinterpret_cast<rand_pool_info*>(buf.data());
  info->entropy_count = static_cast<int>(bytes.size() * 8);
  info->buf_size = static_cast<int>(bytes.size());
  memcpy(info->buf, bytes.data(), bytes.size());
  if (ioctl(fd.fd, RNDADDENTROPY, info)) return errno;
  return ioctl(fd.fd, RNDRESEEDCRNG) ? errno : 0;
}

// Replaces a small file's content in place (never following a final symlink): /etc/machine-id
// may be a mount point, which a rename could not replace.
inline int RewriteFile(const char* file, const std::string& text, bool create) {
  Fd fd;
  fd.fd = open(file, O_WRONLY | O_TRUNC | O_NOFOLLOW | O_CLOEXEC | (create ? O_CREAT : 0), 0444);
  if (fd.fd < 0) return errno;
  if (write(fd.fd, text.data(), text.size()) != static_cast<ssize_t>(text.size())) return errno ? errno : EIO;
  return fsync(fd.fd) ? errno : 0;
}

inline int SetMachineId(const std::string& id) {
  if (id.size() != 32 || id.find_first_not_of("0123456789abcdef") != std::string::npos) return EINVAL;
  return RewriteFile("/etc/machine-id", id + "\n", true);
}

inline int SetHostname(const std::string& name) {
  if (name.empty() || name.size() > 63 || name.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.") != std::string::npos) return EINVAL;
  if (sethostname(name.data(), name.size())) return errno;
  int err = RewriteFile("/etc/hostname", name + "\n", false);
  return err == ENOENT ? 0 : err;
}

inline int SetClock(const std::string& args) {
  char* end = nullptr;
  long long sec = strtoll(args.c_str(), &end, 10);
  long nsec = end && *end == ' ' ? strtol(end + 1, &end, 10) : -1;
  if (!end || *end || sec <= 0 || nsec < 0 || nsec >= 1000000000L) return EINVAL;
  timespec ts = {static_cast<time_t>(sec), nsec};
  return clock_settime(CLOCK_REALTIME, &ts) ? errno : 0;
}

// The interface whose address is `from` gets `to`; taken down first when up (a carrier change
// restarts its DHCP client with the new address) and brought up again.
inline int SetMac(const std::string& args) {
  size_t space = args.find(' ');
  unsigned char from[6], to[6];  // `from` only checked: the lookup compares the text
  if (space == std::string::npos || !ParseMac(args.substr(0, space), from) || !ParseMac(args.substr(space + 1), to)) return EINVAL;
  std::string name = InterfaceWithMac(args.substr(0, space));
  if (name.empty()) return ENODEV;
  Fd sock;
  sock.fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (sock.fd < 0) return errno;
  ifreq req = {};
  snprintf(req.ifr_name, IFNAMSIZ, "%s", name.c_str());
  if (ioctl(sock.fd, SIOCGIFFLAGS, &req)) return errno;
  short flags = req.ifr_flags;
  if (flags & IFF_UP) {
    req.ifr_flags = static_cast<short>(flags & ~IFF_UP);
    if (ioctl(sock.fd, SIOCSIFFLAGS, &req)) return errno;
  }
  req.ifr_hwaddr.sa_family = ARPHRD_ETHER;
  memcpy(req.ifr_hwaddr.sa_data, to, 6);
  int err = ioctl(sock.fd, SIOCSIFHWADDR, &req) ? errno : 0;
  if (flags & IFF_UP) {
    req.ifr_flags = flags;
    if (ioctl(sock.fd, SIOCSIFFLAGS, &req) && !err) err = errno;
  }
  return err;
}

// Applies the IDENTITY lines (above); the first that fails stops it, with its errno.
inline int RenewIdentity(const std::string& text, std::string& failed) {
  static const char* const kOrder[] = {"entropy", "time", "machine-id", "hostname", "mac"};
  std::vector<std::pair<std::string, std::string>> lines;
  for (size_t at = 0; at < text.size();) {
    size_t end = text.find('\n', at);
    if (end == std::string::npos) end = text.size();
    std::string line = text.substr(at, end - at);
    at = end + 1;
    if (line.empty()) continue;
    size_t space = line.find(' ');
    if (space == std::string::npos) return failed = line, EINVAL;
    lines.emplace_back(line.substr(0, space), line.substr(space + 1));
  }
  for (const auto& [k, v] : lines) {  // an unknown line changes nothing
    bool known = false;
    for (const char* key : kOrder) known = known || k == key;
    if (!known) return failed = k, EINVAL;
  }
  for (const char* key : kOrder) {
    for (const auto& [k, v] : lines) {
      if (k != key) continue;
      std::vector<unsigned char> bytes;
      int err = k == "entropy" ? (ParseHex(v, bytes) ? AddEntropy(bytes) : EINVAL)
                : k == "time"  ? SetClock(v)
                : k == "machine-id" ? SetMachineId(v)
                : k == "hostname"   ? SetHostname(v)
                                    : SetMac(v);
      if (err) return failed = k, err;
    }
  }
  return 0;
}

}  // namespace lxq::agent
