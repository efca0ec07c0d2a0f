/**
 * A VM's QMP monitor, as a VmInstance holds it.
 *
 * A QMP monitor takes one client at a time: the process that uses a VM holds its connection
 * (which does not keep Node alive) and learns from it what happens — QMP events, and the socket
 * closing when QEMU exits, however it exits. `qmp.holder` names the holder (a process and the
 * VmInstance in it: two Hosts of one process are two holders). Another process (the CLI beside a
 * program) that finds it held reads the status through the query monitor, and makes its changes
 * there too, connected for the one operation (under the instance's lock, so changes never
 * interleave).
 */
import { randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import * as net from 'node:net';

import { InvalidState, OperationFailed } from '../../core/errors';
import { processAlive } from '../../core/staging';
import type { InstanceStatus } from '../../instance/instance';
import { QmpClient, type QmpCommands, QmpError, type QmpEvent, QmpTimeoutError } from '../../qmp';
import type { VmFile } from './paths';
import { livePid, sleep } from './process';

const QMP_TIMEOUT_MS = 10_000;
/** QEMU greets within ~30 ms; a silent monitor is held by another client (another process). */
const QMP_GREETING_MS = 3_000;

/** QEMU's run states (`query-status`) as instance statuses. */
const QEMU_STATUS: Record<string, InstanceStatus> = {
  running: 'running',
  paused: 'frozen',
  suspended: 'frozen',
  prelaunch: 'starting',
  inmigrate: 'starting',
  shutdown: 'stopping',
};
/** QMP events after which the status is read again. */
const STATUS_EVENTS = new Set(['SHUTDOWN', 'STOP', 'RESUME']);
/** The status a QMP event says the VM has entered: QEMU paused it (a freeze) or runs it again. */
const IMPLIED_STATUS: Record<string, InstanceStatus> = { STOP: 'frozen', RESUME: 'running' };

/** The arguments of command K, as QmpClient.execute takes them. */
type ArgsOf<K extends keyof QmpCommands> = undefined extends QmpCommands[K]['args'] ? [args?: QmpCommands[K]['args']] : [args: QmpCommands[K]['args']];

/** Connects to a QMP monitor; the socket does not keep the Node process alive. */
function openMonitor(socketPath: string, greetingMs = QMP_GREETING_MS): Promise<QmpClient> {
  const socket = net.createConnection({ path: socketPath });
  socket.unref();
  return QmpClient.connect(socket, { timeout: QMP_TIMEOUT_MS, connectTimeout: greetingMs });
}

/** `query-status` on a monitor nobody holds for long: connect, ask, close. */
async function queryStatusOnce(socketPath: string): Promise<string> {
  const socket = net.createConnection({ path: socketPath });
  socket.unref();
  const qmp = await QmpClient.connect(socket, { timeout: QMP_GREETING_MS, connectTimeout: QMP_GREETING_MS });
  try {
    return (await qmp.execute('query-status')).status;
  } finally {
    await qmp.close();
  }
}

/** What the monitor needs of its VM. */
export interface MonitorHooks {
  /** The path of one of the VM's files (its directory changes when it is renamed). */
  file(which: VmFile): string;
  name(): string;
  /** The status last seen, and a status seen now (a `status` event if it moved). */
  observed(): InstanceStatus | undefined;
  observe(status: InstanceStatus): void;
  /** True while an operation of this process holds the instance's lock: the VM's changes then are its own. */
  ownOperation(): boolean;
  /** The status, read after the operation in progress (if any). */
  reread(): Promise<InstanceStatus>;
  /** Every event of the monitor this object holds (e.g. VSERPORT_CHANGE for the guest's agents). */
  event?(e: QmpEvent): void;
}

export class VmMonitor {
  private client: QmpClient | undefined;
  private connecting: Promise<QmpClient | undefined> | undefined;
  /** The query monitor, held for the operation in progress while another process holds `client`'s socket. */
  private borrowed: QmpClient | undefined;
  /** Names this object in the holder file. */
  private readonly holderId = `${process.pid} ${randomBytes(6).toString('hex')}`;

  /** Status events (and closes) of the held monitor so far: a status read begun before the last one may be stale. */
  private statusEvents = 0;

  constructor(private readonly vm: MonitorHooks) {}

  /** This object's connection to the running QEMU, if it holds one. */
  get held(): QmpClient | undefined {
    return this.client?.connected ? this.client : undefined;
  }

  /** The monitor of the running QEMU, connected on first need; undefined when QEMU does not run. */
  private connected(): Promise<QmpClient | undefined> {
    if (this.client?.connected) return Promise.resolve(this.client);
    this.connecting ??= (async () => {
      if ((await livePid(this.vm.file('pid'))) === null) return undefined;
      return this.attach(await openMonitor(this.vm.file('qmp')));
    })().finally(() => (this.connecting = undefined));
    return this.connecting;
  }

  /** True if another live holder (another process, or another Host of this one) has the monitor. */
  private async heldElsewhere(): Promise<boolean> {
    if (this.client?.connected) return false;
    const holder = (await fs.readFile(this.vm.file('qmpHolder'), 'utf8').catch(() => '')).trim();
    return holder !== '' && holder !== this.holderId && processAlive(Number(holder.split(' ')[0]));
  }

  /**
   * The monitor a change is made on: this object's, or, while another holder has it, the query
   * monitor, connected until the operation ends (operationEnded). Undefined when QEMU does not run.
   */
  async forChange(): Promise<QmpClient | undefined> {
    if (this.borrowed?.connected) return this.borrowed;
    if (!(await this.heldElsewhere())) {
      try {
        return await this.connected();
      } catch (e) {
        // Silent: held by a holder that left no holder file (an older lxq); anything else is a failure.
        if (!(e instanceof QmpTimeoutError)) throw e;
      }
    }
    if ((await livePid(this.vm.file('pid'))) === null) return undefined;
    // Another process's one-shot status read may have it for a moment: wait longer than for a greeting.
    this.borrowed = await openMonitor(this.vm.file('qmpQuery'), QMP_TIMEOUT_MS);
    return this.borrowed;
  }

  /** The operation in progress ended: the query monitor, if it was borrowed, is given back. */
  async operationEnded(): Promise<void> {
    const client = this.borrowed;
    this.borrowed = undefined;
    await client?.close();
  }

  /**
   * Connects to the monitor of a QEMU just spawned: its socket appears when QEMU binds it and
   * answers once QEMU listens. Throws the last failure once `exitReason` tells QEMU exited, or
   * when the monitor did not answer within QMP_TIMEOUT_MS.
   */
  async connectLaunched(exitReason: () => string | undefined): Promise<void> {
    const deadline = Date.now() + QMP_TIMEOUT_MS;
    for (;;) {
      try {
        if (exitReason() !== undefined) throw new Error('QEMU exited');
        // A QEMU this process just spawned has no client yet, so the short greeting bound (which
        // tells a held monitor) does not apply: under load (28 on 2 cores) a new QEMU's
        // qmp_capabilities reply took over 3 s.
        this.attach(await openMonitor(this.vm.file('qmp'), QMP_TIMEOUT_MS));
        return;
      } catch (e) {
        const code = (e as { code?: string }).code;
        if (exitReason() !== undefined || (code !== 'ENOENT' && code !== 'ECONNREFUSED') || Date.now() >= deadline) throw e;
        await sleep(10);
      }
    }
  }

  /** Makes `client` this VM's monitor and has the status re-read whenever it reports a change. */
  private attach(client: QmpClient): QmpClient {
    this.client = client;
    void fs.writeFile(this.vm.file('qmpHolder'), `${this.holderId}\n`).catch(() => undefined);
    client.on('event', (e) => {
      if (this.client !== client) return;
      if (STATUS_EVENTS.has(e.event)) this.statusEvent(IMPLIED_STATUS[e.event]);
      this.vm.event?.(e);
    });
    client.on('close', () => {
      void this.releaseHolder();
      if (this.client !== client) return;
      this.client = undefined;
      this.statusEvent(undefined); // QEMU exited (killed or not), or the connection broke
    });
    return client;
  }

  /**
   * A status event of the held monitor (or its close). Another process's freeze or thaw (this
   * process holds no lock then) is observed at once as its event implies, so one undone before
   * any read is still reported, in order. This process's own operations report their own
   * transitions: the pause inside a stateful snapshot or a live restore gives no event, as LXD's
   * (instance-snapshot-created / -restored only). Then the status is read again after the
   * operation in progress, and kept unless a later event came meanwhile (a read it made stale).
   */
  private statusEvent(implied: InstanceStatus | undefined): void {
    const seen = ++this.statusEvents;
    if (implied && !this.vm.ownOperation() && this.vm.observed() === (implied === 'frozen' ? 'running' : 'frozen')) this.vm.observe(implied);
    this.vm
      .reread()
      .then((status) => seen === this.statusEvents && this.vm.observe(status))
      .catch(() => undefined);
  }

  /** The holder file goes when this object lets the monitor go (if it still names this object). */
  private async releaseHolder(): Promise<void> {
    const file = this.vm.file('qmpHolder');
    if ((await fs.readFile(file, 'utf8').catch(() => '')).trim() === this.holderId) await fs.rm(file, { force: true });
  }

  /** Lets the monitor go (the VM is deleted). */
  drop(): void {
    const client = this.client;
    this.client = undefined;
    void client?.close();
  }

  /** Runs a QMP command on the running VM; QMP failures become OperationFailed. */
  async command<K extends keyof QmpCommands>(command: K, ...args: ArgsOf<K>): Promise<QmpCommands[K]['returns']> {
    const qmp = await this.forChange();
    if (!qmp) throw new InvalidState(`${this.vm.name()} is not running`, 'stopped');
    // Sent as given: `args` were checked against QmpCommands by this method's own signature.
    return qmp.execute<QmpCommands[K]['returns']>(command, args[0] as Record<string, unknown> | undefined).catch((e) => {
      throw e instanceof QmpError ? new OperationFailed(`QMP ${command} on ${this.vm.name()}: ${e.message}`, { call: `qmp:${command}` }, { cause: e }) : e;
    });
  }

  /** `quit`, on whichever monitor answers; QEMU exits after its reply (or it is killed: see endQemu). */
  async quit(timeoutMs: number): Promise<void> {
    const qmp = await this.forChange().catch(() => undefined);
    await qmp?.execute('quit', undefined, { timeout: timeoutMs }).catch(() => undefined);
  }

  /** The VM's status, from QEMU: `stopped` when it does not run, `error` when it runs and no monitor answers. */
  async status(): Promise<InstanceStatus> {
    try {
      // Held elsewhere: straight to the query monitor (the first would not greet for QMP_GREETING_MS).
      const qmp = this.borrowed?.connected ? this.borrowed : (await this.heldElsewhere()) ? undefined : await this.connected();
      if (!qmp) {
        if ((await livePid(this.vm.file('pid'))) === null) return 'stopped';
        throw new InvalidState('held elsewhere', 'running');
      }
      const { status } = await qmp.execute('query-status');
      return QEMU_STATUS[status] ?? 'error';
    } catch {
      // QEMU exited during the call, or it runs and its monitor does not answer us: QEMU serves
      // one client per monitor, and another process (an lxq program, the CLI) may hold it.
      if ((await livePid(this.vm.file('pid'))) === null) return 'stopped';
      const status = await queryStatusOnce(this.vm.file('qmpQuery')).catch(() => undefined);
      return status === undefined ? 'error' : (QEMU_STATUS[status] ?? 'error');
    }
  }
}
