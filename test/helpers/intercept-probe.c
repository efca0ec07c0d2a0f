/*
 * Makes the system calls lxq's seccomp listener answers (security.syscalls.intercept.*) from
 * inside a container and prints what they returned: "<errno>" for mknod/mknodat/setxattr (0:
 * done), "totalram freeram totalswap freeswap procs uptime" (bytes, seconds) for sysinfo. Built
 * static on the host (`cc -static`) and pushed into the container, whose image has no compiler.
 *   probe mknod PATH MAJOR MINOR [b]   probe mknodat DIR NAME MAJOR MINOR
 *   probe setxattr PATH NAME VALUE     probe sysinfo
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysinfo.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

int main(int argc, char **argv) {
  if (argc >= 5 && strcmp(argv[1], "mknod") == 0) {
    mode_t type = argc > 5 && strcmp(argv[5], "b") == 0 ? S_IFBLK : S_IFCHR;
    int rc = mknod(argv[2], type | 0666, makedev(atoi(argv[3]), atoi(argv[4])));
    printf("%d\n", rc < 0 ? errno : 0);
  } else if (argc == 6 && strcmp(argv[1], "mknodat") == 0) {
    int dir = open(argv[2], O_RDONLY | O_DIRECTORY);
    int rc = mknodat(dir, argv[3], S_IFCHR | 0666, makedev(atoi(argv[4]), atoi(argv[5])));
    printf("%d\n", rc < 0 ? errno : 0);
  } else if (argc == 5 && strcmp(argv[1], "setxattr") == 0) {
    int rc = setxattr(argv[2], argv[3], argv[4], strlen(argv[4]), 0);
    printf("%d\n", rc < 0 ? errno : 0);
  } else if (argc == 2 && strcmp(argv[1], "sysinfo") == 0) {
    struct sysinfo si;
    if (sysinfo(&si) < 0) return 1;
    unsigned long long u = si.mem_unit;
    printf("%llu %llu %llu %llu %u %ld\n", si.totalram * u, si.freeram * u, si.totalswap * u, si.freeswap * u, si.procs, si.uptime);
  } else {
    return 2;
  }
  return 0;
}
