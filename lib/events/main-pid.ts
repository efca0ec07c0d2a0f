/**
 * The main process of a running instance, read the way any process can: a container's init from
 * liblxc (its command socket), a VM's QEMU from its pidfile (checked against /proc, so that a
 * reused pid is not taken for it).
 */
import { promises as fs } from 'node:fs';
import * as path from 'node:path';

import { lxc } from '../native/lxc';
import type { InstanceType } from '../instance/instance';

export async function mainPid(instancesDir: string, name: string, type: InstanceType): Promise<number | null> {
  if (type === 'container') {
    const h = new (lxc().Container)(name, instancesDir);
    try {
      const pid = await h.initPid();
      return pid > 0 ? pid : null;
    } finally {
      h.release();
    }
  }
  const pidfile = path.join(instancesDir, name, 'qemu.pid');
  const pid = Number((await fs.readFile(pidfile, 'utf8').catch(() => '')).trim());
  if (!Number.isInteger(pid) || pid <= 0) return null;
  const argv = await fs.readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
  return argv.split('\0').includes(pidfile) ? pid : null;
}
