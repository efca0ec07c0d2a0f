/**
 * A host whose instances live on an LXD server: `Host.connect(options)`. Its instances are lxq
 * Instances (lib/drivers/remote/instance.ts), one object per name, kept up to date by the host's events
 * websocket (lib/drivers/remote/events.ts). New instances go on `target` (a cluster member) if given.
 */
import type WebSocket from 'ws';

import { type InstanceConfigInput, type InstanceConfigPatch, patchConfig, validateConfig } from '../../config/options';
import type { DevicesInput } from '../../devices/declarations';
import { withHwaddrs } from '../../devices/nic';
import { normalizeDevices } from '../../devices/validate';
import { detached, longMethods } from '../../core/abort';
import { Aborted, AlreadyExists, InvalidArgument, NotFound, NotSupported, PermissionDenied } from '../../core/errors';
import type { CopyOptions } from '../../storage/types';
import { optionKeys, refuseUnknownKeys } from '../../core/keys';
import { type EventsOptions, lifecycleEvents, type LifecycleIterator } from '../../events/iterator';
import type { LifecycleAction, LifecycleEvent, StorageEvent } from '../../events/lifecycle';
import { checkEphemeral, type InstanceType, launchWith, type StartOptions } from '../../instance/instance';
import type { InstanceHost } from '../../instance/host';
import { LxdClient, LxdEndpoint } from './client';
import { RemoteEvents } from './events';
import { RemoteProfiles } from './profiles';
import { RemoteStorage } from './storage';
import { RemoteImages } from './images';
import { validateName } from '../../instance/names';
import { LXD_NAME, lxdType, lxdTypeName, refuseNotOnLxd } from './convert';
import { RemoteInstance, type RemoteInstanceHooks } from './instance';

/**
 * Where an LXD server is and how to authenticate to it, and the cluster member new instances go on.
 *
 * @example
 * ```ts
 * await Host.connect({ url: 'https://lxd.lan:8443', cert, key, serverCert, project: 'lab', target: 'node2' });
 * ```
 */
export interface ConnectOptions extends LxdEndpoint {
  /** The cluster member new instances are placed on (default: the server decides). */
  target?: string;
}

/**
 * What `RemoteHost.create` takes: what `Host.create` takes (lxq's options and devices, checked by
 * the same declarations before anything is sent), an image the server has, and LXD profiles.
 *
 * @example
 * ```ts
 * await lxd.create('web1', { image: 'debian/12', profiles: ['default'], config: { 'limits.cpu': 2 }, devices: { data: { type: 'disk', source: '/srv', path: '/srv' } } });
 * ```
 */
export interface RemoteCreateOptions {
  type?: InstanceType;
  /** An image alias or fingerprint the server has. */
  image: string;
  /** LXD profiles (default: the server's `default`). */
  profiles?: string[];
  /** lxq's options (limits.cpu, limits.memory, environment.*, user.*, raw.lxc…), as `Host.create` takes them. */
  config?: InstanceConfigInput;
  /** Devices, as `Host.create` takes them; LXD checks them against its own host. */
  devices?: DevicesInput;
  /** LXD's `ephemeral`: the server deletes the instance when it stops. */
  ephemeral?: boolean;
  /** Aborting cancels LXD's operation (or stops waiting, saying so) and deletes what it made: Aborted. */
  signal?: AbortSignal;
}
/**
 * What `RemoteHost.launch` takes: `create`'s options (but the image, given first) and `start`'s `wait`.
 *
 * @example
 * ```ts
 * const options: RemoteLaunchOptions = { profiles: ['default'], wait: 'agent' };
 * await remote.launch('busybox', 'c1', options);
 * ```
 */
export type RemoteLaunchOptions = Omit<RemoteCreateOptions, 'image'> & StartOptions;
const REMOTE_CREATE_OPTION_KEYS = optionKeys<RemoteCreateOptions>({ type: true, image: true, profiles: true, config: true, devices: true, ephemeral: true, signal: true });

/** A target must be a member of the server's cluster: refused up front, in the server's words, rather than at the first create. */
async function checkTarget(client: LxdClient, target: string): Promise<void> {
  if (typeof target !== 'string' || !LXD_NAME.test(target)) throw new InvalidArgument(`target ${JSON.stringify(target)} is not a cluster member name`);
  if (!(await client.request('GET', '/1.0/cluster')).metadata?.enabled)
    throw new InvalidArgument(`target ${JSON.stringify(target)}: the LXD server at ${client.where} is not clustered`);
  await client.request('GET', `/1.0/cluster/members/${encodeURIComponent(target)}`);
}

/**
 * Instances on an LXD server, through its REST API (`Host.connect`).
 *
 * @example
 * ```ts
 * const lxd = await Host.connect({ socket: '/var/lib/lxd/unix.socket' });
 * const r = await lxd.create('web1', { image: 'debian/12' });
 * await r.start();
 * ```
 */
export class RemoteHost implements InstanceHost {
  /** The server's images; `copyFrom(localHost.images, name)` puts an lxq image there. */
  readonly images: RemoteImages;
  /** The server's profiles (LXD's /1.0/profiles), as a local host's. */
  readonly profiles: RemoteProfiles;
  /** The server's storage pools and custom volumes (LXD's /1.0/storage-pools), as a local host's. */
  readonly storage: RemoteStorage;
  /** The instances this host has handed out, one object per name (as a local host does). */
  private readonly held = new Map<string, RemoteInstance>();
  private readonly hub: RemoteEvents;
  private readonly hooks: RemoteInstanceHooks;
  /** The websockets of running commands and attached consoles, closed with the host. */
  private readonly sockets = new Set<WebSocket>();

  private constructor(
    readonly client: LxdClient,
    readonly target: string | undefined,
    /** What the server says it can run (GET /1.0 environment.instance_types or its drivers). */
    readonly instanceTypes: string[],
  ) {
    this.images = new RemoteImages(client);
    this.profiles = new RemoteProfiles(client);
    // Its changes' events count as this process's own (`requestor: 'local'`), as an instance's.
    this.storage = new RemoteStorage(client, (name, actions) => this.hub.expect(name, actions));
    this.hub = new RemoteEvents(client, {
      external: (name, action, context) => this.external(name, action, context),
      reconnected: () => void Promise.all([...this.held.values()].map((i) => i.resync())),
    });
    this.hooks = {
      expect: (name, actions) => this.hub.expect(name, actions),
      sockets: {
        finished: (r, what) => this.hub.operationDone(r, what),
        track: (ws) => {
          this.sockets.add(ws);
          ws.once('close', () => this.sockets.delete(ws));
        },
      },
      deleted: (i) => void (this.held.get(i.name) === i && this.held.delete(i.name)),
      renamed: (i, previous) => {
        if (this.held.get(previous) === i) this.held.delete(previous);
        this.held.set(i.name, i);
      },
    };
  }

  /**
   * Lifecycle events of the server's instances (LXD's action names, the local host's shape),
   * made by this process (`requestor: 'local'`) or by any other client ('external'). Registered
   * synchronously on the host's events websocket, opened by `connect` (`ready()` resolves once it
   * is open); it reconnects by itself after a loss.
   *
   * @example
   * ```ts
   * remote.on('lifecycle', (e) => console.log(e.action, e.name, e.requestor));
   * await remote.ready();
   * ```
   */
  on(event: 'lifecycle', listener: (e: LifecycleEvent) => void): this;
  /** The server's storage changes (LXD's storage-pool-* and custom volumes' storage-volume-* events), in a local host's `storage` shape. */
  on(event: 'storage', listener: (e: StorageEvent) => void): this;
  on(event: 'lifecycle' | 'storage', listener: ((e: LifecycleEvent) => void) | ((e: StorageEvent) => void)): this {
    if (event === 'lifecycle') this.hub.subscribe(listener as (e: LifecycleEvent) => void);
    else if (event === 'storage') this.hub.subscribe(listener as (e: StorageEvent) => void, 'storage');
    else throw new InvalidArgument(`unknown host event ${JSON.stringify(event)}; use "lifecycle" or "storage"`);
    return this;
  }

  /** Removes a listener added by `on`. */
  off(event: 'lifecycle', listener: (e: LifecycleEvent) => void): this;
  off(event: 'storage', listener: (e: StorageEvent) => void): this;
  off(event: 'lifecycle' | 'storage', listener: ((e: LifecycleEvent) => void) | ((e: StorageEvent) => void)): this {
    this.hub.unsubscribe(listener, event === 'storage' ? 'storage' : 'lifecycle');
    return this;
  }

  /**
   * Resolves once the events websocket is open: from then on every change any client makes is
   * delivered to the listeners (LXD keeps no backlog for a socket not yet open).
   */
  ready(): Promise<void> {
    return this.hub.ready();
  }

  /** The lifecycle events as an async iterator, ended by `signal` (as a local host's `events()`). */
  events(options: EventsOptions = {}): LifecycleIterator {
    return lifecycleEvents(this.hub, options);
  }

  /** How many times the events websocket was made again after a loss. */
  get eventReconnects(): number {
    return this.hub.reconnects;
  }

  private external(name: string, action: LifecycleAction, context: Record<string, unknown>): void {
    const previous = typeof context.old_name === 'string' ? context.old_name : undefined;
    if (action === 'instance-renamed' && previous) {
      const i = this.held.get(previous);
      this.held.delete(previous);
      // Its next read finds it under the new name.
      if (i) void i.renamedElsewhere(name);
      return;
    }
    const i = this.held.get(name);
    if (!i) return;
    i.observeExternal(action);
    if (action === 'instance-deleted') this.held.delete(name);
  }

  /** One object per instance: a known one is kept (its listeners too), with what the server says now. */
  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- LXD's JSON: its fields are read where they are used
  private hold(meta: any, etag?: string): RemoteInstance {
    this.hub.knowType(meta.name, lxdType(meta.type));
    const known = this.held.get(meta.name);
    if (known && known.createdAt.getTime() === new Date(meta.created_at).getTime()) {
      known.adopt(meta, etag);
      return known;
    }
    const i = new RemoteInstance(this.client, meta, this.hooks, etag);
    this.held.set(i.name, i);
    return i;
  }

  /** Connects and checks that the server trusts us and the project exists. */
  static async connect(options: ConnectOptions = {}): Promise<RemoteHost> {
    const client = new LxdClient(options);
    let types: string[];
    try {
      const info = (await client.request('GET', '/1.0')).metadata;
      // An untrusted client is told so by GET /1.0 (auth: untrusted); the server's own refusal (403) says why.
      if (info.auth !== 'trusted') {
        await client.request('GET', '/1.0/instances');
        throw new PermissionDenied(`LXD at ${client.where} does not trust this client (auth: ${info.auth})`);
      }
      // LXD 5.0 names its drivers ("lxc | qemu"); newer servers also list instance_types.
      const env = info.environment ?? {};
      types = env.instance_types ?? String(env.driver ?? '').split('|').map((d: string) => ({ lxc: 'container', qemu: 'virtual-machine' })[d.trim()]).filter(Boolean);
      if (options.project) await client.request('GET', `/1.0/projects/${encodeURIComponent(options.project)}`);
      if (options.target !== undefined) await checkTarget(client, options.target);
    } catch (e) {
      client.close();
      throw e;
    }
    return new RemoteHost(client, options.target, types);
  }

  /** Creates an instance on LXD and starts it; with `wait`, resolves once it is ready that way too (see Host.launch). */
  launch(image: string, name: string, options: RemoteLaunchOptions = {}): Promise<RemoteInstance> {
    return launchWith((n, o: RemoteCreateOptions) => this.create(n, o), image, name, options);
  }

  async create(name: string, options: RemoteCreateOptions): Promise<RemoteInstance> {
    validateName(name);
    if (!options || typeof options !== 'object') throw new InvalidArgument('create options must be an object');
    refuseUnknownKeys('create', options, REMOTE_CREATE_OPTION_KEYS);
    if (typeof options.image !== 'string' || !options.image) throw new InvalidArgument('create: `image` (an alias or fingerprint on the server) is required');
    const type = options.type ?? 'container';
    if (type !== 'container' && type !== 'vm') throw new InvalidArgument(`create: type ${JSON.stringify(type)} is not 'container' or 'vm'`);
    const ephemeral = checkEphemeral(options.ephemeral);
    if (options.profiles !== undefined && (!Array.isArray(options.profiles) || !options.profiles.every((p) => typeof p === 'string' && LXD_NAME.test(p)))) {
      throw new InvalidArgument('create: profiles must be an array of LXD profile names');
    }
    const config = validateConfig(type, options.config as Record<string, unknown> | undefined, 'remote');
    refuseNotOnLxd(config);
    const devices = withHwaddrs(normalizeDevices(type, options.devices));
    if (type === 'vm' && this.instanceTypes.length && !this.instanceTypes.includes('virtual-machine')) {
      // The image's type is checked before VM support, so ask with an empty VM: its refusal
      // carries the server's reason (e.g. "vhost_vsock kernel module not loaded"); nothing is made.
      const why = await this.client
        .call('POST', this.client.url('/1.0/instances', { target: this.target }), { name, type: 'virtual-machine', source: { type: 'none' } })
        .then(
          () => this.client.call('DELETE', this.client.url(`/1.0/instances/${name}`)).then(() => undefined),
          (e: Error) => e.message,
        );
      if (why !== undefined) throw new NotSupported(`${why} (the server lists instance types: ${this.instanceTypes.join(', ')})`);
    }
    const source = /^[0-9a-f]{12,64}$/.test(options.image) ? { type: 'image', fingerprint: options.image } : { type: 'image', alias: options.image };
    const done = this.hub.expect(name, ['instance-created']);
    await this.client.call('POST', this.client.url('/1.0/instances', { target: this.target }), {
      name,
      type: lxdTypeName(type),
      source,
      ...(options.profiles ? { profiles: options.profiles } : {}),
      config,
      devices,
      ephemeral,
    }).catch((e) => this.undoAborted(name, e)).finally(done);
    return this.get(name);
  }

  async get(name: string): Promise<RemoteInstance> {
    validateName(name);
    const r = await this.client.request('GET', this.client.url(`/1.0/instances/${name}`));
    return this.hold(r.metadata, r.etag);
  }

  /** The server's own GET /1.0/metrics, as it serves it (the client must be trusted; LXD 4.19 and later). */
  async metrics(): Promise<string> {
    const r = await this.client.request('GET', this.client.url('/1.0/metrics'), undefined, { binary: true });
    return r.raw?.toString('utf8') ?? '';
  }

  async list(): Promise<RemoteInstance[]> {
    const all = (await this.client.request('GET', this.client.url('/1.0/instances', { recursion: '1' }))).metadata as Array<Record<string, unknown>>;
    return all.map((m) => this.hold(m));
  }

  /**
   * A copy of `source` (or of one of its snapshots) named `name`, made by the server with its
   * storage driver's own copy (the snapshots too unless `instanceOnly`), on this host's `target`
   * member if one was given. `config` is set over the source's options afterwards, as `update()`
   * sets it; it is checked before anything is copied.
   */
  async copy(source: string, name: string, options: RemoteCopyOptions = {}): Promise<RemoteInstance> {
    validateName(name);
    if (options === null || typeof options !== 'object') throw new InvalidArgument('copy options must be an object');
    refuseUnknownKeys('copy', options, REMOTE_COPY_OPTION_KEYS);
    if (options.instanceOnly !== undefined && typeof options.instanceOnly !== 'boolean') throw new InvalidArgument('instanceOnly must be a boolean');
    const ephemeral = checkEphemeral(options.ephemeral);
    const from = await this.get(source);
    if (options.snapshot !== undefined) await from.snapshots.get(options.snapshot); // NotFound before any work
    if (options.config) patchConfig(from.type, from.config, options.config, 'remote');
    const taken = await this.client.request('GET', this.client.url(`/1.0/instances/${name}`)).then(() => true, (e) => (e instanceof NotFound ? false : Promise.reject(e)));
    if (taken) throw new AlreadyExists(`an instance named "${name}" already exists on the LXD server at ${this.client.where}`);
    // The source's profiles, as `lxc copy` sends them (the server would give the copy its default profile).
    const { profiles } = (await this.client.request('GET', this.client.url(`/1.0/instances/${from.name}`))).metadata;
    const done = this.hub.expect(name, ['instance-created']);
    await this.client
      .call('POST', this.client.url('/1.0/instances', { target: this.target }), {
        name,
        type: lxdTypeName(from.type),
        profiles,
        ephemeral,
        source: { type: 'copy', source: options.snapshot === undefined ? from.name : `${from.name}/${options.snapshot}`, instance_only: options.instanceOnly === true },
      })
      .catch((e) => this.undoAborted(name, e))
      .finally(done);
    const copy = await this.get(name);
    if (options.config && Object.keys(options.config).length) await copy.update(options.config);
    return copy;
  }

  /** The cluster's members (GET /1.0/cluster/members); a server that is not clustered is one member of its own. */
  async members(): Promise<ClusterMember[]> {
    const cluster = (await this.client.request('GET', '/1.0/cluster')).metadata;
    if (!cluster?.enabled) {
      const info = (await this.client.request('GET', '/1.0')).metadata;
      return [{ name: info.environment?.server_name ?? 'none', url: '', status: 'online', roles: [], architecture: info.environment?.kernel_architecture ?? '', message: 'not clustered' }];
    }
    const all = (await this.client.request('GET', '/1.0/cluster/members?recursion=1')).metadata as Array<Record<string, any>>; // eslint-disable-line @typescript-eslint/no-explicit-any -- LXD's JSON: its fields are read where they are used
    return all.map((m) => ({ name: m.server_name, url: m.url, status: String(m.status).toLowerCase(), roles: m.roles ?? [], architecture: m.architecture, message: m.message }));
  }

  close(): void {
    this.hub.close();
    for (const ws of this.sockets) ws.terminate();
    this.sockets.clear();
    this.client.close();
  }

  /** `await using remote = await Host.connect()`: closed at the scope's end. */
  async [Symbol.asyncDispose](): Promise<void> {
    this.close();
  }

  /** After an aborted create or copy of `name`: the instance the server made of it, if any, is deleted; `e` thrown again. */
  private async undoAborted(name: string, e: unknown): Promise<never> {
    if (e instanceof Aborted) await detached(() => this.client.call('DELETE', this.client.url(`/1.0/instances/${name}`))).catch(() => undefined);
    throw e;
  }
}
// create and copy take signal (copy onProgress: LXD's progress), as a local host's (lib/core/abort.ts).
longMethods(RemoteHost.prototype, {
  create: { options: 1, progress: false, what: (a) => `creating ${String(a[0])}` },
  copy: { options: 2, progress: true, what: (a) => `copying ${String(a[0])} to ${String(a[1])}` },
});

/**
 * What `RemoteHost.copy` takes: a snapshot to copy, whether to leave the snapshots behind, and
 * options set over the source's.
 *
 * @example
 * ```ts
 * await lxd.copy('web', 'web-test', { snapshot: 'snap0', instanceOnly: true, config: { 'user.role': 'test' } });
 * ```
 */
export type RemoteCopyOptions = Pick<CopyOptions, 'snapshot' | 'instanceOnly' | 'ephemeral' | 'signal' | 'onProgress'> & { config?: InstanceConfigPatch };
const REMOTE_COPY_OPTION_KEYS = optionKeys<RemoteCopyOptions>({ snapshot: true, instanceOnly: true, config: true, ephemeral: true, signal: true, onProgress: true });

/**
 * A member of an LXD cluster, as `RemoteHost.members()` lists it.
 *
 * @example
 * ```ts
 * for (const m of await lxd.members()) console.log(m.name, m.status, m.roles);
 * ```
 */
export interface ClusterMember {
  name: string;
  url: string;
  /** LXD's status, lower-cased: online, offline, evacuated… */
  status: string;
  roles: string[];
  architecture: string;
  message: string;
}
