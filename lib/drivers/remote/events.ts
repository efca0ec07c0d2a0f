/**
 * One `/1.0/events` websocket per RemoteHost (type=lifecycle), reconnecting with back-off:
 * LXD's lifecycle events become lxq's LifecycleEvent (the local hosts' shape, lib/events/) on
 * `host.on('lifecycle', …)`, and the `status` events of the instances the host holds, so a
 * program sees what other clients of the server (lxc, another process, a cluster member) do.
 *
 * `requestor` is 'local' for the events of operations this process made (each operation marks
 * the actions it causes while it runs, and briefly after: the event may arrive after the
 * operation's end), 'external' for the rest.
 */
import { EventEmitter } from 'eventemitter3';
import WebSocket from 'ws';

import { OperationFailed } from '../../core/errors';
import { lxdError, type LxdResponse } from './client';
import { LIFECYCLE_ACTIONS, type LifecycleAction, type LifecycleEvent, STORAGE_ACTIONS, type StorageAction, type StorageEvent } from '../../events/lifecycle';
import type { InstanceType } from '../../instance/instance';
import type { LxdClient } from './client';

/** How long after an operation its events still count as this process's own. */
const OWN_GRACE_MS = 3_000;
const BACKOFF_FIRST_MS = 100;
const BACKOFF_MAX_MS = 5_000;
/** A connection that answers no ping for this long is dropped and made again. */
const PING_MS = 15_000;
/** How often the operations waited on are asked for, besides their events. */
const SWEEP_MS = 30_000;
/** The longest wait for an operation by long-poll, when the websocket is down (Node's timers stop at 2^31 ms). */
const LONGEST_WAIT_S = 20 * 24 * 3600;

/** What the events need of the host. */
export interface EventsHost {
  /** A lifecycle change another client made to an instance (the host passes it to the instances it holds). */
  external(name: string, action: LifecycleAction, context: Record<string, unknown>): void;
  /** The websocket is back after a loss: what changed meanwhile is read again. */
  reconnected(): void;
}

interface Expectation {
  name: string;
  actions: Set<LifecycleAction | StorageAction>;
  until?: number;
}

/**
 * LXD's lifecycle event of a storage pool or a custom volume as lxq's (the local host's names:
 * `pool`, `pool/volume`, `pool/volume/snapshot`); undefined for any other (an instance's volume
 * included). LXD's `storage-volume-restored` is lxq's `storage-volume-snapshot-restored`.
 */
export function storageChange(source: string, lxdAction: string, context: Record<string, unknown>, project = 'default'): { action: StorageAction; name: string; previous?: string } | undefined {
  const [where, query] = source.split('?');
  const parts = where.split('/').slice(1).map((p) => decodeURIComponent(p));
  if (parts[5] !== undefined && (new URLSearchParams(query ?? '').get('project') ?? 'default') !== project) return undefined; // another project's volume
  // LXD 5.0 names a custom volume by its storage name in these events: "<project>_<volume>".
  if (parts[5]?.startsWith(`${project}_`)) parts[5] = parts[5].slice(project.length + 1);
  if (parts[0] !== '1.0' || parts[1] !== 'storage-pools' || !parts[2]) return undefined;
  const pool = parts[2];
  if (parts.length === 3) return lxdAction.startsWith('storage-pool-') && (STORAGE_ACTIONS as readonly string[]).includes(lxdAction) ? { action: lxdAction as StorageAction, name: pool } : undefined;
  if (parts[3] !== 'volumes' || parts[4] !== 'custom' || !parts[5]) return undefined;
  const volume = `${pool}/${parts[5]}`;
  if (parts.length === 8 && parts[6] === 'snapshots') return /^storage-volume-snapshot-(created|deleted)$/.test(lxdAction) ? { action: lxdAction as StorageAction, name: `${volume}/${parts[7]}` } : undefined;
  if (parts.length !== 6) return undefined;
  if (lxdAction === 'storage-volume-restored') return typeof context.snapshot === 'string' ? { action: 'storage-volume-snapshot-restored', name: `${volume}/${context.snapshot}` } : undefined;
  if (lxdAction === 'storage-volume-renamed') return typeof context.old_name === 'string' ? { action: lxdAction, name: volume, previous: `${pool}/${context.old_name}` } : undefined;
  return /^storage-volume-(created|updated|deleted)$/.test(lxdAction) ? { action: lxdAction as StorageAction, name: volume } : undefined;
}

export class RemoteEvents extends EventEmitter<{ lifecycle: (e: LifecycleEvent) => void; storage: (e: StorageEvent) => void }> {
  private ws: WebSocket | undefined;
  private open = false;
  private closed = false;
  private attempts = 0;
  private everOpened = false;
  private retry: NodeJS.Timeout | undefined;
  private ping: NodeJS.Timeout | undefined;
  private sweep: NodeJS.Timeout | undefined;
  private waiters: Array<() => void> = [];
  private readonly pending: Expectation[] = [];
  private readonly types = new Map<string, InstanceType>();
  private keepAlive: NodeJS.Timeout | undefined;
  private consumers = 0;
  /** Operations waited on through the websocket, by id. */
  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- LXD's JSON: its fields are read where they are used
  private readonly operations = new Map<string, { what: string; resolve: (op: any) => void; reject: (e: Error) => void }>();
  /** How many times the websocket was made again after a loss (for tests and diagnostics). */
  reconnects = 0;

  constructor(
    private readonly client: LxdClient,
    private readonly host: EventsHost,
  ) {
    super();
    this.connect();
  }

  /** The type of an instance the host has seen, for events about it. */
  knowType(name: string, type: InstanceType): void {
    this.types.set(name, type);
  }

  private connect(): void {
    if (this.closed) return;
    const ws = new WebSocket(this.client.websocketUrl(this.client.url('/1.0/events', { type: 'lifecycle,operation' })), this.client.websocketOptions());
    this.ws = ws;
    // The socket alone does not hold the process open; a command waited on does (operationDone).
    ws.once('upgrade', (res) => res.socket.unref());
    let alive = true;
    ws.on('pong', () => (alive = true));
    ws.once('open', () => {
      this.open = true;
      this.attempts = 0;
      if (this.everOpened) {
        this.reconnects++;
        this.host.reconnected();
      }
      this.everOpened = true;
      for (const w of this.waiters.splice(0)) w();
      // What ended while the websocket was away.
      for (const id of this.operations.keys()) void this.check(id);
      this.ping = setInterval(() => {
        if (!alive) return ws.terminate();
        alive = false;
        ws.ping();
      }, PING_MS);
      this.ping.unref();
    });
    ws.on('message', (data: Buffer) => this.message(data));
    ws.on('error', () => undefined);
    ws.once('close', () => {
      this.open = false;
      clearInterval(this.ping);
      if (this.ws === ws) this.ws = undefined;
      if (this.closed) return;
      const delay = Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** this.attempts++) * (0.75 + Math.random() / 2);
      this.retry = setTimeout(() => this.connect(), delay);
      this.retry.unref();
    });
  }

  /** Resolves once the websocket is open (OperationFailed if it is not within the client's timeout). */
  ready(): Promise<void> {
    if (this.open) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== done);
        reject(new OperationFailed(`the events websocket of the LXD server at ${this.client.where} did not open within ${this.client.timeoutMs} ms`));
      }, this.client.timeoutMs);
      const done = () => {
        clearTimeout(timer);
        resolve();
      };
      this.waiters.push(done);
    });
  }

  /** Marks the events of `actions` on `name` as this process's own, until shortly after `done()`. */
  expect(name: string, actions: ReadonlyArray<LifecycleAction | StorageAction>): () => void {
    const e: Expectation = { name, actions: new Set(actions) };
    this.pending.push(e);
    return () => {
      e.until = Date.now() + OWN_GRACE_MS;
      setTimeout(() => {
        const i = this.pending.indexOf(e);
        if (i >= 0) this.pending.splice(i, 1);
      }, OWN_GRACE_MS).unref();
    };
  }

  private ours(name: string, action: LifecycleAction | StorageAction): boolean {
    const now = Date.now();
    // A name ending in "/" stands for any under it (a snapshot or an import LXD names itself).
    return this.pending.some((e) => (e.name === name || (e.name.endsWith('/') && name.startsWith(e.name))) && e.actions.has(action) && (e.until === undefined || now <= e.until));
  }

  private message(data: Buffer): void {
    // eslint-disable-next-line @typescript-eslint/no-explicit-any -- LXD's JSON: its fields are read where they are used
    let e: any;
    try {
      e = JSON.parse(data.toString('utf8'));
    } catch {
      return;
    }
    if (e?.type === 'operation') return this.operation(e.metadata);
    if (e?.type !== 'lifecycle') return;
    const storage = storageChange(String(e.metadata?.source ?? ''), String(e.metadata?.action ?? ''), (e.metadata?.context ?? {}) as Record<string, unknown>, this.client.project);
    if (storage) {
      const requestor = this.ours(storage.name, storage.action) || (storage.previous !== undefined && this.ours(storage.previous, storage.action)) ? 'local' : 'external';
      return void this.emit('storage', { ...storage, at: new Date(e.timestamp ?? Date.now()).toISOString(), requestor });
    }
    const action = e.metadata?.action as LifecycleAction;
    if (!LIFECYCLE_ACTIONS.includes(action)) return;
    const m = /^\/1\.0\/instances\/([^/?]+)(?:\?|$)/.exec(String(e.metadata?.source ?? ''));
    if (!m) return;
    const name = decodeURIComponent(m[1]);
    const context = (e.metadata?.context ?? {}) as Record<string, unknown>;
    const previous = typeof context.old_name === 'string' ? context.old_name : undefined;
    if (action === 'instance-renamed' && previous && this.types.has(previous)) this.types.set(name, this.types.get(previous)!);
    const requestor = this.ours(name, action) || (previous !== undefined && this.ours(previous, action)) ? 'local' : 'external';
    if (requestor === 'external') this.host.external(name, action, context);
    void this.typeOf(name).then((type) => {
      if (action === 'instance-deleted') this.types.delete(name);
      this.emit('lifecycle', { action, name, type, at: new Date(e.timestamp ?? Date.now()).toISOString(), requestor });
    });
  }

  /**
   * Resolves with the operation once it has ended, its failure typed (as LxdClient.wait), learnt
   * from the websocket: no request stays open meanwhile (each would hold one of the client's
   * connections). With the websocket down, the operation is asked for when it is back.
   */
  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- LXD's JSON: its fields are read where they are used
  operationDone(r: LxdResponse, what: string): Promise<any> {
    const id = r.operation?.split('?')[0].split('/').pop();
    if (r.type !== 'async' || !id) return Promise.resolve(r.metadata);
    if (!this.open) return this.client.wait(r, what, LONGEST_WAIT_S);
    // Registered before the command can start (LXD waits for its websockets): its end is not missed.
    const p = new Promise((resolve, reject) => this.operations.set(id, { what, resolve, reject }));
    // A safety net under the events (the server drops them for a listener that lags). It is
    // also what holds the process open while a command runs: the websocket itself does not
    // (a program whose last await is an exec would otherwise exit in the middle of it).
    this.sweep ??= setInterval(() => {
      for (const op of this.operations.keys()) void this.check(op);
    }, SWEEP_MS);
    return p;
  }

  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- LXD's JSON: its fields are read where they are used
  private operation(op: any): void {
    if (op && typeof op.id === 'string' && this.operations.has(op.id) && Number(op.status_code) >= 200) this.settle(op.id, op);
  }

  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- LXD's JSON: its fields are read where they are used
  private settle(id: string, op: any): void {
    const waiter = this.operations.get(id);
    if (!waiter) return;
    this.operations.delete(id);
    if (this.operations.size === 0) {
      clearInterval(this.sweep);
      this.sweep = undefined;
    }
    if (op.status_code === 200) return waiter.resolve(op);
    const [method, ...p] = waiter.what.split(' ');
    waiter.reject(lxdError({ method, path: p.join(' '), status: op.status_code, serverMessage: op.err || op.status, operation: true }));
  }

  /** Asks the server for an operation's status (it may have ended while nobody listened). */
  private async check(id: string): Promise<void> {
    try {
      const op = (await this.client.request('GET', this.client.url(`/1.0/operations/${id}`))).metadata;
      if (Number(op?.status_code) >= 200) this.settle(id, op);
    } catch (e) {
      // Gone: the server forgot it (restarted); its end is unknown.
      const waiter = this.operations.get(id);
      if (waiter && (e as { code?: string }).code === 'NOT_FOUND') {
        this.operations.delete(id);
        waiter.reject(new OperationFailed(`${waiter.what}: the LXD server at ${this.client.where} no longer knows operation ${id} (restarted?)`, { call: waiter.what }));
      }
    }
  }

  private async typeOf(name: string): Promise<InstanceType> {
    const known = this.types.get(name);
    if (known) return known;
    const t = await this.client
      .request('GET', this.client.url(`/1.0/instances/${encodeURIComponent(name)}`))
      .then((r) => (r.metadata.type === 'virtual-machine' ? 'vm' : 'container') as InstanceType, () => 'container' as InstanceType);
    this.types.set(name, t);
    return t;
  }

  /** `host.on('lifecycle' | 'storage', fn)`: events flow from the websocket's opening (see ready). */
  subscribe(fn: (e: LifecycleEvent) => void, channel?: 'lifecycle'): void;
  subscribe(fn: (e: StorageEvent) => void, channel: 'storage'): void;
  subscribe(fn: ((e: LifecycleEvent) => void) | ((e: StorageEvent) => void), channel: 'lifecycle' | 'storage' = 'lifecycle'): void {
    this.on(channel, fn as never);
    if (this.consumers++ === 0) this.keepAlive = setInterval(() => undefined, 1 << 30);
  }

  unsubscribe(fn: ((e: LifecycleEvent) => void) | ((e: StorageEvent) => void), channel: 'lifecycle' | 'storage' = 'lifecycle'): void {
    const before = this.listenerCount(channel);
    this.off(channel, fn as never);
    if (this.listenerCount(channel) < before && --this.consumers === 0) {
      clearInterval(this.keepAlive);
      this.keepAlive = undefined;
    }
  }

  close(): void {
    this.closed = true;
    clearTimeout(this.retry);
    clearInterval(this.ping);
    clearInterval(this.sweep);
    clearInterval(this.keepAlive);
    this.keepAlive = undefined;
    this.ws?.terminate();
    this.ws = undefined;
    for (const [id, w] of this.operations) {
      this.operations.delete(id);
      w.reject(new OperationFailed(`${w.what}: the host was closed`, { call: w.what }));
    }
  }
}
