/**
 * A VM's TPM (a `tpm` device): swtpm beside QEMU, a tpm-crb device the guest kernel drives
 * (/dev/tpm0, /dev/tpmrm0), raw TPM 2.0 commands answered from the guest, its state kept across
 * a restart and carried by snapshots, copies and exports; one TPM at most, no hot-plug, and a
 * container's TPM refused where the host kernel has no vTPM proxy. One VM for the file, of
 * vm/default (its kernel has tpm_crb built in; the commands are written with printf, no tools).
 */
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import { Instance, InvalidArgument, NotSupported } from '../lib';
import { tempHost, TestHost } from './helpers/host';

let t: TestHost;
let vm: Instance;
const out = mkdtempSync(path.join(os.tmpdir(), 'lxq-tpm-'));

/** Sends one TPM 2.0 command (its bytes as octal escapes) to /dev/tpmrm0 and returns the response's bytes. */
async function tpm(command: string): Promise<number[]> {
  const script = `exec 3<>/dev/tpmrm0 && printf '${command}' >&3 && dd bs=4096 count=1 <&3 2>/dev/null | od -An -tx1 -v`;
  const r = await vm.exec(['sh', '-c', script], { timeout: 60_000 });
  expect(r.stderr.toString()).toBe('');
  return r.stdout.toString().trim().split(/\s+/).map((b) => parseInt(b, 16));
}
// TPM2_GetRandom(8): tag TPM_ST_NO_SESSIONS, size 12, TPM_CC_GetRandom (0x17b), bytesRequested 8.
const GET_RANDOM_8 = '\\200\\001\\000\\000\\000\\014\\000\\000\\001\\173\\000\\010';
// TPM2_ReadClock: tag, size 10, TPM_CC_ReadClock (0x181).
const READ_CLOCK = '\\200\\001\\000\\000\\000\\012\\000\\000\\001\\201';

/** The TPM's resetCount (TPM Resets since it was made: it lives in its non-volatile state). */
async function resetCount(): Promise<number> {
  const r = await tpm(READ_CLOCK);
  // Header (10 bytes), then time (8), clock (8), resetCount (4).
  expect(r.slice(0, 10)).toEqual([0x80, 0x01, 0, 0, 0, 0x23, 0, 0, 0, 0]);
  return Buffer.from(r.slice(26, 30)).readUInt32BE();
}

/** The swtpm processes serving a VM in `dir` (their control socket is in it; QEMU's command line names it too). */
function swtpms(dir: string): number[] {
  return readdirSync('/proc')
    .filter((p) => /^\d+$/.test(p))
    .filter((p) => {
      try {
        const argv = readFileSync(`/proc/${p}/cmdline`, 'utf8').split('\0');
        return argv[0] === '/usr/bin/swtpm' && argv.some((a) => a.includes(`path=${path.join(dir, 'devices', 'swtpm.sock')}`));
      } catch {
        return false;
      }
    })
    .map(Number);
}

const stateFile = (dir: string) => readFileSync(path.join(dir, 'tpm', 'tpm2-00.permall'));

beforeAll(async () => {
  t = await tempHost();
  vm = await t.host.create(t.name('vmtpm'), { type: 'vm', image: 'vm/default', devices: { tpm0: { type: 'tpm' } } });
  await vm.start();
}, 180_000);
afterAll(async () => {
  await t?.dispose();
  rmSync(out, { recursive: true, force: true });
});

test('the guest has a TPM 2.0 that answers GetRandom; its state lasts across a restart', async () => {
  const dir = path.join(t.dir, 'instances', vm.name);
  expect((await vm.exec(['sh', '-c', 'cat /sys/class/tpm/tpm0/tpm_version_major && ls /dev/tpm0 /dev/tpmrm0'])).stdout.toString()).toBe('2\n/dev/tpm0\n/dev/tpmrm0\n');
  const r = await tpm(GET_RANDOM_8);
  // TPM_RC_SUCCESS, size 20, then a TPM2B of 8 bytes.
  expect(r.slice(0, 12)).toEqual([0x80, 0x01, 0, 0, 0, 0x14, 0, 0, 0, 0, 0, 8]);
  expect(r).toHaveLength(20);
  const socket = path.join(dir, 'devices', 'swtpm.sock');
  expect((await vm.state()).devices.find((d) => d.name === 'tpm0')).toMatchObject({ type: 'tpm', source: socket, qemuDevice: 'dev-tpm0', tpm: { socket, alive: true } });
  expect(swtpms(dir)).toHaveLength(1);

  const before = await resetCount();
  await vm.restart();
  expect(await resetCount()).toBe(before + 1);
  await vm.stop();
  // swtpm ended with its QEMU.
  expect(swtpms(dir)).toEqual([]);
  expect((await vm.state()).devices.find((d) => d.name === 'tpm0')?.tpm).toEqual({ socket: path.join(dir, 'devices', 'swtpm.sock'), alive: false });
}, 300_000);

test('snapshots, copies and exports carry the TPM state; a restore brings the snapshot\'s back', async () => {
  const dir = path.join(t.dir, 'instances', vm.name);
  const saved = stateFile(dir);
  await vm.snapshots.create('s0');
  await vm.start();
  await resetCount(); // the guest is up and its kernel has started the TPM (start resolves once QEMU runs)
  await vm.stop();
  expect(stateFile(dir).equals(saved)).toBe(false); // that start's TPM Reset was counted in its state
  await vm.snapshots.restore('s0');
  expect(stateFile(dir).equals(saved)).toBe(true);

  const copy = await t.host.copy(vm.name, t.name('tpmcopy'));
  expect(stateFile(path.join(t.dir, 'instances', copy.name)).equals(saved)).toBe(true);
  const archive = path.join(out, 'vm.tar.zst');
  await vm.export(archive);
  const imported = await t.host.import(archive, { name: t.name('tpmimp') });
  expect(stateFile(path.join(t.dir, 'instances', imported.name)).equals(saved)).toBe(true);
  expect(existsSync(path.join(t.dir, 'instances', imported.name, 'snapshots', 's0', 'tpm', 'tpm2-00.permall'))).toBe(true);
  await copy.delete();
  await imported.delete();
}, 300_000);

test('bad input: a second TPM, a TPM plugged into or out of a running VM, a container\'s TPM without the vTPM proxy', async () => {
  await expect(vm.addDevice('tpm1', { type: 'tpm' })).rejects.toThrow(InvalidArgument);
  await expect(vm.addDevice('tpm1', { type: 'tpm', path: '/dev/tpm1' } as never)).rejects.toThrow(/applies to container instances only/);
  await vm.start();
  const devices = { ...vm.devices };
  await expect(vm.removeDevice('tpm0')).rejects.toThrow(/not hot-pluggable/);
  expect(vm.devices).toEqual(devices);
  await vm.stop();
  await vm.removeDevice('tpm0');
  expect(existsSync(path.join(t.dir, 'instances', vm.name, 'tpm'))).toBe(false);
  await expect(vm.removeDevice('tpm0')).rejects.toThrow(/no device named/);

  await expect(t.host.create(t.name('ctpm'), { image: 'busybox', devices: { tpm0: { type: 'tpm', path: '/dev/tpm0' } } })).rejects.toThrow(/"pathrm" is required/);
  const refused = t.host.create(t.name('ctpm'), { image: 'busybox', devices: { tpm0: { type: 'tpm', path: '/dev/tpm0', pathrm: '/dev/tpmrm0' } } });
  if (existsSync('/dev/vtpmx')) await expect(refused).rejects.toThrow(NotSupported);
  else await expect(refused).rejects.toThrow(/CONFIG_TCG_VTPM_PROXY/);
  expect((await t.host.list()).map((i) => i.name)).toEqual([vm.name]);
}, 300_000);
