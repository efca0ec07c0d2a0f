/**
 * A VM's first start from its image's saved boot (saved-boot.ts): the saved boot is found or made,
 * the VM's disk becomes an overlay over the saved disk layer, QEMU loads the state
 * (`-incoming defer`, then `migrate-incoming`), and the lxq agent renews the guest's identity
 * before start() resolves. Anything that fails on the way ends that QEMU, puts the disk back over
 * the image's, and the start boots cold; the boot record (boot.json) says which happened and why.
 */
import { randomUUID } from 'node:crypto';
import { promises as fs } from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';

import type { InstanceConfig } from '../../config/options';
import { OperationFailed } from '../../core/errors';
import type { Devices } from '../../devices/declarations';
import type { VmImage } from '../../images/meta';
import { collect } from '../../instance/process';
import { QmpClient } from '../../qmp';
import type { Accel } from './accel';
import { type LaunchSettings, type LaunchTarget, qemuCommandLine } from './launch';
import { LxqAgentLink } from './lxq-agent-link';
import type { VmGuest } from './guest';
import { vmFile } from './paths';
import { endQemu, spawnQemu } from './process';
import { createOverlay } from './qemu-args';
import { findSavedBoot, loadState, macRenewals, makeSavedBoot, setLinks, type SavedBoot, savedBootKey, savedBootRefusal, saveState, SAVER_NAME } from './saved-boot';

/** How the last start booted (boot.json; VmState.boot). */
export interface BootRecord {
  boot: 'cold' | 'saved-state';
  /** With vm.saved_boot: why this start booted cold. */
  reason?: string;
}

/** A saving VM's boot under TCG on a loaded host (a Debian VM to `running` took 70 s at load 20). */
const SAVE_BOOT_MS = 600_000;
const LOAD_MS = 120_000;

/** What the start needs of its VM. */
export interface SavedStartHooks {
  target: LaunchTarget;
  img: VmImage;
  settings: LaunchSettings;
  accel: Accel;
  config: InstanceConfig;
  devices: Devices;
  init: 'systemd' | 'busybox';
  hasLxqAgent: boolean;
  /** Launches the VM's QEMU with `extra` arguments and connects its monitor. */
  launch(extra: string[]): Promise<void>;
  qmp(): QmpClient;
  /** The identity renewed, and commands run, through the lxq agent. */
  guest: Pick<VmGuest, 'renewIdentity' | 'runChecked'>;
  kill(): Promise<void>;
}

/** Whether the VM's first start was marked (at create) and unmarks it: any start ends the disk's pristine state. */
async function takeFreshMark(dir: string): Promise<boolean> {
  return fs.rm(vmFile(dir, 'fresh')).then(() => true, () => false);
}

async function writeBootRecord(dir: string, r: BootRecord): Promise<void> {
  await fs.writeFile(vmFile(dir, 'boot'), `${JSON.stringify(r)}\n`);
}

export async function readBootRecord(dir: string): Promise<BootRecord | undefined> {
  const r = await fs.readFile(vmFile(dir, 'boot'), 'utf8').then((t) => JSON.parse(t) as BootRecord, () => undefined);
  return r && (r.boot === 'cold' || r.boot === 'saved-state') ? { boot: r.boot, ...(typeof r.reason === 'string' ? { reason: r.reason } : {}) } : undefined;
}

/** Replaces the VM's disk by a new overlay over `backing` (written beside it, then renamed; on a pool, disk.qcow2 links to where it is). */
async function replaceDisk(h: SavedStartHooks, backing: string): Promise<void> {
  const disk = await fs.realpath(vmFile(h.target.dir, 'disk'));
  const next = `${disk}.next`;
  await fs.rm(next, { force: true });
  await createOverlay(backing, next);
  await fs.rename(next, disk);
}

/**
 * Starts the VM from its image's saved boot when it is eligible (saved-boot.ts), making the saved
 * boot first if there is none for its shape; any start ends the VM's first-start mark. Returns
 * what happened, also written to boot.json; on `cold` nothing runs and the disk is the image's
 * overlay again, for the caller to boot.
 */
export async function startFromSavedBoot(h: SavedStartHooks): Promise<BootRecord> {
  const r = await savedStart(h, await takeFreshMark(h.target.dir));
  await writeBootRecord(h.target.dir, r);
  return r;
}

async function savedStart(h: SavedStartHooks, fresh: boolean): Promise<BootRecord> {
  const refusal = savedBootRefusal(h.config, h.devices, fresh, h.hasLxqAgent);
  if (refusal) return h.config['vm.saved_boot'] === undefined ? { boot: 'cold' } : { boot: 'cold', reason: refusal };
  let saved: SavedBoot;
  let cmdline: string;
  try {
    const args = await qemuCommandLine(h.target, h.img, h.settings, h.accel);
    cmdline = args[args.indexOf('-append') + 1];
    const { key, inputs } = await savedBootKey(args, h.target.dir, h.img, h.accel);
    saved = (await findSavedBoot(h.img, key, inputs)) ??
      (await makeSavedBoot({ ...h, sources: h.target.sources, key, inputs, createOverlay, bootAndSave: (dir, a, state) => bootAndSave(dir, a, state, h.init) }));
  } catch (e) {
    return { boot: 'cold', reason: `no saved boot: ${(e as Error).message}` };
  }
  try {
    await replaceDisk(h, saved.disk);
    await h.launch(['-incoming', 'defer']);
    const macs = macRenewals(h.devices);
    const links = macs.map((m) => m.netdev);
    await loadState(h.qmp(), saved.state, LOAD_MS, links);
    await h.guest.renewIdentity({ hostname: h.target.name, ...(h.target.machineId ? { machineId: h.target.machineId } : {}), macs });
    await h.guest.runChecked(['/bin/sh', '-c', afterRenewal(h.init, macs.length > 0), 'sh', randomUUID(), cmdline]);
    await setLinks(h.qmp(), links, true);
    return { boot: 'saved-state' };
  } catch (e) {
    await h.kill().catch(() => undefined);
    await replaceDisk(h, path.resolve(h.img.disk));
    return { boot: 'cold', reason: `the saved boot ${saved.dir} did not load: ${(e as Error).message}` };
  }
}

/**
 * The kernel's boot_id ($1) and command line ($2) as the guest's programs read them: the
 * kernel refuses writes to /proc/sys/kernel/random/boot_id (mode 0444, and proc_do_uuid
 * rejects any write) and /proc/cmdline is the saving VM's, so a file of the VM's own is bound
 * read-only over each (in PID 1's mount namespace, which the agent shares; a procfs mounted
 * anew, as a container's, still shows the kernel's).
 */
const RENEW_PROC = [
  'set -e; umask 022; mkdir -p /run/lxq',
  'printf "%s\\n" "$1" > /run/lxq/boot_id; printf "%s\\n" "$2" > /run/lxq/cmdline',
  'for f in sys/kernel/random/boot_id cmdline; do mount -o bind "/run/lxq/${f##*/}" "/proc/$f"; mount -o remount,bind,ro "/proc/$f"; done',
].join('\n');

/**
 * What the guest runs once its identity is renewed: RENEW_PROC, then what reads the identity
 * once. systemd's processes read the machine id and boot id once: PID 1 again from a re-exec,
 * journald (whose files are named by them) from a restart, and networkd (its DHCP client
 * identifier is made from the machine id: two clones would share one lease) too. busybox's
 * udhcpc keeps the MAC it started with in its requests: each is ended, and lxq-dhcp's loop
 * starts it again within a second on the new MAC (pid files as in images/dhcp-client.ts).
 */
function afterRenewal(init: 'systemd' | 'busybox', hasNics: boolean): string {
  if (init === 'systemd') return `${RENEW_PROC}\nsystemctl daemon-reexec\nsystemctl restart systemd-journald.service${hasNics ? ' systemd-networkd.service' : ''}`;
  return hasNics ? `${RENEW_PROC}\nfor f in /run/udhcpc.*.pid; do [ -r "$f" ] && kill "$(cat "$f")" || true; done` : RENEW_PROC;
}

/** Connects to a saving VM's monitor once QEMU listens. */
async function saverMonitor(dir: string, exited: () => string | undefined): Promise<QmpClient> {
  const deadline = Date.now() + 60_000;
  for (;;) {
    try {
      const socket = net.createConnection({ path: vmFile(dir, 'qmp') });
      return await QmpClient.connect(socket, { timeout: SAVE_BOOT_MS, connectTimeout: 30_000 });
    } catch (e) {
      if (exited() !== undefined || Date.now() > deadline) throw new OperationFailed(`the saving VM's QEMU did not answer: ${exited() ?? (e as Error).message}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}

/**
 * Boots the saving VM in `dir`: its agent answers (and a systemd guest reached `running`), its
 * disk is synced and the agent's host side closed; then its state is saved to `state`. Its QEMU
 * ends either way.
 */
async function bootAndSave(dir: string, args: string[], state: string, init: 'systemd' | 'busybox'): Promise<void> {
  const exited = await spawnQemu(args, vmFile(dir, 'qemuLog'));
  let qmp: QmpClient | undefined;
  const link = new LxqAgentLink(vmFile(dir, 'lxqAgent'), SAVER_NAME);
  try {
    qmp = await saverMonitor(dir, exited);
    const run = async (argv: string[]) => collect(await link.spawn(argv, { env: ['PATH=/usr/sbin:/usr/bin:/sbin:/bin'] }, SAVE_BOOT_MS), { timeout: SAVE_BOOT_MS }, argv[0]);
    await link.connect(SAVE_BOOT_MS);
    if (init === 'systemd') {
      const r = await run(['systemctl', 'is-system-running', '--wait']);
      const status = r.stdout.toString().trim();
      if (status !== 'running' && status !== 'degraded') throw new OperationFailed(`the saving VM's systemd is ${status || `exit ${r.exitCode}`}, not running`);
    }
    await run(['sync']);
    link.close();
    await saveState(qmp, state, SAVE_BOOT_MS);
  } finally {
    link.close();
    const monitor = qmp;
    await endQemu(dir, async () => void (await monitor?.execute('quit').catch(() => undefined)), SAVER_NAME);
    await qmp?.close();
  }
}
