/* The C floor for exec: liblxc attach of /bin/true with pipes, reaped by pid, N times.
 * Usage: attach NAME LXCPATH N [BALLAST_MIB] (touched heap, to see what a big caller pays).
 * Prints one duration in ms per line. Build: cc -O2 attach.c -o attach -llxc */
#define _GNU_SOURCE
#include <errno.h>
#include <lxc/lxccontainer.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <fcntl.h>

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

int main(int argc, char **argv) {
  if (argc < 4) return 2;
  size_t big = argc > 4 ? (size_t)atol(argv[4]) << 20 : 0; char *ballast = big ? malloc(big) : NULL; for (size_t i = 0; i < big; i += 4096) ballast[i] = 1;
  struct lxc_container *c = lxc_container_new(argv[1], argv[2]);
  int n = atoi(argv[3]);
  char *cmd[] = {"/bin/true", NULL};
  for (int i = 0; i < n; i++) {
    int in[2], out[2], err[2];
    pipe2(in, O_CLOEXEC); pipe2(out, O_CLOEXEC); pipe2(err, O_CLOEXEC);
    double t = now_ms();
    lxc_attach_options_t opts = LXC_ATTACH_OPTIONS_DEFAULT;
    lxc_attach_command_t command = {cmd[0], cmd};
    opts.env_policy = LXC_ATTACH_CLEAR_ENV;
    opts.stdin_fd = in[0]; opts.stdout_fd = out[1]; opts.stderr_fd = err[1];
    pid_t pid;
    if (c->attach(c, lxc_attach_run_command, &command, &opts, &pid) < 0) return 1;
    close(in[0]); close(out[1]); close(err[1]); close(in[1]);
    char buf[256];
    while (read(out[0], buf, sizeof buf) > 0) {}
    while (read(err[0], buf, sizeof buf) > 0) {}
    int status;
    waitpid(pid, &status, 0);
    printf("%.4f\n", now_ms() - t);
    close(out[0]); close(err[0]);
  }
  lxc_container_put(c);
  return 0;
}
