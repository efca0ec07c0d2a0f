/**
 * lxq itself, in this process: the Instance API over the native addon, timed around each call.
 * It runs on the orchestrator's Host, whose instancesDir is the lxcpath every peer uses.
 */
import type { Host } from '../../lib';
import { ContainerOp, ContainerPeer, PeerContext, Samples } from './peer';

/** A graceful stop this long means the halt signal was not honoured and lxq fell back to a kill. */
const GRACEFUL_LIMIT_MS = 9_000; // lxq's default stop timeout is 10 s

export class LxqPeer implements ContainerPeer {
  readonly label = 'lxq';

  constructor(private readonly host: Host) {}

  async check(ctx: PeerContext): Promise<string | null> {
    if (this.host.instancesDir !== ctx.lxcpath) return `the Host's instancesDir ${this.host.instancesDir} is not the run's lxcpath ${ctx.lxcpath}`;
    return null;
  }

  async cycle(_ctx: PeerContext, name: string, n: number): Promise<Samples> {
    const out: Samples = {};
    const timed = async <T>(op: ContainerOp, fn: () => Promise<T>): Promise<T> => {
      const t = performance.now();
      const v = await fn();
      (out[op] ??= []).push(performance.now() - t);
      return v;
    };
    const c = await timed('create', () => this.host.create(name, { image: 'busybox' }));
    await timed('start', () => c.start());
    for (let i = 0; i < n; i++) {
      const s = await timed('state', () => c.status());
      if (s !== 'running') throw new Error(`lxq: ${name} is ${s}, not running`);
    }
    for (let i = 0; i < n; i++) {
      const r = await timed('exec', () => c.exec(['/bin/true']));
      if (r.exitCode !== 0) throw new Error(`lxq: /bin/true in ${name} exited ${r.exitCode} (signal ${r.signal})`);
    }
    for (let i = 0; i < n; i++) {
      await timed('freeze', () => c.freeze());
      await timed('unfreeze', () => c.unfreeze());
    }
    await timed('stop-force', () => c.stop({ force: true }));
    await timed('start', () => c.start());
    await new Promise((r) => setTimeout(r, 200)); // busybox init drops a halt signal that comes before its handlers
    await timed('stop-graceful', () => c.stop());
    const graceful = out['stop-graceful']![0];
    if (graceful > GRACEFUL_LIMIT_MS) throw new Error(`lxq: graceful stop of ${name} took ${graceful.toFixed(0)} ms: the halt signal was ignored and it was killed`);
    await timed('delete', () => c.delete());
    return out;
  }
}
