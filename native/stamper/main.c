/*
 * lxq_stamper LOG INDEX: gives an instance's console log the times its bytes were written, for
 * `console.log({ since })`. liblxc's monitor (a container) and QEMU (a VM) write the log and
 * know nothing of times; this watches the log's directory with inotify and, at each wake-up,
 * appends a mark (the log's size, then the time) to INDEX. Every byte before a mark's offset was
 * written before that mark's time, so a byte's time is at most one wake-up late, never early.
 *
 * INDEX: a 16-byte header ("lxqstmp1", the log's inode), then 16-byte marks (offset, ns since
 * the epoch, CLOCK_REALTIME). A mark whose offset has GAP_FLAG set is the first of a session
 * that found bytes nobody stamped (written while no stamper watched): their times are unknown.
 * END_FLAG marks a stamper's last look, once its writer ended: nothing was written after it
 * until the next start, whose stamper watches before its writer runs.
 * The log made anew (another inode) or cut shorter starts the index over.
 *
 * Started detached by the process that starts the instance, before the start, so that the
 * first lines are stamped; that process then writes "PID STARTTICKS\n" on stdin: the log's
 * writer (the container's monitor, QEMU). The stamper exits when the writer does (a pidfd),
 * or at "cancel" or EOF on stdin before a pid (the start failed, or its process died); then,
 * if the log is as it found it (the start wrote nothing), it leaves INDEX as it found it too
 * (removed if it made it), so that a refused start changes nothing. It holds an exclusive flock
 * on INDEX while it runs: one stamper per log, and a sign that one runs.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "../bound.h"

#define GAP_FLAG (1ULL << 63)
#define END_FLAG (1ULL << 62)
#define FLAGS (GAP_FLAG | END_FLAG)
static const char MAGIC[8] = {'l', 'x', 'q', 's', 't', 'm', 'p', '1'};

static const char *log_path;
static const char *log_name;
static int index_fd = -1;
static uint64_t index_ino;      /* the inode the index is about (0: none yet) */
static uint64_t last_offset;    /* the offset of the last mark written */
static int last_ended;          /* the last mark is an END_FLAG one */
static off_t index_size;        /* where the next mark goes */
static int session_started;     /* the first mark of this run is written */
static int index_made;          /* this run made INDEX */
static off_t index_found;       /* INDEX's size when this run found it */
static struct stat log_found;   /* the log at the first look (st_ino 0: absent) */

static int64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int write_all(const void *buf, size_t len, off_t at) {
  return pwrite(index_fd, buf, len, at) == (ssize_t)len ? 0 : -1;
}

/* Reads the index left by an earlier stamper: its inode and last mark, if it is whole. */
static void load_index(void) {
  struct stat st;
  unsigned char head[16];
  uint64_t mark[2];
  if (fstat(index_fd, &st) < 0 || st.st_size < 16 || pread(index_fd, head, 16, 0) != 16 || memcmp(head, MAGIC, 8) != 0) {
    index_size = 0;
    return;
  }
  memcpy(&index_ino, head + 8, 8);
  index_size = 16 + (st.st_size - 16) / 16 * 16; /* a torn last mark is overwritten */
  last_offset = 0;
  if (index_size > 16 && pread(index_fd, mark, 16, index_size - 16) == 16) {
    last_offset = mark[0] & ~FLAGS;
    last_ended = (mark[0] & END_FLAG) != 0;
  }
}

/* Starts the index over for the log with inode `ino`, its first mark (offset, t). */
static void reset_index(uint64_t ino, uint64_t offset, int64_t t) {
  unsigned char buf[32];
  uint64_t mark[2] = {offset, (uint64_t)t};
  memcpy(buf, MAGIC, 8);
  memcpy(buf + 8, &ino, 8);
  memcpy(buf + 16, mark, 16);
  if (ftruncate(index_fd, 0) < 0 || write_all(buf, 32, 0) < 0) return;
  index_ino = ino;
  index_size = 32;
  last_offset = offset & ~FLAGS;
  last_ended = 0;
}

/*
 * One look at the log: a mark if it grew, a new index if it is another file or shorter. The
 * first look of a run flags what it finds unstamped as a gap, unless the last run ended cleanly
 * (its writer gone: nothing wrote since, but the writer this stamper watched from its start).
 * `end`: the writer is gone, this is the last look.
 */
static void stamp(int end) {
  struct stat st;
  if (stat(log_path, &st) < 0) return; /* not made yet (a VM's log appears with QEMU) */
  int64_t t = now_ns();                /* after the stat: what it saw was written before t */
  uint64_t size = (uint64_t)st.st_size;
  int first = !session_started;
  session_started = 1;
  if ((uint64_t)st.st_ino != index_ino || size < last_offset || index_size < 16) {
    reset_index((uint64_t)st.st_ino, size | (first && size > 0 ? GAP_FLAG : 0) | (end ? END_FLAG : 0), t);
    last_ended = end;
    return;
  }
  if (size == last_offset && !first && !end) return;
  uint64_t mark[2] = {size | (first && size > last_offset && !last_ended ? GAP_FLAG : 0) | (end ? END_FLAG : 0), (uint64_t)t};
  if (write_all(mark, 16, index_size) < 0) return;
  index_size += 16;
  last_offset = size;
  last_ended = end;
}

/* The log as it is now (st_ino 0: absent). */
static struct stat log_now(void) {
  struct stat st;
  if (stat(log_path, &st) < 0) memset(&st, 0, sizeof st);
  return st;
}

/* After a start that never ran its writer: INDEX back as it was found if the log is too. */
static void undo_if_unwritten(const char *index_path) {
  struct stat st = log_now();
  if (st.st_ino != log_found.st_ino || st.st_size != log_found.st_size) {
    stamp(0);
    return;
  }
  if (index_made)
    unlink(index_path); /* under the lock: no other stamper of this log can be waiting (starts are serialized) */
  else if (ftruncate(index_fd, index_found) < 0)
    stamp(0);
}

/* Whether the inotify events read concern the log (or were lost, which may hide it). */
static int events_concern_log(int ifd) {
  char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
  int hit = 0;
  for (;;) {
    ssize_t n = read(ifd, buf, sizeof buf);
    if (n <= 0) return hit;
    for (char *p = buf; p < buf + n;) {
      struct inotify_event *e = (struct inotify_event *)p;
      if ((e->mask & IN_Q_OVERFLOW) || (e->len && strcmp(e->name, log_name) == 0)) hit = 1;
      p += sizeof *e + e->len;
    }
  }
}

/* Takes the index's lock, waiting up to 10 s for a stamper of the previous run to end. */
static int lock_index(void) {
  for (int i = 0; i < 500; i++) {
    if (flock(index_fd, LOCK_EX | LOCK_NB) == 0) return 0;
    if (errno != EWOULDBLOCK && errno != EINTR) return -1;
    usleep(20000);
  }
  return -1;
}

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: lxq_stamper LOG INDEX (the writer's \"PID STARTTICKS\" on stdin)\n");
    return 2;
  }
  /* The caller (lxq's spawnDetached) waits for this first process, which ends at once: the
     stamper goes on in a child nobody has to reap. */
  pid_t child = fork();
  if (child < 0) return 1;
  if (child > 0) _exit(0);
  signal(SIGPIPE, SIG_IGN);
  log_path = argv[1];
  log_name = strrchr(log_path, '/') ? strrchr(log_path, '/') + 1 : log_path;
  char dir[PATH_MAX];
  snprintf(dir, sizeof dir, "%.*s", (int)(log_name - log_path), log_path);
  if (!dir[0]) strcpy(dir, ".");
  int ifd = inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
  /* Watched first: what the writer writes while the last run's stamper ends is seen. */
  if (ifd < 0 || inotify_add_watch(ifd, dir, IN_MODIFY | IN_CREATE | IN_MOVED_TO | IN_CLOSE_WRITE) < 0) return 1;
  index_fd = open(argv[2], O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  index_made = index_fd >= 0;
  if (!index_made) index_fd = open(argv[2], O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (index_fd < 0 || lock_index() < 0 || chdir("/") < 0) return 1;
  struct stat ist;
  index_found = fstat(index_fd, &ist) == 0 ? ist.st_size : 0;
  log_found = log_now();
  load_index();
  stamp(0);
  struct pollfd fds[2] = {{.fd = ifd, .events = POLLIN}, {.fd = 0, .events = POLLIN}};
  int writer = -1;
  char line[64];
  size_t got = 0;
  for (;;) {
    if (poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      break;
    }
    if ((fds[0].revents & POLLIN) && events_concern_log(ifd)) stamp(0);
    if (!fds[1].revents) continue;
    if (writer >= 0) break; /* the writer exited */
    ssize_t n = read(0, line + got, sizeof line - 1 - got);
    if (n <= 0) break; /* EOF before a pid: the start failed or its process died */
    got += (size_t)n;
    line[got] = 0;
    if (!strchr(line, '\n')) {
      if (got == sizeof line - 1) break;
      continue;
    }
    if ((writer = bound_pidfd(line, NULL)) < 0) break; /* "cancel", or the writer already gone */
    close(0);
    fds[1].fd = writer;
  }
  if (writer >= 0)
    stamp(1); /* what the writer wrote last, and its end */
  else
    undo_if_unwritten(argv[2]);
  return 0;
}
