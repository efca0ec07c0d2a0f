/**
 * A VM's TPM: Debian's swtpm (a TPM 2.0 emulator) started beside QEMU on a control socket in the
 * VM's devices directory, QEMU's `tpm-emulator` backend connected to it and a `tpm-crb` device
 * (the guest kernel's tpm_crb driver gives /dev/tpm0 and /dev/tpmrm0). swtpm runs detached as
 * QEMU does and ends with it (`--terminate`: when QEMU's connection closes), so whichever process
 * finds QEMU again finds its TPM too. Its state (`<vm>/tpm/`) is the VM's: snapshots, copies and
 * exports carry it (storage.ts, lib/instance/export.ts). Not hot-plugged (as in LXD).
 */
import { promises as fs } from 'node:fs';
import * as path from 'node:path';

import { NotSupported } from '../../core/errors';
import { qemuOptionValue } from '../../core/guard';
import type { DeviceChange } from '../../devices/change';
import type { Devices } from '../../devices/declarations';
import { SWTPM } from '../../devices/tpm';
import { helperAlive, type HostHelper, startHostHelper, stopHostHelper } from './host-helper';

/** The TPM's state directory in a VM's (or a snapshot's, or a copy's) directory. */
export const TPM_STATE = 'tpm';
const CHARDEV = 'chr-tpm';
/**
 * QEMU's qboot firmware (qemu-system-data), for a VM with a TPM: with SeaBIOS, QEMU 7.2 places the
 * ACPI tables and the TPM's 64 KiB event log at the top of RAM, below the 160 KiB it keeps free
 * above a directly booted kernel's initrd, and the initrd copied there overwrites them (the guest
 * finds no ACPI: no TPM, APIC or power button). qboot puts the tables in low memory.
 */
export const QBOOT = '/usr/share/qemu/qboot.rom';
const TPMDEV = 'lxq-tpm';

export const tpmStateDir = (dir: string) => path.join(dir, TPM_STATE);
/** The swtpm control socket QEMU connects to. */
export const tpmSocket = (vmDir: string) => path.join(vmDir, 'devices', 'swtpm.sock');

function swtpm(vmDir: string): HostHelper {
  const socket = tpmSocket(vmDir);
  const ctrl = `type=unixio,path=${socket},mode=0600`;
  const file = (ext: string) => path.join(vmDir, 'devices', `swtpm.${ext}`);
  return {
    what: 'swtpm (the VM\'s TPM)',
    argv: [SWTPM, 'socket', '--tpm2', '--tpmstate', `dir=${tpmStateDir(vmDir)},mode=0600`, '--ctrl', ctrl, '--terminate', '--log', `file=${file('log')},level=1`],
    socket,
    // swtpm's own log is its --log file; what it prints before (bad arguments) goes here.
    log: file('out'),
    pidfile: file('pid'),
    marker: ctrl,
  };
}

/** Whether the VM's swtpm runs now. */
export function swtpmAlive(vmDir: string): Promise<boolean> {
  return helperAlive(swtpm(vmDir));
}

/** The VM's TPM device among `devices`, if it has one. */
export function tpmDevice(devices: Devices): string | undefined {
  return Object.entries(devices).find(([, d]) => d.type === 'tpm')?.[0];
}

/** Starts the VM's swtpm (if it has a TPM) and returns QEMU's arguments for it. */
export async function tpmLaunchArgs(vmDir: string, devices: Devices, deviceId: (name: string) => string): Promise<string[]> {
  const name = tpmDevice(devices);
  if (name === undefined) return [];
  await fs.mkdir(path.join(vmDir, 'devices'), { recursive: true, mode: 0o700 });
  await fs.mkdir(tpmStateDir(vmDir), { recursive: true, mode: 0o700 });
  await startHostHelper(swtpm(vmDir));
  return [
    '-bios', QBOOT,
    '-chardev', `socket,id=${CHARDEV},path=${qemuOptionValue('-chardev path', tpmSocket(vmDir))}`,
    '-tpmdev', `emulator,id=${TPMDEV},chardev=${CHARDEV}`,
    '-device', `tpm-crb,id=${deviceId(name)},tpmdev=${TPMDEV}`,
  ];
}

/** Stops the VM's swtpm if it still runs (QEMU never connected, or was killed). */
export async function stopSwtpm(vmDir: string): Promise<void> {
  await stopHostHelper(swtpm(vmDir));
}

/** A running VM's TPM cannot be added or removed (QEMU has no TPM hot-plug; LXD refuses it too). */
export function refuseTpmHotplug(vm: string, change: DeviceChange): void {
  const name = tpmDevice(change.added) ?? tpmDevice(change.removed);
  if (name === undefined) return;
  throw new NotSupported(`device "${name}": a VM's TPM is not hot-pluggable: stop ${vm} first`);
}

/** A removed TPM's state goes with it (as a removed `size` disk's data does). */
export async function releaseTpm(vmDir: string, change: DeviceChange): Promise<void> {
  if (tpmDevice(change.removed) !== undefined && tpmDevice(change.added) === undefined) await fs.rm(tpmStateDir(vmDir), { recursive: true, force: true });
}
