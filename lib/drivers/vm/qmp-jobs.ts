/**
 * QMP jobs of a running VM: `snapshot-save`, `snapshot-load` and `snapshot-delete` (QEMU 6.0+)
 * and `blockdev-backup`; each is followed through JOB_STATUS_CHANGE to `concluded`, its own
 * error read from `query-jobs`, then dismissed.
 */
import { randomBytes } from 'node:crypto';

import { OperationFailed, Timeout } from '../../core/errors';
import { type QmpClient, type QmpCommands, QmpTimeoutError } from '../../qmp';
import { run } from '../../core/run';

const JOB_TIMEOUT_MS = 600_000;

type JobCommand = 'snapshot-save' | 'snapshot-load' | 'snapshot-delete' | 'blockdev-backup';

/** Starts job `command` with `args` and waits for it to conclude; its own error becomes OperationFailed. */
export async function runJob<C extends JobCommand>(qmp: QmpClient, command: C, args: Omit<QmpCommands[C]['args'], 'job-id'>, vm: string): Promise<void> {
  const id = `lxq-${command}-${randomBytes(4).toString('hex')}`;
  // Listening before the job starts: a short job may conclude before its command's reply is read.
  const stop = new AbortController();
  const concluded = qmp
    .waitEvent('JOB_STATUS_CHANGE', { filter: (job) => job.id === id && job.status === 'concluded', timeout: JOB_TIMEOUT_MS, signal: stop.signal })
    .catch((e) => {
      throw e instanceof QmpTimeoutError ? new Timeout(`QMP ${command} on ${vm} did not conclude within ${JOB_TIMEOUT_MS} ms`) : e;
    });
  try {
    // The union of the four commands' arguments is what `args` plus its id is, whichever C is.
    await Promise.all([qmp.execute(command as JobCommand, { 'job-id': id, ...args } as QmpCommands[JobCommand]['args']), concluded]);
    const jobs = await qmp.execute('query-jobs');
    const error = jobs.find((j) => j.id === id)?.error;
    await qmp.execute('job-dismiss', { id }).catch(() => undefined);
    if (error) throw new OperationFailed(`QMP ${command} on ${vm} failed: ${error}`, { call: `qmp:${command}`, log: error });
  } finally {
    stop.abort();
  }
}

/** The block node of the VM's own disk (the one file `disk` names), for the jobs' `vmstate` and `devices`. */
export async function diskNode(qmp: QmpClient, disk: string): Promise<string> {
  const blocks = await qmp.execute('query-block');
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
