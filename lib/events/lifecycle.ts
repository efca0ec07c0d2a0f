/**
 * Host-wide lifecycle events, in LXD's action names, for changes made by this process, by other
 * processes using lxq on the same host directory, and by anything else (lxc-stop, a container's
 * init exiting, QEMU killed).
 *
 * - Every lxq process appends what it did to `<host>/events.log` (one JSON line per change, in
 *   O_APPEND writes); a listening process follows that file through inotify (fs.watch).
 * - Exits nobody announced are seen through a pidfd on each running instance's main process (a
 *   container's init, a VM's QEMU), readable when it exits: no timer polls any instance.
 * An action that implies a status the instance is already known to have is not reported twice.
 */
import { EventEmitter } from 'eventemitter3';
import { closeSync, fstatSync, openSync, promises as fs, read as fsRead, watch, type FSWatcher } from 'node:fs';
import * as path from 'node:path';

import { SerialQueue } from '../core/serial';
import type { InstanceStatus, InstanceType } from '../instance/instance';
import { type EventsOptions, lifecycleEvents, type LifecycleIterator } from './iterator';

/**
 * LXD's lifecycle action names for instances.
 *
 * @example
 * ```ts
 * for (const action of LIFECYCLE_ACTIONS) console.log(action); // instance-created, instance-started, …
 * ```
 */
export const LIFECYCLE_ACTIONS = [
  'instance-created',
  'instance-started',
  'instance-stopped',
  'instance-shutdown',
  'instance-restarted',
  'instance-paused',
  'instance-resumed',
  'instance-updated',
  'instance-renamed',
  'instance-deleted',
  'instance-snapshot-created',
  'instance-snapshot-restored',
  'instance-snapshot-renamed',
  'instance-snapshot-deleted',
] as const;
/**
 * One of LXD's lifecycle action names (`LIFECYCLE_ACTIONS`).
 *
 * @example
 * ```ts
 * host.on('lifecycle', (e) => { if (e.action === 'instance-stopped') console.log(e.name, 'stopped'); });
 * ```
 */
export type LifecycleAction = (typeof LIFECYCLE_ACTIONS)[number];

/**
 * A host-wide lifecycle event: what happened to which instance, when, and whether this process did it.
 *
 * @example
 * ```ts
 * host.on('lifecycle', (e: LifecycleEvent) => console.log(e.at, e.action, e.name, e.requestor));
 * ```
 */
export interface LifecycleEvent {
  action: LifecycleAction;
  /** The instance's name. */
  name: string;
  type: InstanceType;
  /** When the change was seen or made (ISO 8601). */
  at: string;
  /** 'local': made by this process; 'external': by another process or by the instance itself. */
  requestor: 'local' | 'external';
  /** `instance-renamed`: the name it had before. `instance-snapshot-renamed`: the snapshot's. */
  previous?: string;
  /** `instance-snapshot-*`: the snapshot's name. */
  snapshot?: string;
  /** On the first event after a consumer of `host.events()` fell behind: how many it missed. */
  dropped?: number;
}

/**
 * LXD's lifecycle action names for storage pools and custom volumes, delivered by `host.on('storage', fn)`.
 *
 * @example
 * ```ts
 * for (const action of STORAGE_ACTIONS) console.log(action); // storage-pool-created, -updated, -deleted
 * ```
 */
export const STORAGE_ACTIONS = ['storage-pool-created', 'storage-pool-updated', 'storage-pool-deleted', 'storage-volume-created', 'storage-volume-updated', 'storage-volume-renamed', 'storage-volume-deleted', 'storage-volume-snapshot-created', 'storage-volume-snapshot-deleted', 'storage-volume-snapshot-restored'] as const;

/**
 * One of LXD's lifecycle action names for storage (`STORAGE_ACTIONS`).
 *
 * @example
 * ```ts
 * host.on('storage', (e) => { if (e.action === 'storage-pool-deleted') console.log(e.name, 'is gone'); });
 * ```
 */
export type StorageAction = (typeof STORAGE_ACTIONS)[number];

/**
 * A change to the host's storage: which pool, what, when, and whether this process made it.
 *
 * @example
 * ```ts
 * host.on('storage', (e: StorageEvent) => console.log(e.at, e.action, e.name, e.requestor));
 * ```
 */
export interface StorageEvent {
  action: StorageAction;
  /** The pool's name; a volume's `pool/volume`, a volume snapshot's `pool/volume/snapshot`. */
  name: string;
  /** storage-volume-renamed: the volume's `pool/volume` before. */
  previous?: string;
  /** When the change was made (ISO 8601). */
  at: string;
  /** 'local': made by this process; 'external': by another process on the same host directory. */
  requestor: 'local' | 'external';
}

/**
 * LXD's lifecycle action names for profiles, delivered by `host.on('profile', fn)`.
 *
 * @example
 * ```ts
 * for (const action of PROFILE_ACTIONS) console.log(action); // profile-created, -updated, -renamed, -deleted
 * ```
 */
export const PROFILE_ACTIONS = ['profile-created', 'profile-updated', 'profile-renamed', 'profile-deleted'] as const;

/**
 * A change to one of the host's profiles: which, what (LXD's action names), when, and whether this
 * process made it; a rename says the former name in `previous`.
 *
 * @example
 * ```ts
 * host.on('profile', (e: ProfileEvent) => console.log(e.at, e.action, e.name, e.previous ?? '', e.requestor));
 * ```
 */
export interface ProfileEvent {
  action: (typeof PROFILE_ACTIONS)[number];
  /** The profile's name (after a rename: the new one). */
  name: string;
  /** A rename's former name. */
  previous?: string;
  /** When the change was made (ISO 8601). */
  at: string;
  /** 'local': made by this process; 'external': by another process on the same host directory. */
  requestor: 'local' | 'external';
}

/** The status an action leaves the instance in (undefined: no status change, or gone). */
export const IMPLIED: Partial<Record<LifecycleAction, InstanceStatus>> = {
  'instance-created': 'stopped',
  'instance-started': 'running',
  'instance-restarted': 'running',
  'instance-resumed': 'running',
  'instance-stopped': 'stopped',
  'instance-shutdown': 'stopped',
  'instance-paused': 'frozen',
};

export const EVENTS_FILE = 'events.log';
/** The journal is started afresh past this size (the old one stays as events.log.1). */
const JOURNAL_MAX_BYTES = 1 << 20;

/** What some actions say beyond the instance: the snapshot, a former name. */
export type LifecycleDetail = Pick<LifecycleEvent, 'previous' | 'snapshot'>;

/** Who wrote a journal line, and when. */
interface JournalStamp {
  at: string;
  pid: number;
  /** The writer (one per Host object), so that a process skips what it wrote itself. */
  writer: string;
}

interface JournalEntry extends LifecycleDetail, JournalStamp {
  action: LifecycleAction;
  name: string;
  type: InstanceType;
}

/** A storage change in the journal (no instance type). */
interface StorageJournalEntry extends JournalStamp {
  action: StorageAction | ProfileEvent['action'];
  name: string;
  previous?: string;
}

/** What the hub needs to know of the host's instances. */
export interface LifecycleHost {
  /** Every instance on the host: name, type and status now. */
  instances(): Promise<{ name: string; type: InstanceType; status: InstanceStatus }[]>;
  /** One instance's status now (undefined: it is gone). */
  statusOf(name: string): Promise<InstanceStatus | undefined>;
  /** The pid of a running instance's main process (init, QEMU), or null. */
  mainPid(name: string, type: InstanceType): Promise<number | null>;
  /** Resolves once this process's lifecycle operations on that instance are done (they report themselves). */
  idle(name: string): Promise<void>;
  /** Watches a process for its exit; returns a cancel function. Throws if it is gone. */
  watchPid(pid: number, onExit: () => void): () => void;
}

interface Known {
  type: InstanceType;
  status: InstanceStatus;
  /** The status comes from an event delivered here (false: from the listing made when following began). */
  reported: boolean;
  cancelWatch?: () => void;
}

/** The hub's channels besides the instances' lifecycle: changes to the host's storage pools and profiles. */
type HostChannels = { storage: (e: StorageEvent) => void; profile: (e: ProfileEvent) => void };

export class LifecycleHub extends EventEmitter<{ lifecycle: (e: LifecycleEvent) => void } & HostChannels> {
  private readonly writer = `${process.pid}.${Math.random().toString(36).slice(2, 10)}`;
  private readonly file: string;
  /** Appends to the journal, one at a time, in call order. */
  private readonly appends = new SerialQueue();
  /** Set (synchronously) while the host is followed: resolves once every instance is known and watched. */
  private following: Promise<void> | undefined;
  private watcher: FSWatcher | undefined;
  /** The journal's fd (opened synchronously, so what is appended after `on` returns is read), its inode, a line cut short, the next offset. */
  private journal: { fd: number; ino: number; partial: string; position: number } | undefined;
  private reading: Promise<void> = Promise.resolve();
  private readonly known = new Map<string, Known>();
  /** Holds the event loop open while someone listens (the watches themselves do not). */
  private keepAlive: NodeJS.Timeout | undefined;
  private consumers = 0;

  constructor(
    private readonly hostDir: string,
    private readonly host: LifecycleHost,
  ) {
    super();
    this.file = path.join(hostDir, EVENTS_FILE);
  }

  /**
   * Reports a change this process made: appended to the journal (other processes read it) and,
   * if this process listens, emitted at once. Resolves once written.
   */
  report(action: LifecycleAction, name: string, type: InstanceType, detail: LifecycleDetail = {}): Promise<void> {
    const entry: JournalEntry = { action, name, type, ...detail, at: new Date().toISOString(), pid: process.pid, writer: this.writer };
    if (this.following) this.deliver(entry, 'local');
    return this.appends.run(() => this.append(entry));
  }

  /** Reports a change to a storage pool this process made (as `report` does an instance's). */
  reportStorage(action: StorageAction, name: string, previous?: string): Promise<void> {
    const entry: StorageJournalEntry = { action, name, ...(previous !== undefined ? { previous } : {}), at: new Date().toISOString(), pid: process.pid, writer: this.writer };
    if (this.following) this.emit('storage', { action, name, ...(previous !== undefined ? { previous } : {}), at: entry.at, requestor: 'local' });
    return this.appends.run(() => this.append(entry));
  }

  /** Reports a change to a profile this process made (as `report` does an instance's). */
  reportProfile(action: ProfileEvent['action'], name: string, previous?: string): Promise<void> {
    const entry: StorageJournalEntry = { action, name, ...(previous !== undefined ? { previous } : {}), at: new Date().toISOString(), pid: process.pid, writer: this.writer };
    if (this.following) this.emit('profile', { action, name, ...(previous !== undefined ? { previous } : {}), at: entry.at, requestor: 'local' });
    return this.appends.run(() => this.append(entry));
  }

  private async append(entry: JournalEntry | StorageJournalEntry): Promise<void> {
    const handle = await fs.open(this.file, 'a', 0o600);
    try {
      await handle.write(JSON.stringify(entry) + '\n');
      const { size } = await handle.stat();
      if (size > JOURNAL_MAX_BYTES) await fs.rename(this.file, this.file + '.1').catch(() => undefined);
    } finally {
      await handle.close();
    }
  }

  /**
   * Starts following the host (once). The journal's end and the inotify watch are taken
   * synchronously, so every change an lxq process makes after this returns is read; what is
   * appended meanwhile is read once the instances are listed (not judged against that listing:
   * it may already show the change).
   */
  private follow(): void {
    if (this.following) return;
    const fd = openSync(this.file, 'a+', 0o600);
    const st = fstatSync(fd);
    this.journal = { fd, ino: st.ino, partial: '', position: st.size };
    try {
      this.watcher = watch(this.hostDir, { persistent: false }, (_kind, file) => {
        if (file === EVENTS_FILE) this.readJournal();
      });
    } catch (e) {
      this.journal = undefined;
      closeSync(fd);
      throw e;
    }
    this.watcher.on('error', () => undefined);
    const listed = this.listInstances();
    this.following = listed;
    // Lines appended before the listing ends wait for it (readJournal chains on `reading`).
    this.reading = listed.catch(() => undefined);
    this.readJournal();
    listed.catch(() => undefined); // reported by ready(); nobody may ask
  }

  private async listInstances(): Promise<void> {
    for (const i of await this.host.instances()) {
      // Known already: this process reported a change to it since `on`, which the listing may predate.
      if (this.known.has(i.name)) continue;
      this.known.set(i.name, { type: i.type, status: i.status, reported: false });
      if (i.status !== 'stopped') this.watchInstance(i.name);
    }
  }

  /** Resolves once the host is followed (every instance known, its main process watched); at once if nobody listens. */
  ready(): Promise<void> {
    return this.following ?? Promise.resolve();
  }

  private readJournal(): void {
    this.reading = this.reading.then(() => this.drainJournal()).catch(() => undefined);
  }

  private async drainJournal(): Promise<void> {
    const j = this.journal;
    if (!j) return;
    const buf = Buffer.alloc(64 * 1024);
    for (;;) {
      const { bytesRead } = await readAt(j.fd, buf, j.position);
      if (bytesRead === 0 || this.journal !== j) break;
      j.position += bytesRead;
      const lines = (j.partial + buf.subarray(0, bytesRead).toString('utf8')).split('\n');
      j.partial = lines.pop() ?? '';
      for (const line of lines) this.journalLine(line);
    }
    // Started afresh by a writer (rotation): this file is done, follow the new one from its start.
    const st = await fs.stat(this.file).catch(() => undefined);
    if (st && st.ino !== j.ino && this.journal === j) {
      const fd = openSync(this.file, 'a+', 0o600);
      this.journal = { fd, ino: fstatSync(fd).ino, partial: '', position: 0 };
      closeSync(j.fd);
      await this.drainJournal();
    }
  }

  private journalLine(line: string): void {
    let e: JournalEntry | StorageJournalEntry;
    try {
      e = JSON.parse(line);
    } catch {
      return;
    }
    if (e.writer === this.writer) return;
    const previous = typeof (e as StorageJournalEntry).previous === 'string' ? { previous: (e as StorageJournalEntry).previous } : {};
    if ((STORAGE_ACTIONS as readonly string[]).includes(e.action) && typeof e.name === 'string') {
      return void this.emit('storage', { action: e.action as StorageAction, name: e.name, ...previous, at: e.at, requestor: e.pid === process.pid ? 'local' : 'external' });
    }
    if ((PROFILE_ACTIONS as readonly string[]).includes(e.action) && typeof e.name === 'string') {
      return void this.emit('profile', { action: e.action as ProfileEvent['action'], name: e.name, ...previous, at: e.at, requestor: e.pid === process.pid ? 'local' : 'external' });
    }
    if (!isInstanceEntry(e)) return;
    this.deliver(e, e.pid === process.pid ? 'local' : 'external');
  }

  private deliver(e: Pick<JournalEntry, 'action' | 'name' | 'type' | 'at' | 'previous' | 'snapshot'>, requestor: LifecycleEvent['requestor']): void {
    // A renamed instance is known by its new name (the old one is free for a new instance).
    if (e.action === 'instance-renamed' && e.previous !== undefined && this.known.has(e.previous)) {
      this.known.set(e.name, this.known.get(e.previous)!);
      this.known.delete(e.previous);
    }
    const known = this.known.get(e.name);
    const implied = IMPLIED[e.action];
    if (e.action === 'instance-deleted') {
      // Each deletion is made once, under the instance's lock, and reported by its maker only.
      known?.cancelWatch?.();
      this.known.delete(e.name);
    } else if (implied !== undefined) {
      // Already reported (an exit seen through the pidfd before the journal said who stopped
      // it). A status only listed is no reason: the listing may postdate this change.
      if (known?.reported && known.status === implied && e.action !== 'instance-restarted') return;
      if (e.action === 'instance-created' && known?.reported) return;
      const k = known ?? { type: e.type, status: implied, reported: true };
      k.status = implied;
      k.reported = true;
      this.known.set(e.name, k);
      if (implied === 'stopped') {
        k.cancelWatch?.();
        k.cancelWatch = undefined;
      } else this.watchInstance(e.name);
    }
    const detail = { ...(e.previous !== undefined ? { previous: e.previous } : {}), ...(e.snapshot !== undefined ? { snapshot: e.snapshot } : {}) };
    this.emit('lifecycle', { action: e.action, name: e.name, type: e.type, ...detail, at: e.at, requestor });
  }

  /** (Re)arms the pidfd on a running instance's main process. */
  private watchInstance(name: string): void {
    const k = this.known.get(name);
    if (!k) return;
    k.cancelWatch?.();
    k.cancelWatch = undefined;
    void this.host
      .mainPid(name, k.type)
      .then((pid) => {
        if (pid === null || this.known.get(name) !== k || k.cancelWatch) return void (pid === null && this.checkExit(name));
        try {
          k.cancelWatch = this.host.watchPid(pid, () => {
            k.cancelWatch = undefined;
            this.checkExit(name);
          });
        } catch {
          this.checkExit(name); // gone already
        }
      })
      .catch(() => undefined);
  }

  /** The main process of an instance exited: unless someone says who stopped it, report it. */
  private checkExit(name: string): void {
    void (async () => {
      // This process's own operation on it reports itself; then whatever the journal holds is
      // read first: an lxq process's stop names itself.
      await this.host.idle(name);
      this.readJournal();
      await this.reading;
      const k = this.known.get(name);
      if (!k || k.status === 'stopped') return;
      const status = await this.host.statusOf(name).catch(() => undefined);
      if (status === undefined || this.known.get(name) !== k || (k.status as InstanceStatus) === 'stopped') return;
      if (status === 'stopped') this.deliver({ action: 'instance-stopped', name, type: k.type, at: new Date().toISOString() }, 'external');
      else this.watchInstance(name); // the same instance runs on (e.g. a new init): watch the new one
    })().catch(() => undefined);
  }

  /**
   * `host.on('lifecycle', fn)`: follows the host from the first listener on, synchronously (see
   * follow); `ready()` tells when instances' exits that nobody announces are watched too.
   */
  subscribe(fn: (e: LifecycleEvent) => void): void {
    this.follow();
    this.on('lifecycle', fn);
    this.retain();
  }

  unsubscribe(fn: (e: LifecycleEvent) => void): void {
    const before = this.listenerCount('lifecycle');
    this.off('lifecycle', fn);
    if (this.listenerCount('lifecycle') < before) this.release();
  }

  /** `host.on('storage' | 'profile', fn)`: the same journal, that channel's changes only. */
  subscribeTo<C extends keyof HostChannels>(channel: C, fn: HostChannels[C]): void {
    this.follow();
    this.on(channel, fn as never);
    this.retain();
  }

  unsubscribeFrom<C extends keyof HostChannels>(channel: C, fn: HostChannels[C]): void {
    const before = this.listenerCount(channel);
    this.off(channel, fn as never);
    if (this.listenerCount(channel) < before) this.release();
  }

  private retain(): void {
    this.consumers++;
    // Armed again by a listener added after close().
    this.keepAlive ??= setInterval(() => undefined, 1 << 30);
  }
  private release(): void {
    if (--this.consumers === 0) {
      clearInterval(this.keepAlive);
      this.keepAlive = undefined;
    }
  }

  /** The same stream as an async iterator, with a bounded buffer. */
  events(options: EventsOptions = {}): LifecycleIterator {
    return lifecycleEvents(this, options);
  }

  /** Stops following the host (listeners stay; nothing more arrives until one is added). */
  async close(): Promise<void> {
    const journal = this.journal;
    this.journal = undefined;
    this.following = undefined;
    this.watcher?.close();
    this.watcher = undefined;
    for (const k of this.known.values()) k.cancelWatch?.();
    this.known.clear();
    clearInterval(this.keepAlive);
    this.keepAlive = undefined;
    await this.reading;
    if (journal) closeSync(journal.fd);
  }
}

function isInstanceEntry(e: JournalEntry | StorageJournalEntry): e is JournalEntry {
  return (LIFECYCLE_ACTIONS as readonly string[]).includes(e.action);
}

/** A positioned read of a file descriptor (fs/promises reads only FileHandles). */
function readAt(fd: number, buffer: Buffer, position: number): Promise<{ bytesRead: number }> {
  return new Promise((resolve, reject) => fsRead(fd, buffer, 0, buffer.length, position, (e, bytesRead) => (e ? reject(e) : resolve({ bytesRead }))));
}
