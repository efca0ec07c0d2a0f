/**
 * A host whose instances live on an LXD server: `Host.connect(options)`. Instances are driven
 * through the REST API (lib/remote/client.ts): lifecycle through PUT …/state, state from …/state
 * mapped to lxq's InstanceState fields. New instances go on `target` (a cluster member) if given.
 */
import { InvalidArgument, InvalidState, LxqError, NotFound, NotSupported } from '../errors';
import type { InstanceState, InstanceStatus, InstanceType, NetworkInterface, StopOptions } from '../instance/instance';
import { reportedAddresses } from '../instance/instance';
import { LxdClient, LxdEndpoint } from './client';
import { remoteExec, RemoteExecOptions, RemoteExecResult } from './exec';

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
 * What `RemoteHost.create` takes: type, image alias or fingerprint, profiles, raw LXD config.
 *
 * @example
 * ```ts
 * await lxd.create('web1', { type: 'container', image: 'debian/12', profiles: ['default'], config: { 'limits.cpu': '2' } });
 * ```
 */
export interface RemoteCreateOptions {
  type?: InstanceType;
  /** An image alias or fingerprint the server has. */
  image: string;
  /** LXD profiles (default: the server's `default`). */
  profiles?: string[];
  /** Raw LXD config keys (limits.cpu, limits.memory, user.*…). */
  config?: Record<string, string>;
}

const NAME = /^[a-zA-Z][a-zA-Z0-9-]{0,62}$/;
const checkName = (name: string) => {
  if (typeof name !== 'string' || !NAME.test(name) || name.endsWith('-'))
    throw new InvalidArgument(`instance name ${JSON.stringify(name)}: LXD accepts letters, digits and '-', starting with a letter, at most 63 characters`);
};

const STATUS: Record<string, InstanceStatus> = {
  Running: 'running', Stopped: 'stopped', Frozen: 'frozen', Error: 'error', Starting: 'starting', Stopping: 'stopping', Freezing: 'freezing',
};
const status = (s: string): InstanceStatus => STATUS[s] ?? 'error';

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
export class RemoteHost {
  private constructor(
    readonly client: LxdClient,
    readonly target: string | undefined,
    /** What the server says it can run (GET /1.0 environment.instance_types or its drivers). */
    readonly instanceTypes: string[],
  ) {}

  /** Connects and checks that the server trusts us and the project exists. */
  static async connect(options: ConnectOptions = {}): Promise<RemoteHost> {
    const client = new LxdClient(options);
    let types: string[] = [];
    try {
      const info = (await client.request('GET', '/1.0')).metadata;
      if (info.auth !== 'trusted') throw new InvalidArgument(`LXD at ${client.where} does not trust this client (auth: ${info.auth})`);
      // LXD 5.0 names its drivers ("lxc | qemu"); newer servers also list instance_types.
      const env = info.environment ?? {};
      types = env.instance_types ?? String(env.driver ?? '').split('|').map((d: string) => ({ lxc: 'container', qemu: 'virtual-machine' })[d.trim()]).filter(Boolean);
      if (options.project) await client.request('GET', `/1.0/projects/${encodeURIComponent(options.project)}`);
    } catch (e) {
      client.close();
      throw e;
    }
    return new RemoteHost(client, options.target, types);
  }

  async create(name: string, options: RemoteCreateOptions): Promise<RemoteInstance> {
    checkName(name);
    if (!options || typeof options.image !== 'string' || !options.image) throw new InvalidArgument('create: `image` (an alias or fingerprint on the server) is required');
    const type = options.type ?? 'container';
    if (type !== 'container' && type !== 'vm') throw new InvalidArgument(`create: type ${JSON.stringify(type)} is not 'container' or 'vm'`);
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
    await this.client.call('POST', this.client.url('/1.0/instances', { target: this.target }), {
      name,
      type: type === 'vm' ? 'virtual-machine' : 'container',
      source,
      ...(options.profiles ? { profiles: options.profiles } : {}),
      config: options.config ?? {},
    });
    return this.get(name);
  }

  async get(name: string): Promise<RemoteInstance> {
    checkName(name);
    const m = (await this.client.request('GET', this.client.url(`/1.0/instances/${name}`))).metadata;
    return new RemoteInstance(this.client, m);
  }

  async list(): Promise<RemoteInstance[]> {
    const all = (await this.client.request('GET', this.client.url('/1.0/instances', { recursion: '1' }))).metadata as Array<Record<string, unknown>>;
    return all.map((m) => new RemoteInstance(this.client, m));
  }

  /** The cluster's members (GET /1.0/cluster/members); a server that is not clustered is one member of its own. */
  async members(): Promise<ClusterMember[]> {
    const cluster = (await this.client.request('GET', '/1.0/cluster')).metadata;
    if (!cluster?.enabled) {
      const info = (await this.client.request('GET', '/1.0')).metadata;
      return [{ name: info.environment?.server_name ?? 'none', url: '', status: 'online', roles: [], architecture: info.environment?.kernel_architecture ?? '', message: 'not clustered' }];
    }
    const all = (await this.client.request('GET', '/1.0/cluster/members?recursion=1')).metadata as Array<Record<string, any>>; // eslint-disable-line @typescript-eslint/no-explicit-any
    return all.map((m) => ({ name: m.server_name, url: m.url, status: String(m.status).toLowerCase(), roles: m.roles ?? [], architecture: m.architecture, message: m.message }));
  }

  close(): void {
    this.client.close();
  }
}

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

/**
 * An instance on an LXD server: lifecycle, state and exec through the REST API.
 *
 * @example
 * ```ts
 * const r = await lxd.get('web1');
 * console.log((await r.exec(['hostname'])).stdout, await r.status());
 * await r.stop({ force: true });
 * ```
 */
export class RemoteInstance {
  readonly name: string;
  readonly type: InstanceType;
  readonly createdAt: Date;
  readonly location?: string;

  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  constructor(private readonly client: LxdClient, meta: any) {
    this.name = meta.name;
    this.type = meta.type === 'virtual-machine' ? 'vm' : 'container';
    this.createdAt = new Date(meta.created_at);
    this.location = meta.location || undefined;
  }

  private get path(): string {
    return `/1.0/instances/${this.name}`;
  }

  private setState(body: Record<string, unknown>): Promise<unknown> {
    return this.client.call('PUT', this.client.url(`${this.path}/state`), body);
  }

  async status(): Promise<InstanceStatus> {
    return status((await this.client.request('GET', this.client.url(this.path))).metadata.status);
  }

  async start(): Promise<void> {
    if ((await this.status()) === 'running') throw new InvalidState(`${this.name} is already running`, 'running');
    await this.setState({ action: 'start', timeout: 30 });
  }

  /** As locally: a clean shutdown for `timeout` seconds (default 30), then a forced stop. */
  async stop(options: StopOptions = {}): Promise<void> {
    const s = await this.status();
    if (s === 'stopped') throw new InvalidState(`${this.name} is not running`, s);
    if (options.force) return void (await this.setState({ action: 'stop', force: true }));
    const timeout = options.timeout ?? 30;
    if (!(Number.isFinite(timeout) && timeout >= 0)) throw new InvalidArgument(`stop: timeout ${timeout} is not a number of seconds >= 0`);
    try {
      await this.setState({ action: 'stop', force: false, timeout: Math.ceil(timeout) });
    } catch (e) {
      if (!(e instanceof LxqError) || e instanceof NotFound) throw e;
      // The clean shutdown may finish between the status read and the forced stop: not a failure.
      if ((await this.status()) !== 'stopped') await this.setState({ action: 'stop', force: true }).catch(async (f) => ((await this.status()) === 'stopped' ? undefined : Promise.reject(f)));
    }
  }

  async restart(options: StopOptions = {}): Promise<void> {
    await this.stop(options);
    await this.start();
  }

  async freeze(): Promise<void> {
    const s = await this.status();
    if (s !== 'running') throw new InvalidState(`${this.name} is ${s}: only a running instance can be frozen`, s);
    await this.setState({ action: 'freeze' });
  }

  async unfreeze(): Promise<void> {
    const s = await this.status();
    if (s !== 'frozen') throw new InvalidState(`${this.name} is ${s}, not frozen`, s);
    await this.setState({ action: 'unfreeze' });
  }

  async delete(options: { force?: boolean } = {}): Promise<void> {
    const s = await this.status();
    if (s !== 'stopped') {
      if (!options.force) throw new InvalidState(`${this.name} is ${s}: stop it first or delete with { force: true }`, s);
      await this.setState({ action: 'stop', force: true });
    }
    await this.client.call('DELETE', this.client.url(this.path));
  }

  async state(): Promise<InstanceState> {
    const m = (await this.client.request('GET', this.client.url(`${this.path}/state`))).metadata;
    // eslint-disable-next-line @typescript-eslint/no-explicit-any
    const interfaces: NetworkInterface[] = Object.entries<any>(m.network ?? {}).map(([name, n]) => ({
      name,
      hwaddr: n.hwaddr ?? '',
      mtu: n.mtu ?? 0,
      // eslint-disable-next-line @typescript-eslint/no-explicit-any
      addresses: (n.addresses ?? []).map((a: any) => ({ family: a.family === 'inet6' ? 'inet6' : 'inet', address: a.address, prefix: Number(a.netmask) })),
      counters: {
        bytesReceived: n.counters?.bytes_received ?? 0,
        bytesSent: n.counters?.bytes_sent ?? 0,
        packetsReceived: n.counters?.packets_received ?? 0,
        packetsSent: n.counters?.packets_sent ?? 0,
      },
    }));
    return {
      status: status(m.status),
      pid: m.pid > 0 ? m.pid : null,
      cpu: { usageNs: m.cpu?.usage ?? 0 },
      memory: { usageBytes: m.memory?.usage ?? 0, limitBytes: null },
      processes: m.processes > 0 ? m.processes : 0,
      network: { addresses: reportedAddresses(interfaces), interfaces },
      devices: [],
    };
  }

  /** Runs a command (no pty) through LXD's exec websockets: separate stdout/stderr, exit code, stdin. */
  exec(command: string[], options: RemoteExecOptions = {}): Promise<RemoteExecResult> {
    return remoteExec(this.client, this.path, command, options);
  }

  /** The console's log (what the instance's init wrote), as LXD keeps it. */
  async consoleLog(): Promise<string> {
    const r = await this.client.request('GET', this.client.url(`${this.path}/console`), undefined, { binary: true });
    return r.raw?.toString('utf8') ?? '';
  }
}

