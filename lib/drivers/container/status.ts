/**
 * A container's status as liblxc reports it, in lxq's words. A leaf module (liblxc's handle
 * type only): the CLI's quick path (lib/host/quick.ts) reads statuses through it without the
 * container driver.
 */
import type { InstanceStatus } from '../../instance/instance';
import type { LxcContainer, LxcState } from '../../native/lxc';

const STATUS: Record<LxcState, InstanceStatus> = {
  STOPPED: 'stopped',
  STARTING: 'starting',
  RUNNING: 'running',
  STOPPING: 'stopping',
  ABORTING: 'stopping',
  FREEZING: 'freezing',
  FROZEN: 'frozen',
  THAWED: 'running',
};

export async function containerStatus(h: LxcContainer): Promise<InstanceStatus> {
  return STATUS[await h.state()] ?? 'error';
}
