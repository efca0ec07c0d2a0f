/**
 * Docker (Debian's docker.io, overlay2) as a peer of bench/storage: a dockerd of the bench's own,
 * never the host's: its own --data-root, --exec-root, --pidfile and unix socket under a temporary
 * directory, no bridge, no iptables/ip6tables rules, no ip_forward or masquerade change, an empty
 * config file (never /etc/docker/daemon.json). Driven over its Engine API on that socket, as a
 * Node program would (dockerode's calls): create, start, remove. `close()` stops it (SIGTERM,
 * then SIGKILL), unmounts what it left under its directory and removes it, even after a failure.
 * Absent (no /usr/sbin/dockerd) or unable to start, `start` returns why, and the bench goes on.
 */
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import * as http from 'node:http';
import * as os from 'node:os';
import * as path from 'node:path';

const DOCKERD = '/usr/sbin/dockerd';
const DOCKER = '/usr/bin/docker';

export class DockerPeer {
  private constructor(
    private readonly dir: string,
    private readonly pid: number,
  ) {}

  get socket(): string {
    return path.join(this.dir, 'docker.sock');
  }

  get dataRoot(): string {
    return path.join(this.dir, 'data');
  }

  /** A dockerd of its own, ready; or why not. */
  static async start(): Promise<DockerPeer | string> {
    if (!existsSync(DOCKERD) || !existsSync(DOCKER)) return `${DOCKERD} is not installed (Debian: apt-get install --no-install-recommends docker.io)`;
    // Short: a unix socket's path has 108 bytes at most.
    const dir = mkdtempSync(path.join(os.tmpdir(), 'lxqbd-'));
    writeFileSync(path.join(dir, 'daemon.json'), '{}\n');
    const args = [
      '--data-root', path.join(dir, 'data'), '--exec-root', path.join(dir, 'exec'), '--pidfile', path.join(dir, 'docker.pid'),
      '-H', `unix://${path.join(dir, 'docker.sock')}`, '--config-file', path.join(dir, 'daemon.json'),
      '--bridge=none', '--iptables=false', '--ip6tables=false', '--ip-forward=false', '--ip-masq=false',
      '--storage-driver=overlay2', '--log-level=warn',
    ];
    const child = spawn(DOCKERD, args, { detached: true, stdio: ['ignore', 'ignore', 'pipe'] });
    let log = '';
    child.stderr?.on('data', (c: Buffer) => (log = (log + c.toString()).slice(-2000)));
    if (child.pid === undefined) return 'dockerd did not start';
    child.unref();
    const peer = new DockerPeer(dir, child.pid);
    const deadline = Date.now() + 90_000;
    while (Date.now() < deadline && child.exitCode === null) {
      if (await peer.api('GET', '/_ping').then(() => true, () => false)) return peer;
      await new Promise((r) => setTimeout(r, 100));
    }
    await peer.close();
    return `dockerd did not answer: ${log.trim().split('\n').slice(-2).join(' | ')}`;
  }

  /** The Engine API on this daemon's socket: the parsed JSON answer, or an error with its message. */
  api(method: string, p: string, body?: unknown): Promise<unknown> {
    return new Promise((resolve, reject) => {
      const data = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
      const req = http.request({ socketPath: this.socket, method, path: p, headers: data ? { 'Content-Type': 'application/json', 'Content-Length': data.length } : {} }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString();
          if ((res.statusCode ?? 0) >= 300) return reject(new Error(`docker ${method} ${p}: ${res.statusCode} ${text.trim()}`));
          try {
            resolve(text ? JSON.parse(text) : undefined);
          } catch {
            resolve(text);
          }
        });
      });
      req.on('error', reject);
      req.setTimeout(300_000, () => req.destroy(new Error(`docker ${method} ${p}: no answer`)));
      req.end(data);
    });
  }

  /** `rootfs` (a directory) brought in with `docker import` as `tag` (not timed). */
  importImage(rootfs: string, tag: string): void {
    execFileSync('sh', ['-c', `tar --numeric-owner --xattrs -C "$1" -c . | "$2" -H "unix://$3" import - "$4" >/dev/null`, 'sh', rootfs, DOCKER, this.socket, tag]);
  }

  /** A container of `image` whose command stays (no network: as the LXD peers' profile, no NIC). */
  create(name: string, image: string): Promise<unknown> {
    return this.api('POST', `/containers/create?name=${encodeURIComponent(name)}`, { Image: image, Cmd: ['tail', '-f', '/dev/null'], NetworkDisabled: true, HostConfig: { NetworkMode: 'none' } });
  }

  start(name: string): Promise<unknown> {
    return this.api('POST', `/containers/${encodeURIComponent(name)}/start`);
  }

  delete(name: string): Promise<unknown> {
    return this.api('DELETE', `/containers/${encodeURIComponent(name)}?force=true`);
  }

  /** KiB under the data root (du, one filesystem: a running container's merged mount not counted). */
  diskKiB(): number {
    return Number(execFileSync('du', ['-sk', '--one-file-system', this.dataRoot], { encoding: 'utf8' }).split('\t')[0]);
  }

  /** Stops this dockerd (and the containerd it runs), unmounts what is left under its directory, removes it. */
  async close(): Promise<void> {
    const alive = () => {
      try {
        process.kill(this.pid, 0);
        return true;
      } catch {
        return false;
      }
    };
    for (const [sig, ms] of [['SIGTERM', 30_000], ['SIGKILL', 10_000]] as const) {
      if (!alive()) break;
      process.kill(this.pid, sig);
      const until = Date.now() + ms;
      while (alive() && Date.now() < until) await new Promise((r) => setTimeout(r, 100));
    }
    // Its containerd and shims are its children, in its process group (detached: its own).
    try {
      process.kill(-this.pid, 'SIGKILL');
    } catch {
      // none left
    }
    const mounts = readFileSync('/proc/self/mountinfo', 'utf8').split('\n').map((l) => l.split(' ')[4]).filter((m) => m && m.startsWith(this.dir + '/'));
    for (const m of mounts.sort((a, b) => b.length - a.length)) execFileSync('umount', ['-l', m]);
    rmSync(this.dir, { recursive: true, force: true });
  }
}
