/*
 * Makes each system call a container's seccomp policy denies, with harmless arguments that
 * create nothing (a key type that does not exist, a key that is not there, no module, no
 * handle), and prints "<name> <result> <errno>" per call: the test reads ENOSYS (38) for each.
 * Built static on the host (`cc -static`) and pushed into the container, whose image has no
 * compiler.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

static void report(const char *name, long rc) {
  printf("%s %ld %d\n", name, rc, rc < 0 ? errno : 0);
}

int main(void) {
  /* keyctl(KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING, 0) */
  errno = 0;
  report("keyctl", syscall(SYS_keyctl, 0, -3, 0)); /* no keyring is made: create = 0 */
  errno = 0;
  report("add_key", syscall(SYS_add_key, "lxq_no_such_key_type", "lxq-probe", "x", 1, -3));
  errno = 0;
  report("request_key", syscall(SYS_request_key, "user", "lxq-probe-absent", NULL, 0));
  errno = 0;
  report("kexec_load", syscall(SYS_kexec_load, 0, 0, NULL, 0));
  errno = 0;
  report("init_module", syscall(SYS_init_module, NULL, 0, ""));
  errno = 0;
  report("finit_module", syscall(SYS_finit_module, -1, "", 0));
  errno = 0;
  report("delete_module", syscall(SYS_delete_module, "lxq_no_such_module", 0));
  errno = 0;
  report("open_by_handle_at", syscall(SYS_open_by_handle_at, -1, NULL, 0));
  /* A call the policy allows, for contrast. */
  errno = 0;
  report("getpid", syscall(SYS_getpid));
  return 0;
}
