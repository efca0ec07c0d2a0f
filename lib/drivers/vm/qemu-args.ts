/**
 * QEMU's command line for booting a VM image, and the VM's own disk (a qcow2 overlay over the
 * image's base disk).
 */
import * as path from 'node:path';

import { InvalidArgument } from '../../core/errors';
import { qemuOptionValue, refuseControlChars } from '../../core/guard';
import { run } from '../../images/build-tools';
import { LXQ_AGENT_PORT_NAME } from '../../images/lxq-agent-binary';
import type { VmImage } from '../../images/meta';
import { QGA_PORT_NAME } from '../../images/vm-guest';

/** The lxq agent port's device id, as QMP's VSERPORT_CHANGE names it. */
export const LXQ_AGENT_DEVICE_ID = 'lxqagent';

export interface QemuArgsOptions {
  /** The VM's own qcow2 overlay over `img.disk`. */
  disk: string;
  qmpSocket: string;
  /** A second QMP monitor, for other processes' status reads (lib/drivers/vm/vm.ts). */
  qmpQuerySocket?: string;
  qgaSocket: string;
  /** The lxq agent's channel (lib/drivers/vm/lxq-agent.ts); the port is there whether or not the image runs the agent. */
  lxqAgentSocket?: string;
  serialLog: string;
  /** The serial port's chardev socket, for interactive consoles; the log is written all the same. */
  serialSocket?: string;
  memoryMiB: number;
  cpus: number;
  accel: 'tcg' | 'kvm';
  /** Extra kernel command line words, appended to the image's. */
  appendCmdline?: string;
  /**
   * A virtio NIC on QEMU's user-mode network (slirp). Off by default: slirp is optional in QEMU
   * builds (check `qemu-system-x86_64 -netdev help`) and the image does not configure it.
   */
  userNet?: boolean;
}

/**
 * QEMU's argv (without the binary) for booting `img` with the VM's overlay `opts.disk`.
 * Machine `q35`: on `pc` (i440FX) the guest spends ~0.3-0.6 s under TCG in ACPI AML routing the
 * legacy PCI interrupt links of the virtio devices (q35's links are fixed), and `pci=noacpi`,
 * which avoids that, leaves this Debian kernel without local APIC, MSI or SMP (it has no MP-table
 * support). `microvm` stalls here.
 */
export function qemuArgsForImage(img: VmImage, opts: QemuArgsOptions): string[] {
  if (!Number.isInteger(opts.cpus) || opts.cpus < 1) throw new InvalidArgument(`cpus must be a positive integer, got ${opts.cpus}`);
  if (!Number.isInteger(opts.memoryMiB) || opts.memoryMiB < 64) {
    throw new InvalidArgument(`memoryMiB must be an integer of at least 64, got ${opts.memoryMiB}`);
  }
  // Values inside option strings: ',' doubled (QEMU's escape), control characters refused.
  const comma = (s: string, where: string) => qemuOptionValue(where, s);
  const append = opts.appendCmdline ? `${img.cmdline} ${opts.appendCmdline}` : img.cmdline;
  const args = [
    '-nodefaults',
    '-no-user-config',
    '-display', 'none',
    // q35 without the devices lxq does not use (AHCI, SMBus, PS/2, VMware port).
    '-machine', `q35,accel=${opts.accel},sata=off,smbus=off,i8042=off,vmport=off`,
    ...(opts.accel === 'kvm' ? ['-cpu', 'host'] : []),
    '-m', String(opts.memoryMiB),
    '-smp', String(opts.cpus),
    '-kernel', img.kernel,
    '-initrd', img.initrd,
    '-append', append,
    '-drive', `file=${comma(opts.disk, '-drive file')},if=virtio,format=qcow2,discard=unmap`,
    // A socket chardev with a logfile: QEMU logs every byte the guest writes, attached or not.
    ...(opts.serialSocket
      ? ['-chardev', `socket,id=serial0,path=${comma(opts.serialSocket, '-chardev path')},server=on,wait=off,logfile=${comma(opts.serialLog, '-chardev logfile')},logappend=off`, '-serial', 'chardev:serial0']
      : ['-serial', `file:${opts.serialLog}`]),
    '-qmp', `unix:${comma(opts.qmpSocket, '-qmp')},server=on,wait=off`,
    ...(opts.qmpQuerySocket ? ['-chardev', `socket,id=qmpquery,path=${comma(opts.qmpQuerySocket, '-chardev path')},server=on,wait=off`, '-mon', 'chardev=qmpquery,mode=control'] : []),
    '-device', 'virtio-serial-pci,id=vser0',
    '-chardev', `socket,path=${comma(opts.qgaSocket, '-chardev path')},server=on,wait=off,id=qga0`,
    '-device', `virtserialport,bus=vser0.0,chardev=qga0,name=${QGA_PORT_NAME}`,
    ...(opts.lxqAgentSocket
      ? ['-chardev', `socket,path=${comma(opts.lxqAgentSocket, '-chardev path')},server=on,wait=off,id=lxqagent0`, '-device', `virtserialport,bus=vser0.0,chardev=lxqagent0,id=${LXQ_AGENT_DEVICE_ID},name=${LXQ_AGENT_PORT_NAME}`]
      : []),
  ];
  if (opts.userNet) args.push('-netdev', 'user,id=net0', '-device', 'virtio-net-pci,netdev=net0');
  // Plain arguments too (paths, the kernel command line): no control character anywhere.
  for (const a of args) refuseControlChars('the QEMU command line', a);
  return args;
}

/** Creates a VM's qcow2 overlay over the image's base disk (optionally grown to `size`, e.g. "1G"). */
export async function createVmOverlay(img: VmImage, overlay: string, size?: string): Promise<void> {
  await createOverlay(path.resolve(img.disk), overlay, size);
}

/** A qcow2 overlay over the qcow2 `backing` (an absolute path). */
export async function createOverlay(backing: string, overlay: string, size?: string): Promise<void> {
  const args = ['create', '-q', '-f', 'qcow2', '-F', 'qcow2', '-b', backing, overlay];
  if (size) args.push(size);
  await run('qemu-img', args);
}

