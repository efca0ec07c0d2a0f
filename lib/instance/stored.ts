/**
 * A local instance as it is stored: its directory, its record (`lxq.json`) and the lock every
 * process holds while it changes the instance (record.ts), and the profiles the record names.
 * What the instance says of itself (name, options, devices…) is read from there; each operation
 * starts from the record as it is on disk. The common base of the local drivers (base.ts) builds
 * on it.
 */
import * as path from 'node:path';

import type { InstanceConfig, InstanceType } from '../config/options';
import type { Devices } from '../devices/declarations';
import { CommonInstance } from './common';
import type { InstanceRecord } from './instance';
import { InstanceProfiles, profilesOf, type StoredProfile } from './profiles';
import { RecordFile } from './record';

/* eslint-disable-next-line @typescript-eslint/no-require-imports -- only a rename or a move loads it: `lxq list` and `lxq exec` never do */
const move = (): typeof import('../storage/move') => require('../storage/move');

export abstract class StoredInstance extends CommonInstance {
  /** Held by whichever process changes the instance; see exclusive(). */
  private readonly recordFile: RecordFile;
  /** True while an operation of this object holds the instance's lock (what changes then is its own doing). */
  protected holdingLock = false;
  /** The profiles the record names, as last read (each operation reads them again; see exclusive). */
  protected readonly profileSet = new InstanceProfiles();

  protected constructor(
    /** The instance's own directory under the host path (it changes with a rename). */
    private location: string,
    protected record: InstanceRecord,
  ) {
    super();
    this.recordFile = new RecordFile(location, () => this.record.name);
  }

  /** The instance's own directory under the host path. */
  get dir(): string {
    return this.location;
  }

  get name(): string {
    return this.record.name;
  }
  get type(): InstanceType {
    return this.record.type;
  }
  get image(): string {
    return this.record.image;
  }
  get createdAt(): Date {
    return new Date(this.record.createdAt);
  }
  get config(): Readonly<InstanceConfig> {
    return this.record.config;
  }
  get devices(): Readonly<Devices> {
    return this.record.devices ?? {};
  }
  get profiles(): readonly string[] {
    return profilesOf(this.record);
  }
  get expandedConfig(): Readonly<InstanceConfig> {
    return this.profileSet.expand(this.record).config;
  }
  get expandedDevices(): Readonly<Devices> {
    return this.profileSet.expand(this.record).devices;
  }
  /** @internal Reads the profiles the record names again (the host calls it on opening the instance; each operation does). */
  loadProfiles(given?: StoredProfile[]): Promise<void> {
    return this.profileSet.load(this.dir, this.profiles, given);
  }
  get ephemeral(): boolean {
    return this.record.ephemeral === true;
  }

  /** What a driver redoes after its directory and name changed (the instance is stopped). */
  protected abstract renamed(): Promise<void>;
  /** Called at the end of each serialized operation, still under the lock: what a driver took for it only. */
  protected async operationEnded(): Promise<void> {}

  /** One operation at a time across processes too: each holds the instance's lock file and starts from the record as it is on disk (another process may have changed it). */
  protected override exclusive<T>(op: () => Promise<T>): Promise<T> {
    return this.recordFile.hold(async () => {
      this.holdingLock = true;
      try {
        this.record = await this.recordFile.refreshed(this.record);
        await this.loadProfiles();
        return await op();
      } finally {
        this.holdingLock = false;
        await this.operationEnded();
      }
    });
  }

  protected async saveRecord(record: InstanceRecord): Promise<void> {
    await this.recordFile.save(record);
    this.record = record;
  }

  /** The instance is deleted: its record file is let go. */
  protected async closeRecord(): Promise<void> {
    await this.recordFile.close();
  }

  /**
   * LXD's move on one host: the directory moves by one rename, then the record and whatever the
   * driver derives from its name and paths (liblxc's config) follow.
   */
  protected async moveTo(newName: string): Promise<void> {
    const target = path.join(path.dirname(this.dir), newName);
    await move().moveInstanceDir(this.dir, target, newName);
    this.location = target;
    this.recordFile.moved(target);
    await this.saveRecord({ ...this.record, name: newName });
    await this.renamed();
  }
}
