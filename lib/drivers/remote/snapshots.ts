/**
 * Snapshots of an instance on an LXD server, through …/snapshots: the same InstanceSnapshots
 * calls and events as locally; LXD keeps them (and refuses what it cannot do, typed).
 */
import { detached, longOperation } from '../../core/abort';
import { Aborted, AlreadyExists, NotFound, NotSupported } from '../../core/errors';
import type { InstanceRecord } from '../../instance/instance';
import { checkSnapshotCreate, checkSnapshotDelete, checkSnapshotRestore, validateSnapshotName } from '../../storage/snapshots';
import type { InstanceSnapshots, SnapshotCreateOptions, SnapshotDeleteOptions, SnapshotInfo, SnapshotRestoreOptions } from '../../storage/types';
import type { LxdClient } from './client';

/** What the catalogue needs of its instance (given by RemoteInstance). */
export interface RemoteSnapshotSubject {
  client: LxdClient;
  path(): string;
  name(): string;
  /** The instance's record as it was in a snapshot's LXD metadata. */
  record(meta: Record<string, unknown>): InstanceRecord;
  serialized<T>(op: () => Promise<T>): Promise<T>;
  /** Called after a restore: the instance's config and devices changed on the server. */
  refresh(): Promise<void>;
  emit(event: 'snapshot-created' | 'snapshot-restored' | 'snapshot-deleted' | 'snapshot-renamed', payload: { name: string; snapshot: string; previous?: string }): void;
}

export class RemoteSnapshots implements InstanceSnapshots {
  constructor(private readonly s: RemoteSnapshotSubject) {}

  private url(snapshot?: string, query: Record<string, string> = {}): string {
    return this.s.client.url(`${this.s.path()}/snapshots${snapshot === undefined ? '' : `/${encodeURIComponent(snapshot)}`}`, query);
  }

  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- LXD's JSON: its fields are read where they are used
  private info(m: any): SnapshotInfo {
    const name = String(m.name).split('/').pop()!;
    const expires = m.expires_at && !String(m.expires_at).startsWith('0001-') ? new Date(m.expires_at) : null;
    return { name, createdAt: new Date(m.created_at), stateful: m.stateful === true, expiresAt: expires, description: '', size: Number(m.size ?? 0) > 0 ? Number(m.size) : 0, record: this.s.record(m) };
  }

  private missing(name: string, e: unknown): never {
    if (e instanceof NotFound) throw new NotFound(`${this.s.name()} has no snapshot named "${name}"`);
    throw e;
  }

  async list(): Promise<SnapshotInfo[]> {
    const all = (await this.s.client.request('GET', this.url(undefined, { recursion: '1' }))).metadata as unknown[];
    return all.map((m) => this.info(m)).sort((a, b) => a.createdAt.getTime() - b.createdAt.getTime());
  }

  async get(name: string): Promise<SnapshotInfo> {
    validateSnapshotName(name);
    return this.info((await this.s.client.request('GET', this.url(name)).catch((e) => this.missing(name, e))).metadata);
  }

  create(name?: string, options: SnapshotCreateOptions = {}): Promise<SnapshotInfo> {
    let expiresAt: string | null;
    try {
      expiresAt = checkSnapshotCreate(name, options);
      if (options.description) throw new NotSupported("a snapshot description is not kept by LXD's snapshots API");
    } catch (e) {
      return Promise.reject(e);
    }
    return longOperation(`snapshotting ${this.s.name()}`, options, () => this.s.serialized(async () => {
      // LXD's own default names (snap0, snap1…), chosen here so the new one is known.
      let snapshot = name;
      if (snapshot === undefined) {
        const taken = new Set((await this.list()).map((i) => i.name));
        for (let i = 0; taken.has((snapshot = `snap${i}`)); i++);
      }
      await this.s.client.call('POST', this.url(), { name: snapshot, stateful: options.stateful === true, ...(expiresAt ? { expires_at: expiresAt } : {}) }).catch(async (e) => {
        // An aborted snapshot leaves none: what the server made of it (if it went on) is deleted.
        if (e instanceof Aborted) await detached(() => this.s.client.call('DELETE', this.url(snapshot))).catch(() => undefined);
        throw e;
      });
      const info = await this.get(snapshot!);
      this.s.emit('snapshot-created', { name: this.s.name(), snapshot: snapshot! });
      return info;
    }));
  }

  restore(name: string, options: SnapshotRestoreOptions = {}): Promise<void> {
    try {
      checkSnapshotRestore(name, options);
    } catch (e) {
      return Promise.reject(e);
    }
    return longOperation(`restoring ${name} of ${this.s.name()}`, options, () => this.s.serialized(async () => {
      await this.get(name);
      // A running container is stopped, restored and started again by LXD itself.
      await this.s.client.call('PUT', this.s.client.url(this.s.path()), { restore: name, ...(options.stateful === false ? { stateful: false } : {}) });
      await this.s.refresh();
      this.s.emit('snapshot-restored', { name: this.s.name(), snapshot: name });
    }));
  }

  rename(from: string, to: string): Promise<void> {
    try {
      validateSnapshotName(from);
      validateSnapshotName(to);
    } catch (e) {
      return Promise.reject(e);
    }
    return this.s.serialized(async () => {
      await this.get(from);
      if (from === to) return;
      if ((await this.list()).some((i) => i.name === to)) throw new AlreadyExists(`${this.s.name()} already has a snapshot named "${to}"`);
      await this.s.client.call('POST', this.url(from), { name: to });
      this.s.emit('snapshot-renamed', { name: this.s.name(), snapshot: to, previous: from });
    });
  }

  delete(name: string, options: SnapshotDeleteOptions = {}): Promise<void> {
    try {
      validateSnapshotName(name);
      checkSnapshotDelete(options);
    } catch (e) {
      return Promise.reject(e);
    }
    return longOperation(`deleting snapshot ${name} of ${this.s.name()}`, options, () => this.s.serialized(async () => {
      await this.s.client.call('DELETE', this.url(name)).catch((e) => this.missing(name, e));
      this.s.emit('snapshot-deleted', { name: this.s.name(), snapshot: name });
    }));
  }
}
