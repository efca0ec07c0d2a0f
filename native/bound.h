/*
 * Helpers of lxq's detached programs (lxq_stamper, lxq_intercept) that live as long as another
 * process: the one that starts them writes "PID STARTTICKS\n" on their stdin once that process
 * runs (a container's monitor, QEMU), and they hold a pidfd on it. The start ticks tell a
 * reused pid from the process meant.
 */
#ifndef LXQ_BOUND_H
#define LXQ_BOUND_H

#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

/* The process's start in clock ticks since boot (field 22 of /proc/PID/stat), 0 if gone. */
static unsigned long long start_ticks(pid_t pid) {
  char path[64], buf[1024];
  snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (n <= 0) return 0;
  buf[n] = 0;
  char *p = strrchr(buf, ')');
  if (!p) return 0;
  p += 2; /* field 3 */
  for (int field = 3; field < 22 && p; field++) {
    p = strchr(p, ' ');
    if (p) p++;
  }
  return p ? strtoull(p, NULL, 10) : 0;
}

/* A pidfd on the process named by a "PID STARTTICKS" line, or -1 if it is not (any more) the process meant. */
static int bound_pidfd(const char *line, pid_t *out) {
  char *end;
  long pid = strtol(line, &end, 10);
  unsigned long long ticks = strtoull(end, NULL, 10);
  if (pid <= 0 || pid > INT_MAX) return -1;
  int fd = (int)syscall(SYS_pidfd_open, (pid_t)pid, 0);
  if (fd < 0) return -1;
  if (start_ticks((pid_t)pid) != ticks) { /* the pid was reused: the process is gone */
    close(fd);
    return -1;
  }
  if (out) *out = (pid_t)pid;
  return fd;
}

#endif
