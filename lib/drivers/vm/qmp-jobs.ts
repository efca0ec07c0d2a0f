/**
 * QMP jobs of a running VM: `snapshot-save`, `snapshot-load` and `snapshot-delete` (QEMU 6.0+)
 * and `blockdev-backup`; each is followed through JOB_STATUS_CHANGE to `concluded`, its own
 * error read from `query-jobs`, then dismissed.
 */
import { randomBytes } from 'node:crypto';

import { OperationFailed, Timeout } from '../../core/errors';
import type { QmpClient, QmpEvent } from '../../qmp';
import { run } from '../../core/run';

const JOB_TIMEOUT_MS = 600_000;

type JobCommand = 'snapshot-save' | 'snapshot-load' | 'snapshot-delete' | 'blockdev-backup';

export async function runJob(qmp: QmpClient, command: JobCommand, args: Record<string, unknown>, vm: string): Promise<void> {
  const id = `lxq-${command}-${randomBytes(4).toString('hex')}`;
  let listener: ((e: QmpEvent) => void) | undefined;
  let timer: NodeJS.Timeout | undefined;
  const concluded = new Promise<void>((resolve, reject) => {
    listener = (e) => {
      if (e.data.id === id && e.data.status === 'concluded') resolve();
    };
    qmp.on('JOB_STATUS_CHANGE', listener);
    timer = setTimeout(() => reject(new Timeout(`QMP ${command} on ${vm} did not conclude within ${JOB_TIMEOUT_MS} ms`)), JOB_TIMEOUT_MS);
  });
  try {
    await qmp.execute(command, { 'job-id': id, ...args });
    await concluded;
    const jobs = await qmp.execute<Array<{ id: string; error?: string }>>('query-jobs');
    const error = jobs.find((j) => j.id === id)?.error;
    await qmp.execute('job-dismiss', { id }).catch(() => undefined);
    if (error) throw new OperationFailed(`QMP ${command} on ${vm} failed: ${error}`, { call: `qmp:${command}`, log: error });
  } finally {
    clearTimeout(timer);
    if (listener) qmp.off('JOB_STATUS_CHANGE', listener);
  }
}

/** The block node of the VM's own disk (the one file `disk` names), for the jobs' `vmstate` and `devices`. */
export async function diskNode(qmp: QmpClient, disk: string): Promise<string> {
  const blocks = await qmp.execute<Array<{ inserted?: { file: string; 'node-name'?: string } }>>('query-block');
  const node = blocks.find((b) => b.inserted?.file === disk)?.inserted?.['node-name'];
  if (!node) throw new OperationFailed(`QEMU has no block node for ${disk}`, { call: 'qmp:query-block' });
  return node;
}

/**
 * A point-in-time copy of a running (or paused) VM's disk `node` into `target`, a new qcow2:
 * with `backing`, an overlay on it holding the source's own layer (`sync: top`); without, the
 * whole disk flattened (`sync: full`). A backup job copies before the guest overwrites, so the
 * copy is of the moment the job started (crash-consistent, as a power cut), never torn.
 */
export async function backupDisk(qmp: QmpClient, node: string, target: string, options: { backing?: string; virtualSize: number }, vm: string): Promise<void> {
  const onto = options.backing ? ['-F', 'qcow2', '-b', options.backing] : [];
  await run('qemu-img', ['create', '-q', '-f', 'qcow2', ...onto, target, String(options.virtualSize)]);
  const nodeName = `lxq-backup-${randomBytes(4).toString('hex')}`;
  await qmp.execute('blockdev-add', { driver: 'qcow2', 'node-name': nodeName, file: { driver: 'file', filename: target } });
  try {
    // auto-dismiss off: the concluded job stays until read, so its error can be.
    await runJob(qmp, 'blockdev-backup', { device: node, target: nodeName, sync: options.backing ? 'top' : 'full', 'auto-dismiss': false }, vm);
  } finally {
    await qmp.execute('blockdev-del', { 'node-name': nodeName }).catch(() => undefined);
  }
}
