/**
 * The lxq guest agent's binary (`native/agent/`), compiled on this host by Debian's g++ into a
 * static executable, so that the guest needs no runtime for it. Its sources ship in the package;
 * their digest is what an image that carries the agent is cached by.
 */
import { promises as fsp } from 'node:fs';
import * as fs from 'node:fs';
import * as path from 'node:path';

import { NotSupported } from '../core/errors';
import { run, sha256 } from './build-tools';

/** native/agent/ of this package (found from lib/images or dist/lib/images). */
export function lxqAgentSourceDir(): string {
  for (let dir = __dirname; dir !== path.dirname(dir); dir = path.dirname(dir)) {
    const candidate = path.join(dir, 'native', 'agent', 'main.cc');
    if (fs.existsSync(candidate) && fs.existsSync(path.join(dir, 'package.json'))) return path.dirname(candidate);
  }
  throw new NotSupported('the lxq agent sources (native/agent/) are not in this installation of lxq');
}

/** A digest of the agent's sources (each file's name and text). */
export async function lxqAgentSourceDigest(): Promise<string> {
  const dir = lxqAgentSourceDir();
  const names = (await fsp.readdir(dir)).filter((n) => /\.(cc|h)$/.test(n)).sort();
  const parts = await Promise.all(names.map(async (n) => `${n}\0${await fsp.readFile(path.join(dir, n), 'utf8')}\0`));
  return sha256(parts.join(''));
}

/** Compiles the agent into `outFile` (written whole: a temporary name, then renamed). */
export async function buildLxqAgent(outFile: string): Promise<void> {
  const dir = lxqAgentSourceDir();
  const tmp = `${outFile}.${process.pid}.tmp`;
  try {
    await run('g++', ['-std=c++17', '-O2', '-Wall', '-Wextra', '-static', '-s', '-o', tmp, path.join(dir, 'main.cc')]);
  } catch (e) {
    await fsp.rm(tmp, { force: true });
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') throw new NotSupported('building the lxq agent needs g++ and libc6-dev: apt-get install -y g++ libc6-dev');
    throw e;
  }
  await fsp.rename(tmp, outFile);
}
