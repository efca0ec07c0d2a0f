/**
 * The container's seccomp policy in liblxc's format (version 2), made from security.syscalls.*
 * as LXD makes it (lxd/seccomp: an allow list, or a deny list of the defaults, the compat list
 * and the user's rules, then the intercepted calls' notify rules), or raw.seccomp as given. liblxc loads it at start and on every attach.
 */
import type { InstanceConfig } from '../../config/options';
import { checkSyscallRules } from '../../config/options/security';
import { refuseControlChars } from '../../core/guard';
import { notifyRules } from './intercept';

/** The seccomp policy file liblxc loads, in the instance's directory beside `config`. */
export const SECCOMP_POLICY_FILE = 'seccomp.policy';

/**
 * security.syscalls.deny_default: system calls no container makes, each failing with ENOSYS (38)
 * as if the kernel lacked it: LXD's default deny list (loading and removing kernel modules,
 * kexec, open_by_handle_at, which can reach files outside the container's root), and the kernel
 * keyring's calls, which are not namespaced (as Docker does). `reject_force_umount` makes
 * `umount -f` fail (EACCES) inside.
 */
const DEFAULT_DENIED = ['kexec_load', 'open_by_handle_at', 'init_module', 'finit_module', 'delete_module', 'keyctl', 'add_key', 'request_key'];

/**
 * security.syscalls.deny_compat: LXD's list of compat (32-bit) entry points with a history of
 * bugs, by their i386 names (LXD names the kernel's compat_sys_* handlers, which libseccomp does
 * not resolve; its stub_x32_* ones are x32's, an ABI this kernel family leaves off). The socket
 * calls of LXD's list (recvfrom, sendmsg, recvmsg, recvmmsg, sendmmsg, setsockopt, getsockopt)
 * are left out: i386 multiplexes them through socketcall, and libseccomp's rules for them
 * denied the native x86_64 calls too (liblxc's start then failed sending its fds).
 */
const COMPAT_DENIED = [
  'rt_sigaction', 'ioctl', 'readv', 'writev', 'ptrace', 'rt_sigpending', 'rt_sigtimedwait', 'rt_sigqueueinfo', 'sigaltstack',
  'timer_create', 'mq_notify', 'kexec_load', 'waitid', 'set_robust_list', 'get_robust_list', 'vmsplice', 'move_pages', 'preadv',
  'pwritev', 'rt_tgsigqueueinfo', 'process_vm_readv', 'process_vm_writev', 'io_setup', 'io_submit',
]; // prettier-ignore
const ENOSYS = 38;


/** The policy text for a container's options (checked again here: the file is what liblxc obeys). */
export function seccompPolicy(config: InstanceConfig): string {
  let lines: string[];
  const allow = config['security.syscalls.allow'];
  if (config['raw.seccomp'] !== undefined) {
    lines = config['raw.seccomp'].split('\n');
  } else if (allow !== undefined) {
    lines = ['2', 'allowlist', '[all]', ...checkSyscallRules(allow), ...notifyRules(config)];
  } else {
    const defaults = config['security.syscalls.deny_default'] !== 'false';
    lines = ['2', 'denylist', ...(defaults ? ['reject_force_umount'] : []), '[all]'];
    if (defaults) lines.push(...DEFAULT_DENIED.map((s) => `${s} errno ${ENOSYS}`));
    if (config['security.syscalls.deny_compat'] === 'true') lines.push('[x86]', ...COMPAT_DENIED.map((s) => `${s} errno ${ENOSYS}`), '[all]');
    if (config['security.syscalls.deny'] !== undefined) lines.push(...checkSyscallRules(config['security.syscalls.deny']));
    lines.push(...notifyRules(config));
  }
  return lines.map((l) => refuseControlChars('the seccomp policy', l, { allowTab: true })).join('\n') + '\n';
}
