/** LXD's miscellaneous group, its linux.* keys: kernel modules and the container's sysctls. */
import { existsSync } from 'node:fs';

import { NotSupported } from '../../core/errors';
import { requireKernelModule } from './host-probe';
import type { OptionSpec } from './spec';

/**
 * The sysctls a container can own: those of its network namespace (net.*) and of its IPC
 * namespace (System V IPC and POSIX message queues), the set Docker and runc accept too. Any
 * other sysctl is the host's own, shared by every container.
 */
const NAMESPACED_SYSCTLS = ['kernel.msgmax', 'kernel.msgmnb', 'kernel.msgmni', 'kernel.sem', 'kernel.shmall', 'kernel.shmmax', 'kernel.shmmni', 'kernel.shm_rmid_forced'];
const NAMESPACED_PREFIXES = ['net.', 'fs.mqueue.'];

/** A sysctl name as /proc/sys spells it with dots; NotSupported when the kernel has no such table. */
export function checkSysctlName(name: string): void {
  if (!/^[a-z0-9_]+(\.[A-Za-z0-9_-]+)+$/.test(name)) throw new Error(`"${name}" is not a sysctl name (dotted, such as net.ipv4.ip_forward)`);
  if (!NAMESPACED_SYSCTLS.includes(name) && !NAMESPACED_PREFIXES.some((p) => name.startsWith(p))) {
    throw new Error(`"${name}" is not a namespaced sysctl: a container may set net.*, fs.mqueue.* and ${NAMESPACED_SYSCTLS.join(', ')}`);
  }
  // The first two levels (net.ipv4, fs.mqueue, kernel.sem) are the kernel's, the same in every namespace.
  const top = name.split('.').slice(0, 2).join('/');
  if (!existsSync(`/proc/sys/${top}`)) throw new NotSupported(`linux.sysctl.${name}: this kernel has no /proc/sys/${top}`);
}

/** A comma list of module names, as linux.kernel_modules takes it. */
export function kernelModules(value: string): string[] {
  return value
    .split(',')
    .map((m) => m.trim())
    .filter((m) => m !== '');
}

export const LINUX_OPTIONS: readonly OptionSpec[] = [
  {
    key: 'linux.kernel_modules',
    type: 'string',
    condition: 'container',
    live: true,
    description:
      'Kernel modules the container needs, comma separated ("overlay,bridge"): loaded on the host (modprobe) before it starts and when set on a running one; ' +
      'NotSupported for a module neither built in nor loadable here.',
    validate: (v, key) => {
      for (const m of kernelModules(v)) {
        if (!/^[A-Za-z0-9_-]{1,56}$/.test(m)) throw new Error(`"${m}" is not a kernel module name (letters, digits, "_" and "-")`);
        requireKernelModule(key ?? 'linux.kernel_modules', m);
      }
    },
  },
  {
    key: 'linux.kernel_modules.load',
    type: 'enum',
    condition: 'container',
    live: false,
    default: 'boot',
    description: '"boot": linux.kernel_modules loaded at start. "ondemand" (loaded when the container asks, through an intercepted finit_module) is refused: not implemented.',
    validate: (v) => {
      if (v === 'ondemand') throw new NotSupported('linux.kernel_modules.load=ondemand needs module loading intercepted for the container (seccomp notify on finit_module), which lxq does not do');
      if (v !== 'boot') throw new Error(`expected "boot" or "ondemand", got ${JSON.stringify(v)}`);
    },
  },
  {
    key: 'linux.sysctl.*',
    type: 'string',
    condition: 'container',
    live: false,
    description: 'A namespaced sysctl of the container, set as it starts (liblxc lxc.sysctl): net.*, fs.mqueue.* and the System V IPC ones (kernel.shmmax, kernel.msgmax…); others are refused.',
    validate: (v, key) => {
      checkSysctlName((key ?? '').slice('linux.sysctl.'.length));
      if (v.trim() === '') throw new Error('a sysctl needs a value');
      // The IPC namespace's sysctls are numbers ("250 32000 32 128" for kernel.sem).
      if (!(key ?? '').startsWith('linux.sysctl.net.') && !/^\d+( \d+)*$/.test(v)) throw new Error(`expected a number (or numbers separated by single spaces), got ${JSON.stringify(v)}`);
    },
  },
];
