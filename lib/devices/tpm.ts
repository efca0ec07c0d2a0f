/**
 * `tpm` devices checked: their shape (at most one per instance; a container's node paths) and
 * what the host has for them (a VM's swtpm, a container's vTPM proxy), before anything is made.
 */
import { promises as fs } from 'node:fs';

import type { InstanceType } from '../config/options';
import { InvalidArgument, NotSupported } from '../core/errors';
import type { DeviceConfig, Devices } from './declarations';

/** Debian's TPM emulator (package swtpm), which backs a VM's TPM. */
export const SWTPM = '/usr/bin/swtpm';
/** The kernel's vTPM proxy (CONFIG_TCG_VTPM_PROXY), which a container's TPM would be made with. */
const VTPMX = '/dev/vtpmx';

/** A tpm device's keys beyond single values. */
export function checkTpmShape(instanceType: InstanceType, name: string, d: DeviceConfig): void {
  if (instanceType !== 'container') return;
  for (const key of ['path', 'pathrm']) {
    if (d[key] === undefined) throw new InvalidArgument(`device "${name}": "${key}" is required for a container's TPM (e.g. ${key === 'path' ? '/dev/tpm0' : '/dev/tpmrm0'})`);
  }
}

/** An instance has one TPM at most (as in LXD). */
export function checkOneTpm(devices: Devices): void {
  const tpms = Object.entries(devices).filter(([, d]) => d.type === 'tpm').map(([n]) => `"${n}"`);
  if (tpms.length > 1) throw new InvalidArgument(`devices ${tpms.join(' and ')} are both TPMs: an instance has one TPM at most`);
}

/** What the host needs for a TPM: swtpm for a VM; for a container the vTPM proxy, NotSupported where it is not. */
export async function probeTpm(instanceType: InstanceType, name: string): Promise<void> {
  const where = `device "${name}"`;
  if (instanceType === 'vm') {
    if (!(await fs.access(SWTPM, fs.constants.X_OK).then(() => true, () => false))) {
      throw new NotSupported(`${where}: a VM's TPM is served by swtpm, which this host lacks (${SWTPM}): install Debian's swtpm package`);
    }
    return;
  }
  if (!(await fs.stat(VTPMX).then((s) => s.isCharacterDevice(), () => false))) {
    throw new NotSupported(`${where}: a container's TPM needs the host kernel's vTPM proxy (${VTPMX}, CONFIG_TCG_VTPM_PROXY, module tpm_vtpm_proxy), which this host has not`);
  }
  throw new NotSupported(`${where}: this host has the vTPM proxy (${VTPMX}), but lxq does not make containers' TPMs with it yet; a VM's TPM is supported`);
}
