/**
 * python3-lxc (Debian's binding) running bench/peers/lxc-ops.py: one interpreter per cycle,
 * each binding call timed by time.perf_counter inside it; interpreter start is not counted.
 */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import * as path from 'node:path';
import { promisify } from 'node:util';

import { PEER_SOURCES } from './liblxc-c';
import { ContainerPeer, parseOpLines, PeerContext, Samples, cloneUnsupported } from './peer';

const run = promisify(execFile);
/** Debian's interpreter, where python3-lxc is installed (not a pyenv or venv python3 on PATH). */
const PYTHON = '/usr/bin/python3';

export class PythonLxcPeer implements ContainerPeer {
  readonly label = 'python3-lxc';
  private readonly script = path.join(PEER_SOURCES, 'lxc-ops.py');

  async check(): Promise<string | null> {
    if (!existsSync(this.script)) return `${this.script} is missing`;
    const noClone = cloneUnsupported();
    if (noClone) return noClone;
    if (!existsSync(PYTHON)) return `${PYTHON} is missing`;
    try {
      await run(PYTHON, ['-c', 'import lxc']);
    } catch {
      return `python3-lxc not importable by ${PYTHON} (apt-get install python3-lxc)`;
    }
    return null;
  }

  async cycle(ctx: PeerContext, name: string, n: number): Promise<Samples> {
    try {
      const { stdout } = await run(PYTHON, [this.script, ctx.template, name, ctx.lxcpath, String(n)], { maxBuffer: 16 << 20 });
      return parseOpLines(stdout);
    } catch (e) {
      const err = e as { stderr?: string; stdout?: string; message: string };
      throw new Error(`python3-lxc cycle on ${name} failed: ${(err.stderr || err.message).trim()}\n(last output: ${err.stdout?.trim().split('\n').pop() ?? ''})`, { cause: e });
    }
  }
}
