/*
 * lxq_intercept SOCKET LOCK CALLS: the seccomp notify listener of one container, answering the
 * system calls its policy marks `notify` (security.syscalls.intercept.*) as LXD's daemon does
 * (lxd/seccomp/seccomp.go). liblxc's monitor holds the container's notify fds and forwards each
 * notification here (lxc.seccomp.notify.proxy = unix:SOCKET): a seccomp_notify_proxy_msg, the
 * seccomp_notif and a response to fill, with three fds (the caller's /proc/PID directory, its
 * /proc/PID/mem, the notify fd); the answer goes back the same way and the monitor gives it to
 * the kernel. CALLS: a comma list of mknod, setxattr, sysinfo (the calls answered; any other
 * notification is let through to the kernel, SECCOMP_USER_NOTIF_FLAG_CONTINUE).
 *
 * - mknod/mknodat of the device nodes every container has (LXD's list, and ptmx) are made by a
 *   child in the caller's mount namespace, root and cwd (or dirfd), with its fsuid/fsgid, groups,
 *   umask and effective capabilities, if the caller has CAP_MKNOD in the container's user
 *   namespace; any other node (and a whiteout, which the kernel allows) goes to the kernel, which
 *   answers with the call's own error.
 * - setxattr of "trusted.overlay.opaque" = "y" (what LXD allows: overlayfs in a container) is made
 *   likewise if the caller has CAP_SYS_ADMIN there; any other goes to the kernel.
 * - sysinfo is answered with the container's memory and swap limits and use (its cgroup), its
 *   process count and its uptime (its init's age); the load averages are the host's.
 *
 * Lifetime: started detached before the container starts; the first process binds SOCKET
 * (holding LOCK, an exclusive flock: one listener per container) and exits, so the socket
 * listens once the starter's spawn returns. The listener then reads "PID STARTTICKS\n" of the
 * monitor on stdin and exits when the monitor does (a pidfd), or at EOF before a pid (the start
 * failed). Any lxq process that finds none running (killed) starts another and gives it the
 * monitor at once: the monitor reconnects at its next notification.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/audit.h>
#include <linux/capability.h>
#include <linux/seccomp.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/fsuid.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/sysinfo.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#include "../bound.h"

/* liblxc's message (src/lxc/lxcseccomp.h), followed by seccomp_notif, seccomp_notif_resp, cookie. */
struct proxy_msg {
  uint64_t reserved;
  pid_t monitor_pid;
  pid_t init_pid;
  struct seccomp_notif_sizes sizes;
  uint64_t cookie_len;
};

#define NR_MKNOD 133
#define NR_MKNODAT 259
#define NR_SETXATTR 188
#define NR_SYSINFO 99
#define MAX_CONNS 8
#define CONTINUE (-1000) /* a handler's answer: let the kernel run the call */

static int want_mknod, want_setxattr, want_sysinfo;
static pid_t monitor = 0;

/* ---- the caller ---- */

struct creds {
  uid_t fsuid;
  gid_t fsgid;
  uint64_t cap_eff;
  mode_t umask;
  gid_t groups[64];
  int ngroups;
};

/* The caller's fs ids, effective capabilities, umask and groups from /proc/PID/status. */
static int read_creds(int proc_fd, struct creds *c) {
  char buf[8192];
  int fd = openat(proc_fd, "status", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (n <= 0) return -1;
  buf[n] = 0;
  int found = 0;
  c->umask = 022;
  c->ngroups = 0;
  for (char *line = buf; line && *line; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL) {
    unsigned long a, b, cc, d;
    if (sscanf(line, "Uid: %lu %lu %lu %lu", &a, &b, &cc, &d) == 4) c->fsuid = (uid_t)d, found |= 1;
    else if (sscanf(line, "Gid: %lu %lu %lu %lu", &a, &b, &cc, &d) == 4) c->fsgid = (gid_t)d, found |= 2;
    else if (strncmp(line, "CapEff:", 7) == 0) c->cap_eff = strtoull(line + 7, NULL, 16), found |= 4;
    else if (strncmp(line, "Umask:", 6) == 0) c->umask = (mode_t)strtoul(line + 6, NULL, 8);
    else if (strncmp(line, "Groups:", 7) == 0) {
      char *p = line + 7, *end;
      while (c->ngroups < 64) {
        unsigned long g = strtoul(p, &end, 10);
        if (end == p || (*end != ' ' && *end != '\n' && *end)) break;
        c->groups[c->ngroups++] = (gid_t)g;
        p = end;
      }
    }
  }
  return found == 7 ? 0 : -1;
}

/* Whether the caller is in the container's first user namespace and has `cap` there (as LXD asks). */
static int capable_in_container(int proc_fd, pid_t init_pid, const struct creds *c, int cap) {
  struct stat mine, init;
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/ns/user", (int)init_pid);
  if (fstatat(proc_fd, "ns/user", &mine, 0) < 0 || stat(path, &init) < 0) return 0;
  if (mine.st_ino != init.st_ino || mine.st_dev != init.st_dev) return 0;
  return (c->cap_eff >> cap) & 1;
}

/* A NUL-terminated string of the caller's memory at `addr` (read page by page: the next may be unmapped). */
static int read_string(int mem_fd, uint64_t addr, char *buf, size_t max) {
  size_t got = 0;
  while (got < max) {
    size_t page = 4096 - ((addr + got) & 4095);
    size_t want = page < max - got ? page : max - got;
    ssize_t n = pread(mem_fd, buf + got, want, (off_t)(addr + got));
    if (n <= 0) return -1;
    if (memchr(buf + got, 0, (size_t)n)) return 0;
    got += (size_t)n;
  }
  return -1;
}

/* The notification is still pending (the caller has not died, its pid not been reused). */
static int still_valid(int notify_fd, uint64_t id) {
  return ioctl(notify_fd, SECCOMP_IOCTL_NOTIF_ID_VALID, &id) == 0;
}

/*
 * Runs op(arg) in a child that has entered the caller's mount namespace, root and directory
 * (its cwd, or the directory of its fd `dirfd`), with its fs ids, groups, umask and effective
 * capabilities. The answer: 0 or -errno.
 */
static int as_caller(int proc_fd, int dirfd, const struct creds *c, int (*op)(void *), void *arg) {
  pid_t child = fork();
  if (child < 0) return -EAGAIN;
  if (child == 0) {
    char fdpath[32];
    if (dirfd == AT_FDCWD) snprintf(fdpath, sizeof fdpath, "cwd");
    else snprintf(fdpath, sizeof fdpath, "fd/%d", dirfd);
    int dir = openat(proc_fd, fdpath, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (dir < 0) _exit(dirfd != AT_FDCWD && (errno == ENOTDIR || errno == ENOENT) ? (errno == ENOTDIR ? ENOTDIR : EBADF) : EPERM);
    int root = openat(proc_fd, "root", O_PATH | O_CLOEXEC);
    int mnt = openat(proc_fd, "ns/mnt", O_RDONLY | O_CLOEXEC);
    if (root < 0 || mnt < 0) _exit(EPERM);
    if (setns(mnt, CLONE_NEWNS) < 0 || fchdir(root) < 0 || chroot(".") < 0 || fchdir(dir) < 0) _exit(EPERM);
    umask(c->umask);
    if (setgroups((size_t)c->ngroups, c->groups) < 0) _exit(EPERM);
    setfsgid(c->fsgid);
    setfsuid(c->fsuid);
    /* setfsuid cleared the fs capabilities: the caller's own effective set is raised (as LXD does). */
    struct __user_cap_header_struct h = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct d[2];
    if (syscall(SYS_capget, &h, d) < 0) _exit(EPERM);
    for (int i = 0; i < 2; i++) { /* what this process may have of them (a host may bound it) */
      d[i].effective = d[i].permitted &= (uint32_t)(c->cap_eff >> (32 * i));
      d[i].inheritable = 0;
    }
    if (syscall(SYS_capset, &h, d) < 0) _exit(EPERM);
    int rc = op(arg);
    _exit(rc == 0 ? 0 : (errno > 0 && errno < 256 ? errno : EPERM));
  }
  int status;
  while (waitpid(child, &status, 0) < 0)
    if (errno != EINTR) return -EPERM;
  if (!WIFEXITED(status)) return -EPERM;
  return -WEXITSTATUS(status);
}

/* ---- mknod ---- */

/* LXD's list (lxd/seccomp: device_allowed), with ptmx: the nodes every container has. */
static int device_allowed(mode_t mode, dev_t dev) {
  static const unsigned nodes[][2] = {{1, 3}, {1, 5}, {1, 7}, {1, 8}, {1, 9}, {5, 0}, {5, 1}, {5, 2}};
  if ((mode & S_IFMT) != S_IFCHR) return 0;
  for (size_t i = 0; i < sizeof nodes / sizeof nodes[0]; i++)
    if (major(dev) == nodes[i][0] && minor(dev) == nodes[i][1]) return 1;
  return 0;
}

struct mknod_args {
  const char *path;
  mode_t mode;
  dev_t dev;
};

static int do_mknod(void *p) {
  struct mknod_args *a = p;
  char dir[PATH_MAX];
  snprintf(dir, sizeof dir, "%s", a->path);
  char *slash = strrchr(dir, '/');
  if (!slash) strcpy(dir, ".");
  else if (slash == dir) dir[1] = 0;
  else *slash = 0;
  struct statvfs st;
  if (statvfs(dir, &st) < 0) return -1;
  if (st.f_flag & ST_NODEV) { /* a nodev mount: the node would be useless, as the kernel says */
    errno = EPERM;
    return -1;
  }
  return mknod(a->path, a->mode, a->dev);
}

static int handle_mknod(const struct seccomp_notif *req, pid_t init_pid, int proc_fd, int mem_fd, int notify_fd) {
  int at = req->data.nr == NR_MKNODAT;
  int dirfd = at ? (int)req->data.args[0] : AT_FDCWD;
  mode_t mode = (mode_t)req->data.args[at + 1];
  dev_t dev = (dev_t)req->data.args[at + 2];
  if (at && dirfd != AT_FDCWD && dirfd < 0) return CONTINUE;
  if (!device_allowed(mode, dev)) return CONTINUE; /* the kernel's own EPERM; a whiteout (0:0) it allows */
  struct creds c;
  char path[PATH_MAX];
  if (read_creds(proc_fd, &c) < 0 || read_string(mem_fd, req->data.args[at], path, sizeof path) < 0) return CONTINUE;
  if (!capable_in_container(proc_fd, init_pid, &c, CAP_MKNOD)) return CONTINUE;
  if (!still_valid(notify_fd, req->id)) return -ENOENT;
  struct mknod_args a = {path, mode, dev};
  return as_caller(proc_fd, dirfd, &c, do_mknod, &a);
}

/* ---- setxattr ---- */

struct setxattr_args {
  const char *path;
  int flags;
};

static int do_setxattr(void *p) {
  struct setxattr_args *a = p;
  return setxattr(a->path, "trusted.overlay.opaque", "y", 1, a->flags);
}

static int handle_setxattr(const struct seccomp_notif *req, pid_t init_pid, int proc_fd, int mem_fd, int notify_fd) {
  char name[256], value, path[PATH_MAX];
  if (req->data.args[3] != 1 || read_string(mem_fd, req->data.args[1], name, sizeof name) < 0) return CONTINUE;
  if (strcmp(name, "trusted.overlay.opaque") != 0) return CONTINUE;
  if (pread(mem_fd, &value, 1, (off_t)req->data.args[2]) != 1 || value != 'y') return CONTINUE;
  struct creds c;
  if (read_creds(proc_fd, &c) < 0 || read_string(mem_fd, req->data.args[0], path, sizeof path) < 0) return CONTINUE;
  if (!capable_in_container(proc_fd, init_pid, &c, CAP_SYS_ADMIN)) return -EPERM;
  if (!still_valid(notify_fd, req->id)) return -ENOENT;
  struct setxattr_args a = {path, (int)req->data.args[4]};
  return as_caller(proc_fd, AT_FDCWD, &c, do_setxattr, &a);
}

/* ---- sysinfo ---- */

/* A number from a cgroup file (the first word; "max" is UINT64_MAX), or `fallback`. */
static uint64_t cg_number(const char *dir, const char *file, uint64_t fallback) {
  char path[PATH_MAX + 64], buf[64];
  snprintf(path, sizeof path, "%s/%s", dir, file);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return fallback;
  ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (n <= 0) return fallback;
  buf[n] = 0;
  if (strncmp(buf, "max", 3) == 0) return UINT64_MAX;
  char *end;
  unsigned long long v = strtoull(buf, &end, 10);
  return end == buf ? fallback : (uint64_t)v;
}

/* A key's value in a cgroup's memory.stat, or 0. */
static uint64_t cg_stat(const char *dir, const char *key) {
  char path[PATH_MAX + 64], buf[8192];
  snprintf(path, sizeof path, "%s/memory.stat", dir);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (n <= 0) return 0;
  buf[n] = 0;
  size_t len = strlen(key);
  for (char *line = buf; line; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL)
    if (strncmp(line, key, len) == 0 && line[len] == ' ') return strtoull(line + len + 1, NULL, 10);
  return 0;
}

/* Where `controller`'s hierarchy is mounted (v1), or the unified tree's mount (controller NULL). */
static int cg_mount(const char *controller, char *out, size_t size) {
  FILE *f = fopen("/proc/self/mounts", "re");
  if (!f) return -1;
  char line[4096];
  int found = -1;
  while (found < 0 && fgets(line, sizeof line, f)) {
    char mnt[PATH_MAX], type[64], opts[1024];
    if (sscanf(line, "%*s %4095s %63s %1023s", mnt, type, opts) != 3) continue;
    if (controller ? strcmp(type, "cgroup") != 0 : strcmp(type, "cgroup2") != 0) continue;
    if (controller) {
      int has = 0;
      for (char *o = strtok(opts, ","); o && !has; o = strtok(NULL, ",")) has = strcmp(o, controller) == 0;
      if (!has) continue;
    }
    snprintf(out, size, "%s", mnt);
    found = 0;
  }
  fclose(f);
  return found;
}

/* The host directory of `pid`'s cgroup for `controller` (v1 if it has a hierarchy, else the unified tree); v1 set to which. */
static int cg_dir(pid_t pid, const char *controller, char *out, size_t size, int *v1) {
  char path[64], line[4096], mnt[PATH_MAX], v1path[PATH_MAX] = "", v2path[PATH_MAX] = "";
  snprintf(path, sizeof path, "/proc/%d/cgroup", (int)pid);
  FILE *f = fopen(path, "re");
  if (!f) return -1;
  while (fgets(line, sizeof line, f)) {
    line[strcspn(line, "\n")] = 0;
    char *c1 = strchr(line, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
    if (!c2) continue;
    *c2 = 0;
    if (c1[1] == 0) snprintf(v2path, sizeof v2path, "%s", c2 + 1);
    for (char *o = strtok(c1 + 1, ","); o; o = strtok(NULL, ","))
      if (strcmp(o, controller) == 0) snprintf(v1path, sizeof v1path, "%s", c2 + 1);
  }
  fclose(f);
  *v1 = v1path[0] && cg_mount(controller, mnt, sizeof mnt) == 0;
  if (!*v1 && (!v2path[0] || cg_mount(NULL, mnt, sizeof mnt) < 0)) return -1;
  snprintf(out, size, "%s%s", mnt, *v1 ? v1path : v2path);
  return 0;
}

static uint64_t min64(uint64_t a, uint64_t b) {
  return a < b ? a : b;
}

/* The container's figures in a struct sysinfo (LXD's HandleSysinfoSyscall): its limits bounded by the host's. */
static int container_sysinfo(pid_t init_pid, struct sysinfo *out) {
  struct sysinfo host;
  char mem[PATH_MAX], pids[PATH_MAX];
  int v1, pv1;
  if (sysinfo(&host) < 0 || cg_dir(init_pid, "memory", mem, sizeof mem, &v1) < 0) return -1;
  uint64_t unit = host.mem_unit ? host.mem_unit : 1;
  uint64_t host_ram = (uint64_t)host.totalram * unit, host_swap = (uint64_t)host.totalswap * unit;
  uint64_t limit = min64(cg_number(mem, v1 ? "memory.limit_in_bytes" : "memory.max", UINT64_MAX), host_ram);
  uint64_t usage = min64(cg_number(mem, v1 ? "memory.usage_in_bytes" : "memory.current", 0), limit);
  uint64_t cache = cg_stat(mem, v1 ? "total_cache" : "file"), shmem = cg_stat(mem, v1 ? "total_shmem" : "shmem");
  uint64_t swap_total = host_swap, swap_used = 0;
  if (v1) {
    uint64_t memsw = cg_number(mem, "memory.memsw.limit_in_bytes", 0);
    if (memsw) { /* swap accounting on: the swap the limit leaves besides memory */
      swap_total = min64(memsw > limit ? memsw - limit : 0, host_swap);
      uint64_t memsw_use = cg_number(mem, "memory.memsw.usage_in_bytes", usage);
      swap_used = min64(memsw_use > usage ? memsw_use - usage : 0, swap_total);
    }
  } else {
    swap_total = min64(cg_number(mem, "memory.swap.max", host_swap), host_swap);
    swap_used = min64(cg_number(mem, "memory.swap.current", 0), swap_total);
  }
  memset(out, 0, sizeof *out);
  memcpy(out->loads, host.loads, sizeof host.loads);
  out->mem_unit = 1;
  out->totalram = limit;
  out->freeram = limit - usage;
  out->bufferram = min64(cache, usage);
  out->sharedram = shmem;
  out->totalswap = swap_total;
  out->freeswap = swap_total - swap_used;
  uint64_t procs = 0;
  if (cg_dir(init_pid, "pids", pids, sizeof pids, &pv1) == 0) procs = cg_number(pids, "pids.current", 0);
  out->procs = (unsigned short)min64(procs ? procs : 1, 65535);
  unsigned long long ticks = start_ticks(init_pid);
  long hz = sysconf(_SC_CLK_TCK);
  long age = hz > 0 ? (long)(ticks / (unsigned long long)hz) : 0;
  out->uptime = host.uptime > age ? host.uptime - age : 0;
  return 0;
}

static int handle_sysinfo(const struct seccomp_notif *req, pid_t init_pid, int mem_fd, int notify_fd) {
  struct sysinfo si;
  if (container_sysinfo(init_pid, &si) < 0) return CONTINUE; /* the host's figures, as LXD when it cannot tell */
  if (!still_valid(notify_fd, req->id)) return -ENOENT;
  if (pwrite(mem_fd, &si, sizeof si, (off_t)req->data.args[0]) != (ssize_t)sizeof si) return -EFAULT;
  return 0;
}

/* ---- the proxy protocol ---- */

static int answer(const struct proxy_msg *msg, const struct seccomp_notif *req, int fds[3]) {
  if (req->data.arch != AUDIT_ARCH_X86_64) return CONTINUE;
  switch (req->data.nr) {
  case NR_MKNOD:
  case NR_MKNODAT:
    return want_mknod ? handle_mknod(req, msg->init_pid, fds[0], fds[1], fds[2]) : CONTINUE;
  case NR_SETXATTR:
    return want_setxattr ? handle_setxattr(req, msg->init_pid, fds[0], fds[1], fds[2]) : CONTINUE;
  case NR_SYSINFO:
    return want_sysinfo ? handle_sysinfo(req, msg->init_pid, fds[1], fds[2]) : CONTINUE;
  }
  return CONTINUE;
}

/* One notification from the monitor on `conn`, answered. -1: the connection is gone. */
static int serve(int conn) {
  struct proxy_msg msg;
  struct seccomp_notif req;
  struct seccomp_notif_resp resp;
  char cookie[256];
  struct iovec iov[4] = {{&msg, sizeof msg}, {&req, sizeof req}, {&resp, sizeof resp}, {cookie, sizeof cookie}};
  char control[CMSG_SPACE(3 * sizeof(int))];
  struct msghdr mh = {.msg_iov = iov, .msg_iovlen = 4, .msg_control = control, .msg_controllen = sizeof control};
  ssize_t n = recvmsg(conn, &mh, MSG_CMSG_CLOEXEC);
  if (n <= 0) return n < 0 && errno == EINTR ? 0 : -1;
  int fds[3] = {-1, -1, -1};
  struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
  if (cm && cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS) {
    size_t count = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    memcpy(fds, CMSG_DATA(cm), (count < 3 ? count : 3) * sizeof(int));
    for (size_t i = 3; i < count; i++) close(((int *)CMSG_DATA(cm))[i]);
  }
  size_t base = sizeof msg + sizeof req + sizeof resp;
  int ok = (size_t)n >= base && fds[2] >= 0 && msg.sizes.seccomp_notif == sizeof req && msg.sizes.seccomp_notif_resp == sizeof resp;
  if (!ok) {
    /* A short answer: the monitor gives the kernel its default one (ENOSYS) at once. */
    struct msghdr empty = {0};
    sendmsg(conn, &empty, MSG_NOSIGNAL);
  } else {
    int rc = answer(&msg, &req, fds);
    memset(&resp, 0, sizeof resp);
    resp.id = req.id;
    if (rc == CONTINUE) resp.flags = SECCOMP_USER_NOTIF_FLAG_CONTINUE;
    else resp.error = rc;
    msg.cookie_len = 0;
    struct msghdr out = {.msg_iov = iov, .msg_iovlen = 3};
    while (sendmsg(conn, &out, MSG_NOSIGNAL) < 0 && errno == EINTR) {
    }
  }
  for (int i = 0; i < 3; i++)
    if (fds[i] >= 0) close(fds[i]);
  return 0;
}

/* Only root (liblxc's monitor) may talk to the listener; once bound, only that monitor. */
static int peer_allowed(int conn) {
  struct ucred cred;
  socklen_t len = sizeof cred;
  if (getsockopt(conn, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0 || cred.uid != 0) return 0;
  return monitor == 0 || cred.pid == monitor;
}

/* Takes LOCK, waiting up to 2 s for the listener of a previous run (its monitor just ended) to end. */
static int take_lock(const char *path) {
  int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) return -1;
  for (int i = 0; i < 100; i++) {
    if (flock(fd, LOCK_EX | LOCK_NB) == 0) return fd;
    if (errno != EWOULDBLOCK && errno != EINTR) break;
    usleep(20000);
  }
  close(fd);
  return -1;
}

int main(int argc, char **argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: lxq_intercept SOCKET LOCK CALLS (mknod,setxattr,sysinfo; the monitor's \"PID STARTTICKS\" on stdin)\n");
    return 2;
  }
  syscall(SYS_close_range, 3, ~0U, 0); /* what the starter leaked to it (a pipe of Node's): not kept for the container's life */
  const char *sock_path = argv[1];
  char calls[256];
  snprintf(calls, sizeof calls, "%s", argv[3]);
  for (char *c = strtok(calls, ","); c; c = strtok(NULL, ",")) {
    if (strcmp(c, "mknod") == 0) want_mknod = 1;
    else if (strcmp(c, "setxattr") == 0) want_setxattr = 1;
    else if (strcmp(c, "sysinfo") == 0) want_sysinfo = 1;
    else return 2;
  }
  struct sockaddr_un addr = {.sun_family = AF_UNIX};
  if (strlen(sock_path) >= sizeof addr.sun_path) return 2;
  strcpy(addr.sun_path, sock_path);
  if (take_lock(argv[2]) < 0) return 1;
  /* Bound and listening before this first process exits: the starter's spawn returns then. */
  int lfd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  unlink(sock_path);
  mode_t old = umask(077);
  if (lfd < 0 || bind(lfd, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(lfd, 16) < 0) return 1;
  umask(old);
  pid_t child = fork();
  if (child < 0) return 1;
  if (child > 0) _exit(0);
  signal(SIGPIPE, SIG_IGN);
  if (chdir("/") < 0) return 1;
  struct pollfd fds[2 + MAX_CONNS];
  fds[0] = (struct pollfd){.fd = 0, .events = POLLIN};
  fds[1] = (struct pollfd){.fd = lfd, .events = POLLIN};
  int nconns = 0, bound = 0;
  char line[64];
  size_t got = 0;
  for (;;) {
    if (poll(fds, (nfds_t)(2 + nconns), -1) < 0) {
      if (errno == EINTR) continue;
      break;
    }
    if (fds[0].revents) {
      if (bound) break; /* the monitor exited: the container is gone */
      ssize_t n = read(0, line + got, sizeof line - 1 - got);
      if (n <= 0) break; /* EOF before a pid: the start failed or its process died */
      got += (size_t)n;
      line[got] = 0;
      if (strchr(line, '\n')) {
        int pfd = bound_pidfd(line, &monitor);
        if (pfd < 0) break;
        close(0);
        fds[0].fd = pfd;
        bound = 1;
      } else if (got == sizeof line - 1) {
        break;
      }
    }
    if (fds[1].revents & POLLIN) {
      int conn = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
      if (conn >= 0 && !peer_allowed(conn)) {
        close(conn);
      } else if (conn >= 0) {
        if (nconns == MAX_CONNS) { /* the oldest is a monitor's connection it has replaced */
          close(fds[2].fd);
          memmove(&fds[2], &fds[3], (MAX_CONNS - 1) * sizeof fds[0]);
          nconns--;
        }
        fds[2 + nconns++] = (struct pollfd){.fd = conn, .events = POLLIN};
      }
    }
    for (int i = 0; i < nconns; i++) {
      if (!fds[2 + i].revents) continue;
      if ((fds[2 + i].revents & POLLIN) && serve(fds[2 + i].fd) == 0) continue;
      close(fds[2 + i].fd);
      memmove(&fds[2 + i], &fds[3 + i], (size_t)(nconns - i - 1) * sizeof fds[0]);
      nconns--;
      i--;
    }
  }
  unlink(sock_path); /* still ours: the lock is held until this process ends */
  return 0;
}
