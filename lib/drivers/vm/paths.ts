/**
 * A VM's directory. Everything about a running VM is found again from it (QEMU runs detached
 * from Node, so a VM outlives the process that started it):
 *
 *   <host>/instances/<name>/
 *     lxq.json     the record, written last at create (atomically)
 *     disk.qcow2   the VM's disk: a qcow2 overlay over the image's
 *     qemu.pid     QEMU's pidfile (QEMU locks it while it runs: a second QEMU of this VM fails)
 *     qmp.sock     the QMP monitor
 *     qmp-query.sock  a second monitor, for another process (see monitor.ts)
 *     qmp.holder   which process (and which VmInstance in it) holds qmp.sock
 *     qga.sock     the guest agent's channel (exec, files, guest state: see agent.ts)
 *     qga-mux.sock the same agent for other processes while one holds qga.sock (qga-broker.ts)
 *     lxq-agent.sock  the lxq agent's channel (exec, spawn, terminals: see lxq-agent.ts)
 *     lxq-mux.sock    the same agent for other processes while one holds lxq-agent.sock
 *     console.log  the serial console, from the last start
 *     console.sock the serial port, for the console hub
 *     qemu.log     what QEMU itself printed, from the last start
 *     boot.json    how the last start booted: cold or from the image's saved boot (saved-boot.ts)
 *     never-started  there until the first start: the disk is still the image's, untouched
 *     cloud-seed/  cloud-init's NoCloud seed (cloud-init.* options), QEMU's `cidata` disk
 *     cloud-init.json  the seed's digest and instance-id (lib/instance/cloud-init.ts)
 */
import * as path from 'node:path';

import { InvalidArgument } from '../../core/errors';

const VM_FILES = {
  disk: 'disk.qcow2',
  pid: 'qemu.pid',
  qmp: 'qmp.sock',
  /** A second QMP monitor, used for one read or one operation while another process holds the first. */
  qmpQuery: 'qmp-query.sock',
  qmpHolder: 'qmp.holder',
  qga: 'qga.sock',
  /** qemu-ga for other processes, served by the process holding qga.sock (qga-broker.ts). */
  qgaMux: 'qga-mux.sock',
  lxqAgent: 'lxq-agent.sock',
  /** The lxq agent for other processes, served by the process holding lxq-agent.sock (lxq-agent-broker.ts). */
  lxqAgentMux: 'lxq-mux.sock',
  console: 'console.log',
  consoleSocket: 'console.sock',
  qemuLog: 'qemu.log',
  boot: 'boot.json',
  fresh: 'never-started',
  /** cloud-init's seed files, the VM's `cidata` disk (launch.ts). */
  cloudSeed: 'cloud-seed',
} as const;

export type VmFile = keyof typeof VM_FILES;

/** The path of one of a VM's files, in its directory `dir`. */
export function vmFile(dir: string, which: VmFile): string {
  return path.join(dir, VM_FILES[which]);
}

/** sun_path holds 108 bytes, NUL included. */
const MAX_SOCKET_PATH = 107;

/** InvalidArgument if a socket of a VM in `dir` would not fit in a unix socket address. */
export function checkSocketPaths(dir: string): void {
  for (const which of ['qmp', 'qmpQuery', 'qga', 'qgaMux', 'lxqAgent', 'lxqAgentMux', 'consoleSocket'] as const) {
    const socket = vmFile(dir, which);
    if (Buffer.byteLength(socket) > MAX_SOCKET_PATH) {
      throw new InvalidArgument(`${socket} is longer than a unix socket path may be (${MAX_SOCKET_PATH} bytes): use a shorter host path or name`);
    }
  }
}
