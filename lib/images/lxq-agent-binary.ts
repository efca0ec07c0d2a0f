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

/** The agent's virtio-serial port, as QEMU's `virtserialport,name=` sets it and the agent looks for it. */
export const LXQ_AGENT_PORT_NAME = 'org.lxq.agent.0';

/** Where the agent lives in a VM image's root tree. */
export const LXQ_AGENT_PATH = 'usr/libexec/lxq/lxq-agent';

/**
 * The agent as a systemd service: started before everything else (no default dependencies, so
 * not after basic.target: ~10 s into a Debian boot under TCG), restarted at once if it dies, and
 * stopped only at shutdown. It finds its port from sysfs, without waiting for udev.
 */
const SYSTEMD_UNIT = `[Unit]
Description=lxq guest agent
DefaultDependencies=no
Before=sysinit.target shutdown.target
Conflicts=shutdown.target

[Service]
ExecStart=/${LXQ_AGENT_PATH}
Restart=always
RestartSec=100ms

[Install]
WantedBy=sysinit.target
`;

/**
 * Puts the agent into a VM image's root tree `root`: the binary, compiled here, and for a
 * systemd tree its unit, enabled (busybox trees start it from their inittab, vm-guest.ts).
 */
export async function installLxqAgent(root: string, init: 'busybox' | 'systemd'): Promise<void> {
  const binary = path.join(root, LXQ_AGENT_PATH);
  await fsp.mkdir(path.dirname(binary), { recursive: true, mode: 0o755 });
  await buildLxqAgent(binary);
  await fsp.chmod(binary, 0o755);
  if (init !== 'systemd') return;
  const units = path.join(root, 'etc/systemd/system');
  await fsp.mkdir(path.join(units, 'sysinit.target.wants'), { recursive: true, mode: 0o755 });
  await fsp.writeFile(path.join(units, 'lxq-agent.service'), SYSTEMD_UNIT, { mode: 0o644 });
  await fsp.rm(path.join(units, 'sysinit.target.wants/lxq-agent.service'), { force: true });
  await fsp.symlink('../lxq-agent.service', path.join(units, 'sysinit.target.wants/lxq-agent.service'));
}

/** What decides the agent's part of an image: its sources and how it is installed. */
export async function lxqAgentInputs(): Promise<unknown> {
  return { sources: await lxqAgentSourceDigest(), unit: SYSTEMD_UNIT, path: LXQ_AGENT_PATH, port: LXQ_AGENT_PORT_NAME };
}

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
