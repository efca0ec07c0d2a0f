/**
 * The snapshot catalogue of one instance, shared by both types: `<instance>/snapshots/<name>/`
 * holds `snapshot.json` (the whole instance record, whatever fields it has, and the snapshot's
 * own facts) and what the driver keeps (a container's `rootfs/`).
 *
 * Crash safety: a snapshot is made in a staging directory and appears by one rename; a delete
 * disappears by one rename before anything is removed; a restore is staged first, committed by
 * writing a journal atomically, then rolled forward (by the next touch if this process dies).
 */
import { promises as fs } from 'node:fs';
import * as path from 'node:path';

import { AlreadyExists, InvalidArgument, NotFound, NotSupported } from '../core/errors';
import type { InstanceRecord, InstanceStatus } from '../instance/instance';
import { readJson, writeJsonAtomic } from '../core/fs';
import { optionKeys, refuseUnknownKeys } from '../core/keys';
import { noSpaceOr } from '../core/run';
import { criuCheckFailure } from '../core/proc';
import { clearStaging, isStaging, processAlive, renameNew, stagingPath } from '../core/staging';
import { expiryFrom, nextSnapshotName } from '../core/schedule';
import { diskUsage } from './tree';
import type { InstanceSnapshots, SnapshotCreateOptions, SnapshotDeleteOptions, SnapshotInfo, SnapshotRef, SnapshotRestoreOptions, StorageDriver, StoredSnapshot } from './types';
import { checkAborted, checkLongOptions, detached, LONG_OPTION_KEYS, longOperation, phase } from '../core/abort';

/** What the catalogue needs of its instance (given by BaseInstance). */
export interface StorageSubject {
  name(): string;
  type(): InstanceRecord['type'];
  dir(): string;
  record(): InstanceRecord;
  driver(): StorageDriver;
  /** Runs `op` in the instance's operation queue. */
  serialized<T>(op: () => Promise<T>): Promise<T>;
  status(): Promise<InstanceStatus>;
  saveRecord(record: InstanceRecord): Promise<void>;
  /** Stop and start inside the queue (graceful, then forced). */
  stop(): Promise<void>;
  start(): Promise<void>;
  /** Emits the instance's event and reports it host-wide (`instance-snapshot-*`); resolves once reported. */
  emit(event: 'snapshot-created' | 'snapshot-restored' | 'snapshot-deleted' | 'snapshot-renamed', payload: { name: string; snapshot: string; previous?: string }): Promise<void>;
}

const META = 'snapshot.json';
export const RESTORE_JOURNAL = '.lxq-restore.json';
const JOURNAL = RESTORE_JOURNAL;
const MAX_NAME_BYTES = 63;

interface RestoreJournal {
  pid: number;
  snapshot: string;
  staging: string;
  record: InstanceRecord;
}

/** Snapshot names as LXD takes them: not empty, no "/", at most 63 bytes; lxq also keeps a leading "." for itself. */
export function validateSnapshotName(name: unknown): string {
  if (typeof name !== 'string' || name.length === 0) throw new InvalidArgument('snapshot name must be a non-empty string');
  if (Buffer.byteLength(name) > MAX_NAME_BYTES) throw new InvalidArgument(`snapshot name "${name.slice(0, 20)}…" is ${Buffer.byteLength(name)} bytes; the limit is ${MAX_NAME_BYTES}`);
  if (name.includes('/')) throw new InvalidArgument(`snapshot name ${JSON.stringify(name)} contains "/"`);
  if (name.startsWith('.') || /\p{Cc}/u.test(name)) {
    throw new InvalidArgument(`snapshot name ${JSON.stringify(name)} starts with "." or holds a control character`);
  }
  return name;
}

const CREATE_KEYS = optionKeys<SnapshotCreateOptions>({ stateful: true, expiresAt: true, description: true, ...LONG_OPTION_KEYS });
const RESTORE_KEYS = optionKeys<SnapshotRestoreOptions>({ stateful: true, ...LONG_OPTION_KEYS });
const DELETE_KEYS = optionKeys<SnapshotDeleteOptions>({ signal: true });

/** snapshots.create()'s arguments checked before anything is done (local and remote); its expiry as an ISO date, or null. */
export function checkSnapshotCreate(name: string | undefined, options: SnapshotCreateOptions): string | null {
  if (name !== undefined) validateSnapshotName(name);
  if (options === null || typeof options !== 'object') throw new InvalidArgument('snapshot options must be an object');
  refuseUnknownKeys('snapshot', options, CREATE_KEYS);
  checkLongOptions(options);
  const expiresAt = parseExpiry(options.expiresAt);
  if (options.description !== undefined && typeof options.description !== 'string') throw new InvalidArgument('description must be a string');
  if (options.stateful !== undefined && typeof options.stateful !== 'boolean') throw new InvalidArgument('stateful must be a boolean');
  return expiresAt;
}

/** snapshots.restore()'s arguments checked before anything is done (local and remote). */
export function checkSnapshotRestore(name: string, options: SnapshotRestoreOptions): void {
  validateSnapshotName(name);
  if (options === null || typeof options !== 'object') throw new InvalidArgument('restore options must be an object');
  refuseUnknownKeys('restore', options, RESTORE_KEYS);
  checkLongOptions(options);
  if (options.stateful !== undefined && typeof options.stateful !== 'boolean') throw new InvalidArgument('stateful must be a boolean');
}

/** snapshots.delete()'s options checked before anything is done (local and remote). */
export function checkSnapshotDelete(options: SnapshotDeleteOptions): void {
  if (options === null || typeof options !== 'object') throw new InvalidArgument('delete options must be an object');
  refuseUnknownKeys('snapshot delete', options, DELETE_KEYS);
  checkLongOptions(options, false);
}

function parseExpiry(value: unknown): string | null {
  if (value === undefined || value === null) return null;
  const d = value instanceof Date ? value : typeof value === 'string' ? new Date(value) : undefined;
  if (!d || Number.isNaN(d.getTime())) throw new InvalidArgument(`expiresAt must be a Date or an ISO date string, got ${JSON.stringify(value)}`);
  return d.toISOString();
}

export class Snapshots implements InstanceSnapshots {
  constructor(private readonly subject: StorageSubject) {}

  /** migration.stateful (VMs): false keeps a running VM's snapshots stateless. */
  private statefulAllowed(): boolean {
    return this.subject.record().config['migration.stateful'] !== 'false';
  }

  private get root(): string {
    return path.join(this.subject.dir(), 'snapshots');
  }

  async create(name?: string, options: SnapshotCreateOptions = {}): Promise<SnapshotInfo> {
    const expiresAt = checkSnapshotCreate(name, options);
    return longOperation(`snapshotting ${this.subject.name()}`, options, () => this.subject.serialized(async () => {
      await this.recover();
      const names = await this.names();
      // LXD's snapshots.pattern and snapshots.expiry, as the record is now (expiresAt: null is "never", as lxc's --no-expiry).
      const config = this.subject.record().config;
      const now = new Date();
      const chosen = name ?? validateSnapshotName(nextSnapshotName(config['snapshots.pattern'] ?? 'snap%d', now, names));
      const expires = expiresAt ?? (options.expiresAt === undefined ? (expiryFrom(now, config['snapshots.expiry'] ?? '')?.toISOString() ?? null) : null);
      if (names.includes(chosen)) throw new AlreadyExists(`${this.subject.name()} already has a snapshot named "${chosen}"`);
      const status = await this.subject.status();
      // A running VM's snapshot keeps its RAM and devices unless told otherwise.
      const stateful = options.stateful ?? (this.subject.type() === 'vm' && status === 'running' && this.statefulAllowed());
      if (stateful && this.subject.type() === 'vm' && !this.statefulAllowed()) {
        throw new InvalidArgument(`${this.subject.name()} has migration.stateful=false: its snapshots do not keep its state`);
      }
      if (stateful && this.subject.type() === 'container') await refuseStatefulContainer();
      await fs.mkdir(this.root, { recursive: true, mode: 0o700 });
      const staging = stagingPath(this.root, 'snapshot');
      // A unique tag for driver-side data: a crash leaves it unnamed by any snapshot, never mistaken for one.
      const tag = `lxq-${path.basename(staging).split('-').pop()}`;
      await fs.mkdir(staging, { mode: 0o711 });
      try {
        await phase('copying', 0, 95, () => this.capturedSize());
        await this.subject.driver().capture(staging, { stateful, status, tag });
        // The copy's end is reported before the commit point: an abort from that report still leaves no snapshot.
        await phase('finishing', 95, 100);
        const meta: StoredSnapshot = {
          format: 'lxq-snapshot',
          version: 1,
          createdAt: new Date().toISOString(),
          stateful,
          expiresAt: expires,
          description: options.description ?? '',
          tag,
          record: structuredClone(this.subject.record()),
        };
        await writeJsonAtomic(path.join(staging, META), meta);
        checkAborted(); // an aborted snapshot leaves none: the last moment before it appears
        await renameNew(staging, path.join(this.root, chosen));
      } catch (e) {
        await fs.rm(staging, { recursive: true, force: true });
        throw noSpaceOr(e);
      }
      await this.subject.emit('snapshot-created', { name: this.subject.name(), snapshot: chosen });
      return this.info(await this.ref(chosen));
    }));
  }

  /** @internal Deletes the expired snapshots (the host's scheduler; every snapshot operation does it too). */
  pruneExpired(): Promise<void> {
    return this.subject.serialized(() => this.recover());
  }

  async list(): Promise<SnapshotInfo[]> {
    return this.subject.serialized(async () => {
      await this.recover();
      const infos = await Promise.all((await this.names()).map(async (n) => this.info(await this.ref(n))));
      return infos.sort((a, b) => a.createdAt.getTime() - b.createdAt.getTime());
    });
  }

  async get(name: string): Promise<SnapshotInfo> {
    validateSnapshotName(name);
    return this.subject.serialized(async () => {
      await this.recover();
      return this.info(await this.ref(name));
    });
  }

  async restore(name: string, options: SnapshotRestoreOptions = {}): Promise<void> {
    checkSnapshotRestore(name, options);
    return longOperation(`restoring ${name} of ${this.subject.name()}`, options, () => this.subject.serialized(async () => {
      await this.recover();
      const snap = await this.ref(name);
      const driver = this.subject.driver();
      const status = await this.subject.status();
      await driver.checkRestore?.(snap, status);
      const current = this.subject.record();
      // The snapshot's record, under the instance's own identity, on the pool its data is on (an imported snapshot's names where it came from).
      // Ephemeral or not as the instance is now (LXD keeps the flag across a restore).
      const { pool: _pool, ephemeral: _ephemeral, ...kept } = structuredClone(snap.meta.record);
      const record: InstanceRecord = { ...kept, name: current.name, createdAt: current.createdAt, ...(current.pool !== undefined ? { pool: current.pool } : {}), ...(current.ephemeral ? { ephemeral: true } : {}) };
      if (options.stateful !== false && (await driver.restoreLive?.(snap, status))) {
        await this.subject.saveRecord(record);
        await this.subject.emit('snapshot-restored', { name: this.subject.name(), snapshot: name });
        return;
      }
      const staging = stagingPath(this.subject.dir(), 'restore');
      await fs.mkdir(staging, { mode: 0o700 });
      try {
        await phase('copying', 0, 90, () => diskUsage(snap.dir, true));
        await driver.stageRestore(snap, staging);
        await phase('applying', 90, 100);
        checkAborted(); // the last moment an abort leaves the instance as it was
      } catch (e) {
        await fs.rm(staging, { recursive: true, force: true });
        throw e;
      }
      // From here the restore is finished whatever the signal says (its staging is complete).
      await detached(async () => {
        const wasRunning = status !== 'stopped';
        if (wasRunning) await this.subject.stop();
        const journal: RestoreJournal = { pid: process.pid, snapshot: name, staging: path.basename(staging), record };
        await writeJsonAtomic(path.join(this.subject.dir(), JOURNAL), journal);
        await this.rollForward(journal);
        if (wasRunning) await this.subject.start();
      });
      await this.subject.emit('snapshot-restored', { name: this.subject.name(), snapshot: name });
    }));
  }

  async rename(from: string, to: string): Promise<void> {
    validateSnapshotName(from);
    validateSnapshotName(to);
    return this.subject.serialized(async () => {
      await this.recover();
      await this.ref(from);
      if ((await this.names()).includes(to)) throw new AlreadyExists(`${this.subject.name()} already has a snapshot named "${to}"`);
      await renameNew(path.join(this.root, from), path.join(this.root, to));
      await this.subject.emit('snapshot-renamed', { name: this.subject.name(), snapshot: to, previous: from });
    });
  }

  async delete(name: string, options: SnapshotDeleteOptions = {}): Promise<void> {
    validateSnapshotName(name);
    checkSnapshotDelete(options);
    return longOperation(`deleting snapshot ${name} of ${this.subject.name()}`, options, () =>
      this.subject.serialized(async () => {
        await this.recover();
        const snap = await this.ref(name);
        checkAborted(); // past this point the snapshot goes, whole
        await detached(() => this.remove(snap));
        await this.subject.emit('snapshot-deleted', { name: this.subject.name(), snapshot: name });
      }),
    );
  }

  /**
   * Clears what a dead process left (staging entries; a committed restore is finished) and
   * prunes expired snapshots. Runs before every snapshot operation, inside the queue.
   */
  async recover(): Promise<void> {
    const dir = this.subject.dir();
    const journal = await readJson<RestoreJournal>(path.join(dir, JOURNAL)).catch(() => undefined);
    if (journal && !processAlive(journal.pid)) await this.rollForward(journal);
    if (!journal || !processAlive(journal.pid)) await clearStaging(dir);
    await clearStaging(this.root);
    const now = Date.now();
    for (const n of await this.names()) {
      const snap = await this.ref(n).catch(() => undefined);
      // One that cannot go now (a running VM's) is pruned at a later touch; it never fails the call.
      if (!snap?.meta.expiresAt || new Date(snap.meta.expiresAt).getTime() > now) continue;
      const removed = await this.remove(snap).then(() => true, () => false);
      if (removed) await this.subject.emit('snapshot-deleted', { name: this.subject.name(), snapshot: n });
    }
  }

  private async rollForward(journal: RestoreJournal): Promise<void> {
    const dir = this.subject.dir();
    // Only a journal this code wrote is followed: its staging entry is a name in the instance's directory.
    if (typeof journal.staging !== 'string' || !isStaging(journal.staging) || journal.staging.includes('/')) {
      await fs.rm(path.join(dir, JOURNAL), { force: true });
      return;
    }
    const staging = path.join(dir, journal.staging);
    await this.subject.driver().applyRestore(await this.ref(journal.snapshot), staging, journal.record);
    await this.subject.saveRecord(journal.record);
    await fs.rm(path.join(dir, JOURNAL), { force: true });
    await fs.rm(staging, { recursive: true, force: true });
  }

  private async remove(snap: SnapshotRef): Promise<void> {
    await this.subject.driver().discard?.(snap, await this.subject.status());
    // Gone from list() at once; the files follow.
    const trash = stagingPath(this.root, 'deleted');
    await fs.rename(snap.dir, trash);
    await this.subject.driver().removeData?.(trash);
    await fs.rm(trash, { recursive: true, force: true });
  }

  /** What a snapshot copies, for its progress: a VM's disk, a container's overlay upper layer or its rootfs. */
  private async capturedSize(): Promise<number> {
    const dir = this.subject.dir();
    if (this.subject.type() === 'vm') return diskUsage(path.join(dir, 'disk.qcow2'));
    const upper = await fs.access(path.join(dir, 'upper')).then(() => true, () => false);
    return diskUsage(path.join(dir, upper ? 'upper' : 'rootfs'), true);
  }

    private async names(): Promise<string[]> {
    const entries = await fs.readdir(this.root).catch(() => [] as string[]);
    return entries.filter((n) => !isStaging(n));
  }

  /** A snapshot as its driver sees it (for a copy made from it); NotFound if there is none. Called inside the queue. */
  async refOf(name: string): Promise<SnapshotRef> {
    validateSnapshotName(name);
    await this.recover();
    return this.ref(name);
  }

  private async ref(name: string): Promise<SnapshotRef> {
    const dir = path.join(this.root, name);
    const meta = await readJson<StoredSnapshot>(path.join(dir, META)).catch(() => undefined);
    if (!meta || meta.format !== 'lxq-snapshot') throw new NotFound(`${this.subject.name()} has no snapshot named "${name}"`);
    return { name, dir, meta };
  }

  private async info(snap: SnapshotRef): Promise<SnapshotInfo> {
    const m = snap.meta;
    return {
      name: snap.name,
      createdAt: new Date(m.createdAt),
      stateful: m.stateful,
      expiresAt: m.expiresAt ? new Date(m.expiresAt) : null,
      description: m.description,
      size: await diskUsage(snap.dir),
      record: structuredClone(m.record),
    };
  }
}

/** Stateful container snapshots need CRIU; the refusal quotes CRIU's own words. */
async function refuseStatefulContainer(): Promise<never> {
  const reason = criuCheckFailure();
  if (reason) throw new NotSupported(`stateful container snapshots need CRIU, and "criu check" fails on this host: ${reason}`);
  throw new NotSupported('stateful container snapshots (CRIU checkpoint through liblxc) are not implemented yet; criu check passes on this host');
}
