/**
 * QMP snapshot jobs of a running VM (QEMU 6.0+): `snapshot-save`, `snapshot-load` and
 * `snapshot-delete` run as jobs; each is followed through JOB_STATUS_CHANGE to `concluded`,
 * its own error read from `query-jobs`, then dismissed.
 */
import { randomBytes } from 'node:crypto';

import { OperationFailed, Timeout } from '../errors';
import type { QmpClient, QmpEvent } from '../qmp';

const JOB_TIMEOUT_MS = 600_000;

export async function runSnapshotJob(qmp: QmpClient, command: 'snapshot-save' | 'snapshot-load' | 'snapshot-delete', args: Record<string, unknown>, vm: string): Promise<void> {
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
