/**
 * The lxc-* command line tools, spawned from Node with execFile (stdio on pipes, read to end,
 * exit status reaped), each execFile timed in Node: what a Node program without a binding does.
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';

import { ContainerOp, ContainerPeer, PeerContext, Samples, cloneUnsupported } from './peer';

const run = promisify(execFile);

export class LxcCliPeer implements ContainerPeer {
  readonly label = 'lxc-* CLI (execFile)';

  async check(): Promise<string | null> {
    const noClone = cloneUnsupported();
    if (noClone) return noClone;
    for (const tool of ['lxc-copy', 'lxc-start', 'lxc-info', 'lxc-attach', 'lxc-freeze', 'lxc-unfreeze', 'lxc-stop', 'lxc-destroy']) {
      try {
        await run(tool, ['--version']);
      } catch {
        return `${tool} not installed (apt-get install lxc)`;
      }
    }
    return null;
  }

  async cycle(ctx: PeerContext, name: string, n: number): Promise<Samples> {
    const out: Samples = {};
    const P = ['-P', ctx.lxcpath];
    const timed = async (op: ContainerOp, tool: string, args: string[]): Promise<string> => {
      const t = performance.now();
      let stdout: string;
      try {
        ({ stdout } = await run(tool, args, { maxBuffer: 16 << 20 }));
      } catch (e) {
        const err = e as { stderr?: string; message: string };
        throw new Error(`lxc-* CLI ${op} (${tool} ${args.join(' ')}) failed: ${(err.stderr || err.message).trim()}`, { cause: e });
      }
      (out[op] ??= []).push(performance.now() - t);
      return stdout;
    };
    await timed('create', 'lxc-copy', [...P, '-n', ctx.template, '-N', name]);
    await timed('start', 'lxc-start', [...P, '-n', name]);
    for (let i = 0; i < n; i++) {
      const s = await timed('state', 'lxc-info', [...P, '-n', name, '-s']);
      if (!/State:\s+RUNNING/.test(s)) throw new Error(`lxc-* CLI: ${name} is not RUNNING: ${s.trim()}`);
    }
    for (let i = 0; i < n; i++) await timed('exec', 'lxc-attach', [...P, '-n', name, '--clear-env', '--', '/bin/true']);
    for (let i = 0; i < n; i++) {
      await timed('freeze', 'lxc-freeze', [...P, '-n', name]);
      await timed('unfreeze', 'lxc-unfreeze', [...P, '-n', name]);
    }
    await timed('stop-force', 'lxc-stop', [...P, '-n', name, '-k']);
    await timed('start', 'lxc-start', [...P, '-n', name]);
    await new Promise((r) => setTimeout(r, 200)); // busybox init drops a halt signal that comes before its handlers
    await timed('stop-graceful', 'lxc-stop', [...P, '-n', name, '-t', '30']);
    // lxc-stop -t kills once the timeout is over and still exits 0: tell that apart.
    const graceful = out['stop-graceful']![0];
    if (graceful > 29_000) throw new Error(`lxc-* CLI: graceful stop of ${name} took ${graceful.toFixed(0)} ms: the halt signal was ignored and it was killed`);
    await timed('delete', 'lxc-destroy', [...P, '-n', name]);
    return out;
  }
}
