/**
 * What a VM is launched with: its settings (from its options), its image's files, and QEMU's
 * whole command line (the image's boot, the VM's files and devices, `raw.qemu` last).
 */
import { promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import { type InstanceConfig, splitArgs } from '../../config/options';
import { InvalidArgument, NotFound } from '../../core/errors';
import { exists } from '../../core/fs';
import { qemuOptionValue } from '../../core/guard';
import { parseMemory } from '../../core/units';
import type { Devices } from '../../devices/declarations';
import { nics } from '../../devices/nic';
import type { DeviceSource } from '../../devices/validate';
import type { VmImage, VmImageMeta } from '../../images/meta';
import { readVmImage } from '../../images/vm-image';
import { cloudSeed, writeSeedDir } from '../../instance/cloud-init';
import type { Accel, AccelSetting } from './accel';
import { launchArgs } from './devices';
import type { FileHandle } from 'node:fs/promises';
import { type VmFile, vmFile } from './paths';
import { qemuArgsForImage } from './qemu-args';
import { type VmMemory, vmMemory } from './limits';

const DEFAULT_MEMORY_MIB = 256;
const DEFAULT_CPUS = 1;

/** How a VM is launched, from its options. */
export interface LaunchSettings {
  cpus: number;
  memoryMiB: number;
  accel: AccelSetting;
  raw: string[];
  /** raw.qemu.conf: a QEMU config file's text, read with -readconfig. */
  rawConf?: string;
  /** The memory backend's huge pages and NUMA nodes. */
  memory: VmMemory;
  /** limits.max_bus_ports: the PCIe root ports (unset: the devices and spares). */
  busPorts?: number;
  /** limits.cpu.pin_strategy=auto: vCPU threads pinned once QEMU runs. */
  pin: boolean;
}

/** A VM's launch settings; InvalidArgument for what a VM cannot take. */
export function launchSettings(config: InstanceConfig): LaunchSettings {
  const cpu = config['limits.cpu']?.trim();
  if (cpu !== undefined && !/^\d+$/.test(cpu)) {
    throw new InvalidArgument(`limits.cpu of a VM is a number of vCPUs ("2"); a CPU set (${JSON.stringify(cpu)}) applies to containers only`);
  }
  const memory = config['limits.memory'];
  const memoryMiB = memory === undefined ? DEFAULT_MEMORY_MIB : Math.floor(parseMemory(memory, os.totalmem()) / 2 ** 20);
  const ports = config['limits.max_bus_ports'];
  return {
    cpus: cpu === undefined ? DEFAULT_CPUS : Number(cpu),
    memoryMiB,
    accel: (config['vm.accel'] ?? 'auto') as AccelSetting,
    raw: splitArgs(config['raw.qemu'] ?? ''),
    ...(config['raw.qemu.conf'] ? { rawConf: config['raw.qemu.conf'] } : {}),
    memory: vmMemory(config, memoryMiB),
    ...(ports !== undefined ? { busPorts: Number(ports) } : {}),
    pin: config['limits.cpu.pin_strategy'] === 'auto',
  };
}

/** The image's files, or NotFound naming what is missing (an image broken or removed). */
export async function loadImage(name: string, dir: string, meta: Record<string, unknown>): Promise<VmImage> {
  const img = await readVmImage(dir);
  if (img) return img;
  const files: Record<string, string> = (meta as Partial<VmImageMeta>).files ?? {};
  const missing: string[] = [];
  for (const [what, file] of Object.entries(files)) if (!(await exists(path.join(dir, file)))) missing.push(`${what} (${file})`);
  const detail = missing.length ? `it has no ${missing.join(', ')}` : 'its manifest or files are missing';
  throw new NotFound(`VM image "${name}" in ${dir} is incomplete: ${detail}; remove it and build it again`);
}

/**
 * cloud-init's NoCloud seed as a read-only FAT disk labelled `cidata`: QEMU's vvfat driver shows
 * a directory of the VM's as that disk, so no mkfs, mtools or ISO tool (none is on this host) and
 * no root-only loop mount is needed, and the guest's cloud-init reads the seed in its first stage
 * without waiting for an agent. After the root disk, so the root stays /dev/vda.
 */
async function cloudSeedArgs(vm: LaunchTarget): Promise<string[]> {
  const dir = vmFile(vm.dir, 'cloudSeed');
  // The first NIC is the guest's eth0 (net.ifnames=0: the kernel's names), as LXD's VMs' enp5s0.
  const seed = await cloudSeed(vm.dir, vm.config, vm.name, nics(vm.devices).length ? 'eth0' : undefined);
  if (!seed) {
    await fs.rm(dir, { recursive: true, force: true });
    return [];
  }
  await writeSeedDir(dir, seed);
  return ['-drive', `driver=vvfat,dir=${qemuOptionValue('-drive dir', dir)},fat-type=16,label=cidata,readonly=on,if=virtio`];
}

/** The VM a command line is made for. */
export interface LaunchTarget {
  dir: string;
  name: string;
  machineId?: string;
  /** Its options (the expanded ones): cloud-init's seed is made from them. */
  config: InstanceConfig;
  devices: Devices;
  /** Reads the devices' sources (as probed at create), once their arguments are made. */
  sources(): Promise<Map<string, DeviceSource>>;
}

/**
 * QEMU's arguments for `vm` from `img` on `accel` (starting its devices' host parts: see
 * launchArgs); descriptors QEMU inherits (a macvtap's) are added to `fds`, for the caller to pass.
 */
export async function qemuCommandLine(vm: LaunchTarget, img: VmImage, s: LaunchSettings, accel: Accel, fds: FileHandle[] = []): Promise<string[]> {
  const file = (which: VmFile) => vmFile(vm.dir, which);
  return [
    ...qemuArgsForImage(img, {
      disk: file('disk'),
      qmpSocket: file('qmp'),
      qmpQuerySocket: file('qmpQuery'),
      qgaSocket: file('qga'),
      lxqAgentSocket: file('lxqAgent'),
      serialLog: file('console'),
      serialSocket: file('consoleSocket'),
      memoryMiB: s.memoryMiB,
      cpus: s.cpus,
      accel,
      // The instance name, which the initramfs makes the hostname while the disk has none.
      appendCmdline: `lxq.hostname=${vm.name}${vm.machineId ? ` systemd.machine_id=${vm.machineId}` : ''}`,
    }),
    ...(await cloudSeedArgs(vm)),
    ...(await launchArgs(vm.dir, vm.devices, await vm.sources(), s.memory, s.busPorts, fds)),
    '-name', qemuOptionValue('-name', vm.name),
    '-pidfile', file('pid'),
    ...s.raw,
    ...(await rawConfArgs(vm.dir, s.rawConf)),
  ];
}

/** raw.qemu.conf written beside the VM's other files (root's only), for -readconfig; none: the file goes. */
async function rawConfArgs(dir: string, text: string | undefined): Promise<string[]> {
  const file = path.join(dir, 'qemu.conf');
  if (text === undefined) {
    await fs.rm(file, { force: true });
    return [];
  }
  await fs.writeFile(file, text.endsWith('\n') ? text : `${text}\n`, { mode: 0o600 });
  return ['-readconfig', file];
}
