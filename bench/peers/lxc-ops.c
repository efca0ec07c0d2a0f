/* The C floor for the container benchmark: one cycle of liblxc calls on a fresh clone, timed.
 * Usage: lxc-ops SOURCE NAME LXCPATH N
 *   create (clone of the stopped SOURCE), start, N x state, N x exec /bin/true, N x freeze +
 *   unfreeze, stop (forced), start, 200 ms pause, stop (graceful), delete (bench/peers/peer.ts).
 * Prints "op ms" per operation. Build: cc -O2 lxc-ops.c -o lxc-ops -llxc */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <lxc/lxccontainer.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double t0;
static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}
static void begin(void) { t0 = now_ms(); }
static void done(const char *op, int ok) {
  double ms = now_ms() - t0;
  if (!ok) {
    fprintf(stderr, "lxc-ops: %s failed\n", op);
    exit(1);
  }
  printf("%s %.4f\n", op, ms);
}

/* exec as a user would: pipes for stdin/stdout/stderr, read to EOF, reap. */
static int exec_true(struct lxc_container *c) {
  char *cmd[] = {"/bin/true", NULL};
  int in[2], out[2], err[2];
  if (pipe2(in, O_CLOEXEC) || pipe2(out, O_CLOEXEC) || pipe2(err, O_CLOEXEC)) return 0;
  lxc_attach_options_t opts = LXC_ATTACH_OPTIONS_DEFAULT;
  lxc_attach_command_t command = {cmd[0], cmd};
  opts.env_policy = LXC_ATTACH_CLEAR_ENV;
  opts.stdin_fd = in[0];
  opts.stdout_fd = out[1];
  opts.stderr_fd = err[1];
  pid_t pid;
  int rc = c->attach(c, lxc_attach_run_command, &command, &opts, &pid);
  close(in[0]);
  close(out[1]);
  close(err[1]);
  close(in[1]);
  char buf[256];
  while (rc >= 0 && read(out[0], buf, sizeof buf) > 0) {}
  while (rc >= 0 && read(err[0], buf, sizeof buf) > 0) {}
  close(out[0]);
  close(err[0]);
  int status = 0;
  return rc >= 0 && waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

int main(int argc, char **argv) {
  if (argc < 5) return 2;
  const char *lxcpath = argv[3];
  int n = atoi(argv[4]);
  struct lxc_container *src = lxc_container_new(argv[1], lxcpath);
  if (!src) return 1;

  begin();
  struct lxc_container *c = src->clone(src, argv[2], lxcpath, 0, NULL, NULL, 0, NULL);
  done("create", c != NULL);
  lxc_container_put(src);
  c->want_daemonize(c, true);
  c->want_close_all_fds(c, true);

  begin();
  done("start", c->start(c, 0, NULL));
  for (int i = 0; i < n; i++) {
    begin();
    done("state", strcmp(c->state(c), "RUNNING") == 0);
  }
  for (int i = 0; i < n; i++) {
    begin();
    done("exec", exec_true(c));
  }
  for (int i = 0; i < n; i++) {
    begin();
    done("freeze", c->freeze(c));
    begin();
    done("unfreeze", c->unfreeze(c));
  }
  begin();
  done("stop-force", c->stop(c));
  begin();
  done("start", c->start(c, 0, NULL));
  usleep(200 * 1000);  /* busybox init drops a halt signal that comes before its handlers */
  begin();
  done("stop-graceful", c->shutdown(c, 30));
  begin();
  done("delete", c->destroy(c));
  lxc_container_put(c);
  return 0;
}
