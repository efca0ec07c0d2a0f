/** LXD's raw group: raw.* options, checked so that they cannot take over what lxq manages. */
import type { OptionSpec } from './spec';

/** liblxc keys that lxq sets itself: overriding them could point destroy at files outside the instance. */
const LXQ_OWNED_LXC_KEYS = ['lxc.rootfs', 'lxc.log.file', 'lxc.uts.name', 'lxc.idmap', 'lxc.console.logfile'];

function rawLxcValidator(value: string): void {
  for (const line of value.split('\n')) {
    const t = line.trim();
    if (!t || t.startsWith('#')) continue;
    const m = /^(lxc\.[A-Za-z0-9_.-]+)\s*=\s*(.*)$/.exec(t);
    if (!m) throw new Error(`each line must read "lxc.<key> = <value>", got ${JSON.stringify(t)}`);
    if (LXQ_OWNED_LXC_KEYS.some((k) => m[1] === k || m[1].startsWith(k + '.'))) {
      throw new Error(`${m[1]} is managed by lxq (${LXQ_OWNED_LXC_KEYS.join(', ')} cannot be set through raw.lxc)`);
    }
  }
}

function rawQemuValidator(value: string): void {
  const args = splitArgs(value);
  const forbidden = ['-qmp', '-chardev', '-monitor', '-daemonize', '-pidfile', '-serial', '-kernel', '-initrd'];
  for (const a of args) {
    if (forbidden.includes(a)) throw new Error(`${a} is managed by lxq and cannot be set through raw.qemu`);
  }
}

/** Splits a raw.qemu string into arguments: whitespace-separated, with '…' or "…" quoting. */
export function splitArgs(value: string): string[] {
  const out: string[] = [];
  const re = /"([^"]*)"|'([^']*)'|(\S+)/g;
  let m: RegExpExecArray | null;
  while ((m = re.exec(value))) out.push(m[1] ?? m[2] ?? m[3]);
  return out;
}

export const RAW_OPTIONS: readonly OptionSpec[] = [
  {
    key: 'raw.lxc',
    type: 'lines',
    condition: 'container',
    live: false,
    description: 'Raw liblxc configuration lines ("lxc.key = value"), appended to the generated configuration.',
    validate: rawLxcValidator,
  },
  {
    key: 'raw.qemu',
    type: 'string',
    condition: 'vm',
    live: false,
    description: 'Extra QEMU command-line arguments (the QMP, agent, serial and kernel arguments are lxq\'s).',
    validate: rawQemuValidator,
  },
];
