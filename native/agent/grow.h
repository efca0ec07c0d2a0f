// The guest's root filesystem grown to its disk at the agent's start: a root disk whose `size` is
// larger than its image's, or grown while the VM was stopped, is a larger /dev/vda under the
// image's ext4. ext4's online resize (EXT4_IOC_RESIZE_FS, what resize2fs does on a mounted
// filesystem, and systemd-growfs): no fork, no resize2fs in the guest. The superblock's block
// count is read first, so that a root already of its disk's size costs a few reads (the ioctl
// would flush the journal at every boot).
#pragma once

#include <fcntl.h>
#include <linux/fs.h>
#include <stdint.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>

namespace lxq::agent {

constexpr unsigned long kExt4Magic = 0xEF53;
#ifndef EXT4_IOC_RESIZE_FS
#define EXT4_IOC_RESIZE_FS _IOW('f', 16, uint64_t)
#endif

// The block device `dev` as a path under /dev (its uevent's DEVNAME), or "".
inline std::string DeviceNode(dev_t dev) {
  char path[64];
  snprintf(path, sizeof path, "/sys/dev/block/%u:%u/uevent", major(dev), minor(dev));
  FILE* f = fopen(path, "re");
  if (!f) return "";
  std::string node;
  char line[256];
  while (fgets(line, sizeof line, f)) {
    if (strncmp(line, "DEVNAME=", 8)) continue;
    node = std::string("/dev/") + (line + 8);
    node.erase(node.find_last_not_of('\n') + 1);
  }
  fclose(f);
  return node;
}

// Grows "/" to the size of its block device when it is ext4 and smaller; says what it did on
// stderr (the console). Returns 0, or the errno of what failed (nothing is changed then).
inline int GrowRoot(void (*log)(const char*, ...)) {
  struct stat st;
  struct statfs sf;
  if (stat("/", &st) || statfs("/", &sf)) return errno;
  if (static_cast<unsigned long>(sf.f_type) != kExt4Magic || major(st.st_dev) == 0) return 0;
  std::string node = DeviceNode(st.st_dev);
  if (node.empty()) return 0;
  int dev = open(node.c_str(), O_RDONLY | O_CLOEXEC);
  if (dev < 0) return errno;
  uint64_t bytes = 0;
  unsigned char sb[1024];
  int err = 0;
  if (ioctl(dev, BLKGETSIZE64, &bytes) || pread(dev, sb, sizeof sb, 1024) != static_cast<ssize_t>(sizeof sb)) err = errno ? errno : EIO;
  close(dev);
  if (err) return err;
  auto le32 = [&](size_t at) { return uint32_t(sb[at]) | uint32_t(sb[at + 1]) << 8 | uint32_t(sb[at + 2]) << 16 | uint32_t(sb[at + 3]) << 24; };
  if ((le32(56) & 0xFFFF) != kExt4Magic) return 0;
  uint64_t block = 1024ULL << le32(24);
  uint64_t count = le32(4);
  if (le32(96) & 0x80) count |= uint64_t(le32(0x150)) << 32;  // INCOMPAT_64BIT: the high half
  uint64_t fits = bytes / block;
  if (fits <= count) return 0;
  int root = open("/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (root < 0) return errno;
  err = ioctl(root, EXT4_IOC_RESIZE_FS, &fits) ? errno : 0;
  close(root);
  if (err) log("cannot grow / from %llu to %llu blocks: %s", (unsigned long long)count, (unsigned long long)fits, strerror(err));
  else log("grew / from %llu to %llu blocks of %llu bytes", (unsigned long long)count, (unsigned long long)fits, (unsigned long long)block);
  return err;
}

}  // namespace lxq::agent
