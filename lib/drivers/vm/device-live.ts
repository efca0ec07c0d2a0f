/**
 * A VM's devices as they are now, for state(): each NIC's guest interface (by the MAC lxq gave
 * it, as the agent reports it) and its tap or macvtap on the host, each disk's block node as
 * QEMU holds it (QMP) or its virtiofs share's helper, the TPM's swtpm.
 */
import type { Devices } from '../../devices/declarations';
import { byHwaddr, nicLive } from '../../instance/device-live';
import type { BlockState, DeviceState, DriverState } from '../../instance/instance';
import type { QmpCommands } from '../../qmp';
import { qemuNodeName, shareLive } from './devices';
import { vmHostEnd } from './nics';
import { swtpmAlive, tpmSocket } from './tpm';

/** QEMU's block nodes and the devices holding them, or nothing if QEMU does not answer. */
export interface BlockQueries {
  block(): Promise<QmpCommands['query-block']['returns']>;
  nodes(): Promise<QmpCommands['query-named-block-nodes']['returns']>;
}

/** A disk's block state: lxq's node `lxq-<device>` (the root disk: the node holding `rootFile`). */
function blockOf(name: string, root: boolean, rootFile: string, block: QmpCommands['query-block']['returns'], nodes: QmpCommands['query-named-block-nodes']['returns']): BlockState | null {
  if (root) {
    const held = block.find((b) => b.inserted?.file === rootFile)?.inserted;
    return held ? { kind: 'block', node: held['node-name'] ?? '', file: held.file, format: held.drv, readOnly: held.ro, attached: true } : null;
  }
  const node = nodes.find((n) => n['node-name'] === qemuNodeName(name));
  if (!node) return null;
  const attached = block.some((b) => b.inserted?.['node-name'] === node['node-name']);
  return { kind: 'block', node: node['node-name'], file: node.file, format: node.drv, readOnly: node.ro, attached };
}

/** Adds the live status of the VM's devices to `states` (`s`: its driver state, read just before; `rootFile`: its root disk's image). */
export async function vmLiveDevices(vmDir: string, rootFile: string, states: DeviceState[], devices: Devices, s: DriverState, qmp: BlockQueries): Promise<void> {
  const running = s.pid !== null;
  const disks = running && states.some((d) => d.type === 'disk');
  const [block, nodes] = disks ? await Promise.all([qmp.block().catch(() => []), qmp.nodes().catch(() => [])]) : [[], []];
  for (const st of states) {
    const d = devices[st.name];
    if (d.type === 'tpm') st.tpm = { socket: tpmSocket(vmDir), alive: await swtpmAlive(vmDir) };
    if (!running) continue;
    if (d.type === 'nic') st.nic = await nicLive(d, byHwaddr(s.network.interfaces, d.hwaddr), vmHostEnd(vmDir, st.name, d));
    else if (d.type === 'disk' && d.path !== undefined && d.path !== '/') st.block = { kind: 'virtiofs', ...(await shareLive(vmDir, st.name)) };
    else if (d.type === 'disk') st.block = blockOf(st.name, d.path === '/', rootFile, block, nodes);
  }
}
