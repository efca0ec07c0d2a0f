/**
 * The C floor: bench/peers/lxc-ops.c, built here with `cc -O2 … -llxc`, one process per cycle.
 * Its own monotonic clock times each liblxc call; the process start is not counted.
 */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import * as path from 'node:path';
import { promisify } from 'node:util';

import { ContainerPeer, parseOpLines, PeerContext, Samples, cloneUnsupported } from './peer';

const run = promisify(execFile);
/** The sources stay in bench/peers/ (tsc copies no .c files): from dist/bench/peers/ go back up. */
export const PEER_SOURCES = path.join(__dirname, '..', '..', '..', 'bench', 'peers');

export class LiblxcCPeer implements ContainerPeer {
  readonly label = 'liblxc C';
  private bin: string | undefined;

  async check(ctx: PeerContext): Promise<string | null> {
    const src = path.join(PEER_SOURCES, 'lxc-ops.c');
    const noClone = cloneUnsupported();
    if (noClone) return noClone;
    if (!existsSync(src)) return `${src} is missing`;
    try {
      await run('cc', ['--version']);
    } catch {
      return 'no C compiler (cc) on PATH';
    }
    if (!existsSync('/usr/include/lxc/lxccontainer.h')) return 'liblxc headers missing (apt-get install lxc-dev)';
    const bin = path.join(ctx.scratch, 'lxc-ops');
    try {
      await run('cc', ['-O2', src, '-o', bin, '-llxc']);
    } catch (e) {
      const err = e as { stderr?: string; message: string };
      return `cc failed: ${(err.stderr || err.message).trim().split('\n')[0]}`;
    }
    this.bin = bin;
    return null;
  }

  async cycle(ctx: PeerContext, name: string, n: number): Promise<Samples> {
    if (!this.bin) throw new Error('liblxc C: check() did not build lxc-ops');
    try {
      const { stdout } = await run(this.bin, [ctx.template, name, ctx.lxcpath, String(n)], { maxBuffer: 16 << 20 });
      return parseOpLines(stdout);
    } catch (e) {
      const err = e as { stderr?: string; stdout?: string; message: string };
      throw new Error(`liblxc C cycle on ${name} failed: ${(err.stderr || err.message).trim()}\n(last output: ${err.stdout?.trim().split('\n').pop() ?? ''})`, { cause: e });
    }
  }
}
