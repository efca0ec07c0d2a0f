/**
 * Saved boots (vm.saved_boot): a VM image's booted state, made once per image and per machine
 * shape, from which a VM's first start loads instead of booting.
 *
 *   <image dir>/boot/<key>/
 *     state       QEMU's migration stream of a VM of that shape, booted to its agent (and, for a
 *                 systemd image, to `running`), stopped, saved
 *     disk.qcow2  that VM's disk at the save: a qcow2 layer over the image's disk, which the
 *                 overlay of every VM loaded from `state` starts from (never written again)
 *     meta.json   the key's inputs: QEMU's command line (instance paths, name and identity
 *                 words replaced by placeholders), QEMU's version and binary
 *
 * The key is the digest of meta.json's inputs: a VM uses a saved boot only when its own command
 * line, normalised the same way, is identical (so memory, vCPUs, machine, devices, raw.qemu and
 * the image are), on the same QEMU binary. What differs (sockets, logs, pidfile, the disk's path,
 * `-name`, the kernel command line's identity words) is not part of the migrated state. It is
 * made in a staging directory (a process killed mid-save leaves only that, cleared by the next
 * save together with its QEMU).
 */
import { createHash } from 'node:crypto';
import { execFile } from 'node:child_process';
import { promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';

import type { InstanceConfig } from '../../config/options';
import { OperationFailed } from '../../core/errors';
import { refuseControlChars } from '../../core/guard';
import { parseBoolean } from '../../core/units';
import { clearStaging, createStaged, isStaging, processAlive } from '../../core/staging';
import type { Devices } from '../../devices/declarations';
import { hostLink, nics, nicType } from '../../devices/nic';
import type { DeviceSource } from '../../devices/validate';
import type { VmImage } from '../../images/meta';
import { seedData } from '../../instance/cloud-init';
import type { QmpClient } from '../../qmp';
import { type LaunchSettings, type LaunchTarget, qemuCommandLine } from './launch';
import { deleteLink, isLxqLinkName } from '../../network/iproute';
import { releaseHostParts } from './devices';
import { checkSocketPaths, vmFile } from './paths';
import { isQemuOf, livePid, QEMU } from './process';
import type { Accel } from './accel';

const execFileP = promisify(execFile);

/** The name the saving VM runs under (its `lxq.hostname`, which the loaded guest's /proc/cmdline keeps). */
export const SAVER_NAME = 'lxq-saved-boot';
const STATE_FILE = 'state';
const DISK_FILE = 'disk.qcow2';
const META_FILE = 'meta.json';
const SAVER_DIR_FILE = 'saver-dir';
const SAVER_LINKS_FILE = 'saver-links';
const SAVER_DIR_PREFIX = 'lxq-saved-boot-';
const MIGRATE_POLL_MS = 50;

/** A saved boot a VM can start from. */
export interface SavedBoot {
  dir: string;
  state: string;
  disk: string;
}

/** What a saved boot is made for and checked against. */
export interface SavedBootInputs {
  args: string[];
  qemu: string;
  accel: Accel;
}

/** The keys a NIC saved with the boot may have: a bridged NIC's, with nothing lxq sets up on its host end. */
const SAVED_NIC_KEYS = new Set(['type', 'network', 'nictype', 'parent', 'hwaddr', 'name']);

/**
 * Why a VM with vm.saved_boot is not eligible (undefined: it is): only a VM's first start (its
 * disk still the image's, untouched), on an image with the lxq agent (which renews the
 * identity), with no device but its root disk and bridged NICs (a share, a disk of its own, a
 * NIC of another type or with host-side options would differ from the saved VM's).
 */
export function savedBootRefusal(config: InstanceConfig, devices: Devices, fresh: boolean, hasLxqAgent: boolean): string | undefined {
  if (!parseBoolean(config['vm.saved_boot'] ?? 'false')) return 'vm.saved_boot is not set';
  if (!fresh) return 'not the first start (the disk is no longer the image\'s)';
  if (!hasLxqAgent) return 'the image has no lxq agent to renew the identity';
  if (config['raw.qemu.conf']) return 'raw.qemu.conf (a config file\'s devices are not part of a saved boot\'s key)';
  if (seedData(config)) return 'a cloud-init seed (cloud-init.* keys): cloud-init must see its seed in the VM\'s own boot';
  for (const [name, d] of Object.entries(devices)) {
    if (d.type === 'nic' && nicType(d) === 'bridged' && Object.keys(d).every((k) => SAVED_NIC_KEYS.has(k))) continue;
    const keys = Object.keys(d).filter((k) => k !== 'type' && k !== 'path' && k !== 'pool');
    if (d.type !== 'disk' || d.path !== '/' || keys.length) return `device ${name} (only a root disk without options and bridged NICs without host-side options can be saved with the boot)`;
  }
  return undefined;
}

/**
 * The MAC the saving VM gives its `index`th NIC (by name, as nics() orders them): locally
 * administered, lxq's; a loaded VM's agent changes it to the VM's own.
 */
export function saverMac(index: number): string {
  return `02:6c:78:71:00:${index.toString(16).padStart(2, '0')}`;
}

/** The MAC renewals of a VM loaded from a saved boot: each NIC's saver address to its own. */
export function macRenewals(devices: Devices): Array<{ from: string; to: string; netdev: string }> {
  return nics(devices).map(([name, d], i) => ({ from: saverMac(i), to: d.hwaddr!.toLowerCase(), netdev: `net-${name}` }));
}

/**
 * The saving VM's devices and their sources: each NIC with the saver's MAC, on a tap of its own
 * on no bridge (a `p2p` NIC: the guest's DHCP gets no answer, so the saved guest holds no lease
 * and no address; netdev backends are not part of the migrated state, so the loaded VM's tap on
 * its bridge takes its place). The command line differs only in what normalisedArgs replaces.
 */
export function saverDevices(devices: Devices, sources: Map<string, DeviceSource>): { devices: Devices; sources: Map<string, DeviceSource> } {
  const out: Devices = { ...devices };
  const src = new Map(sources);
  nics(devices).forEach(([name, d], i) => {
    out[name] = { type: 'nic', nictype: 'p2p', hwaddr: saverMac(i), ...(d.name !== undefined ? { name: d.name } : {}) };
    const { bridge: _bridge, ...rest } = sources.get(name)!;
    src.set(name, { ...rest, nictype: 'p2p' });
  });
  return { devices: out, sources: src };
}

/**
 * The command line with what is not migrated (the VM's paths and name, its identity words, its
 * taps and MACs: the agent renews the MACs) replaced by placeholders.
 */
export function normalisedArgs(args: string[], dir: string, img: VmImage): string[] {
  return args.map((a, i) => {
    if (args[i - 1] === '-name') return '@NAME';
    if (args[i - 1] === '-append') return a.startsWith(img.cmdline) ? `${img.cmdline} @IDENTITY` : a;
    if (args[i - 1] === '-netdev' && a.startsWith('tap,')) return a.replace(/,ifname=[^,]*/, ',ifname=@TAP');
    if (args[i - 1] === '-device' && a.startsWith('virtio-net-pci,')) return a.replace(/,mac=[0-9a-fA-F:]*/, ',mac=@MAC');
    return a.split(dir).join('@DIR');
  });
}

let qemuIdentity: Promise<string> | undefined;

/** QEMU's version line and its binary's size and mtime: a state saved by another build is not loaded. */
function qemuBinaryIdentity(): Promise<string> {
  qemuIdentity ??= (async () => {
    const { stdout } = await execFileP(QEMU, ['--version']);
    const { stdout: where } = await execFileP('/bin/sh', ['-c', `command -v ${QEMU}`]);
    const st = await fs.stat(where.trim());
    return `${stdout.split('\n')[0]} ${st.size} ${st.mtimeMs}`;
  })();
  qemuIdentity.catch(() => (qemuIdentity = undefined));
  return qemuIdentity;
}

/** The inputs and key of the saved boot for a VM whose command line is `args`. */
export async function savedBootKey(args: string[], dir: string, img: VmImage, accel: Accel): Promise<{ key: string; inputs: SavedBootInputs }> {
  const inputs: SavedBootInputs = { args: normalisedArgs(args, dir, img), qemu: await qemuBinaryIdentity(), accel };
  return { key: createHash('sha256').update(JSON.stringify(inputs)).digest('hex').slice(0, 16), inputs };
}

/** Where an image's saved boots are. */
export function savedBootRoot(img: VmImage): string {
  return path.join(img.dir, 'boot');
}

/** The saved boot of `key`, if one was made and its inputs are exactly `inputs`; undefined otherwise. */
export async function findSavedBoot(img: VmImage, key: string, inputs: SavedBootInputs): Promise<SavedBoot | undefined> {
  const dir = path.join(savedBootRoot(img), key);
  const meta = await fs.readFile(path.join(dir, META_FILE), 'utf8').then((t) => JSON.parse(t) as { inputs?: unknown }, () => undefined);
  if (!meta || JSON.stringify(meta.inputs) !== JSON.stringify(inputs)) return undefined;
  return { dir, state: path.join(dir, STATE_FILE), disk: path.join(dir, DISK_FILE) };
}

/** A path for QEMU's `exec:` (run by /bin/sh): single-quoted. */
function shellQuoted(p: string): string {
  refuseControlChars('a saved boot path', p);
  return `'${p.replace(/'/g, `'\\''`)}'`;
}

/** Polls query-migrate until the migration completed; OperationFailed when it failed or QEMU went away. */
async function migrationDone(qmp: QmpClient, what: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const r = await qmp.execute<{ status?: string; 'error-desc'?: string }>('query-migrate');
    if (r.status === 'completed') return;
    if (r.status === 'failed' || r.status === 'cancelled') throw new OperationFailed(`${what} failed: ${r['error-desc'] ?? r.status}`, { call: 'qmp:migrate' });
    if (Date.now() > deadline) throw new OperationFailed(`${what}: not done within ${timeoutMs} ms (${r.status})`, { call: 'qmp:migrate' });
    await new Promise((res) => setTimeout(res, MIGRATE_POLL_MS));
  }
}

/** Stops the VM and writes its state to `file` (fsynced). */
export async function saveState(qmp: QmpClient, file: string, timeoutMs: number): Promise<void> {
  await qmp.execute('stop');
  await qmp.execute('migrate', { uri: `exec:cat > ${shellQuoted(file)}` });
  await migrationDone(qmp, 'saving the booted state', timeoutMs);
  const h = await fs.open(file, 'r');
  await h.sync().finally(() => h.close());
}

/**
 * Loads a QEMU started with `-incoming defer` from `file`, then runs it with the links of
 * `nics` (netdev ids) down: the guest's interfaces keep the saving VM's MACs until the agent
 * renews them, and nothing may leave with those (a DHCP client of the saved guest would lease an
 * address for the saver's MAC). setLinks brings them up again.
 */
export async function loadState(qmp: QmpClient, file: string, timeoutMs: number, nics: string[] = []): Promise<void> {
  await qmp.execute('migrate-incoming', { uri: `exec:cat ${shellQuoted(file)}` });
  await migrationDone(qmp, `loading the saved boot ${file}`, timeoutMs);
  // After the load: the link state is the migrated one until then.
  await setLinks(qmp, nics, false);
  // A state saved stopped is loaded stopped.
  if ((await qmp.execute<{ status: string }>('query-status')).status !== 'running') await qmp.execute('cont');
}

/** Sets the links of the netdevs `ids` up or down (the guest sees its carrier change). */
export async function setLinks(qmp: QmpClient, ids: string[], up: boolean): Promise<void> {
  for (const name of ids) await qmp.execute('set_link', { name, up });
}

/**
 * Kills the QEMUs of saves whose process died (each staging directory names its saving VM's
 * directory until the save is done), removes those VMs' directories, then the staging ones.
 */
async function clearAbandonedSaves(root: string): Promise<void> {
  for (const name of await fs.readdir(root).catch(() => [] as string[])) {
    if (!isStaging(name) || processAlive(Number(name.split('-')[2]))) continue;
    const run = (await fs.readFile(path.join(root, name, SAVER_DIR_FILE), 'utf8').catch(() => '')).trim();
    if (path.dirname(run) !== os.tmpdir() || !path.basename(run).startsWith(SAVER_DIR_PREFIX)) continue;
    const pidfile = vmFile(run, 'pid');
    const pid = await livePid(pidfile);
    if (pid !== null && (await isQemuOf(pid, pidfile))) process.kill(pid, 'SIGKILL');
    // Only lxq's own link names (the file is ours, but a host's links are never taken on trust).
    const links = (await fs.readFile(path.join(root, name, SAVER_LINKS_FILE), 'utf8').catch(() => '')).split('\n');
    for (const link of links.filter(isLxqLinkName)) await deleteLink(link).catch(() => undefined);
    await fs.rm(run, { recursive: true, force: true });
  }
  await clearStaging(root);
}

/** What making a saved boot needs from the VM driver. */
export interface SaveHooks {
  img: VmImage;
  settings: LaunchSettings;
  accel: Accel;
  devices: Devices;
  sources: LaunchTarget['sources'];
  key: string;
  inputs: SavedBootInputs;
  /** Boots the VM in `dir` (QEMU from `args`), waits until it is ready to be saved and saves it to `state`; QEMU ends either way. */
  bootAndSave(dir: string, args: string[], state: string): Promise<void>;
  /** The VM's disk (an overlay over `backing`) at `overlay`. */
  createOverlay(backing: string, overlay: string): Promise<void>;
}

/**
 * Makes the saved boot of `h.key` (a VM of that shape, booted and saved) unless one exists; a
 * concurrent save of the same key that wins is used as it is.
 */
export async function makeSavedBoot(h: SaveHooks): Promise<SavedBoot> {
  const root = savedBootRoot(h.img);
  await fs.mkdir(root, { recursive: true, mode: 0o755 });
  await clearAbandonedSaves(root);
  const dir = path.join(root, h.key);
  await createStaged(dir, async (staging) => {
    // The saving VM runs in a short directory of its own (its sockets' paths must fit in
    // sun_path); the staging directory names it until the save is done.
    const run = await fs.mkdtemp(path.join(os.tmpdir(), SAVER_DIR_PREFIX));
    const saver = saverDevices(h.devices, await h.sources());
    // The saver's taps, named before any is made: a process killed mid-save leaves them to the next save.
    await fs.writeFile(path.join(staging, SAVER_LINKS_FILE), nics(saver.devices).map(([name]) => `${hostLink(run, name)}\n`).join(''));
    await fs.writeFile(path.join(staging, SAVER_DIR_FILE), run);
    try {
      checkSocketPaths(run);
      await h.createOverlay(path.resolve(h.img.disk), vmFile(run, 'disk'));
      const args = await qemuCommandLine({ dir: run, name: SAVER_NAME, config: {}, devices: saver.devices, sources: async () => saver.sources }, h.img, h.settings, h.accel);
      const mine = normalisedArgs(args, run, h.img);
      if (JSON.stringify(mine) !== JSON.stringify(h.inputs.args)) throw new OperationFailed(`the saving VM's command line differs from the VM's: ${JSON.stringify(mine)}`);
      await h.bootAndSave(run, args, path.join(staging, STATE_FILE));
      await fs.copyFile(vmFile(run, 'disk'), path.join(staging, DISK_FILE));
    } finally {
      await releaseHostParts(run, saver.devices);
      await fs.rm(run, { recursive: true, force: true });
    }
    await fs.rm(path.join(staging, SAVER_DIR_FILE));
    await fs.rm(path.join(staging, SAVER_LINKS_FILE));
    await fs.writeFile(path.join(staging, META_FILE), `${JSON.stringify({ inputs: h.inputs, saved: new Date().toISOString() }, null, 2)}\n`);
  }).catch((e) => {
    if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
  });
  const made = await findSavedBoot(h.img, h.key, h.inputs);
  if (!made) throw new OperationFailed(`the saved boot ${dir} does not match this VM's command line`);
  return made;
}
