/**
 * `lxq system install|uninstall`: a systemd unit that runs `lxq autostart start` at boot and
 * `lxq autostart stop` at shutdown for one host directory (LXD's daemon does both at its own
 * start and stop). The unit runs this same lxq (Node, its flags, this CLI script) with the same
 * --host and --images. With the default unit directory systemd is told (daemon-reload, enable);
 * a unit written elsewhere (--unit-dir) is left to the caller.
 */
import { promises as fs, realpathSync } from 'node:fs';
import * as path from 'node:path';

import { InvalidArgument } from '../core/errors';
import { writeFileAtomic } from '../core/fs';
import { run } from '../core/run';

export const SYSTEM_UNIT_DIR = '/etc/systemd/system';
export const DEFAULT_UNIT = 'lxq.service';
/** The first line of every unit lxq writes: a unit without it is not lxq's to replace or remove. */
const MARK = '# Written by `lxq system install`; `lxq system uninstall` removes it.';

export interface UnitOptions {
  unit: string;
  unitDir: string;
  host: string;
  images?: string;
}

/** One argument as systemd reads an Exec line: quoted when needed, with % and $ doubled (systemd's specifiers and variables). */
function quote(arg: string): string {
  const escaped = arg.replace(/%/g, '%%').replace(/\$/g, '$$$$');
  return /^[A-Za-z0-9_@%+=:,./-]+$/.test(escaped) ? escaped : `"${escaped.replace(/\\/g, '\\\\').replace(/"/g, '\\"')}"`;
}

function checkUnit(o: UnitOptions): string {
  if (!/^[A-Za-z0-9:_.@-]+\.service$/.test(o.unit)) throw new InvalidArgument(`unit name must be letters, digits, ":_.@-" ending in .service, got ${JSON.stringify(o.unit)}`);
  for (const v of [o.unitDir, o.host, o.images ?? '']) if (/[\n\r]/.test(v)) throw new InvalidArgument('paths cannot contain newlines');
  return path.join(path.resolve(o.unitDir), o.unit);
}

/** The unit's text: this process's lxq run again with `autostart start` and `autostart stop`. */
export function unitText(o: UnitOptions): string {
  const lxq = [process.execPath, ...process.execArgv, realpathSync(process.argv[1]), '--host', path.resolve(o.host), ...(o.images ? ['--images', path.resolve(o.images)] : [])];
  const exec = (verb: string) => [...lxq, 'autostart', verb].map(quote).join(' ');
  return [
    MARK,
    '[Unit]',
    `Description=lxq: the instances of ${path.resolve(o.host)} started at boot and stopped cleanly at shutdown (boot.* keys)`,
    'After=local-fs.target network.target',
    '',
    '[Service]',
    'Type=oneshot',
    'RemainAfterExit=yes',
    `ExecStart=${exec('start')}`,
    `ExecStop=${exec('stop')}`,
    // The instances' own processes (runners, QEMU) are not the service's to kill: ExecStop stops them.
    'KillMode=process',
    'TimeoutStartSec=infinity',
    'TimeoutStopSec=600',
    '',
    '[Install]',
    'WantedBy=multi-user.target',
    '',
  ].join('\n');
}

async function ours(file: string): Promise<boolean | undefined> {
  const text = await fs.readFile(file, 'utf8').catch((e) => (e.code === 'ENOENT' ? undefined : Promise.reject(e)));
  return text === undefined ? undefined : text.startsWith(MARK + '\n');
}

/** Writes the unit (replacing only one lxq wrote); tells systemd when it is in systemd's directory. Returns what was done, for the user. */
export async function installUnit(o: UnitOptions): Promise<string> {
  const file = checkUnit(o);
  if ((await ours(file)) === false) throw new InvalidArgument(`${file} exists and was not written by lxq: not replaced`);
  await fs.mkdir(path.dirname(file), { recursive: true });
  await writeFileAtomic(file, unitText(o), 0o644);
  if (path.dirname(file) !== SYSTEM_UNIT_DIR) return `wrote ${file} (not in ${SYSTEM_UNIT_DIR}: systemd was not told)`;
  await run('systemctl', ['daemon-reload']);
  await run('systemctl', ['enable', o.unit]);
  return `wrote ${file}; enabled ${o.unit} (started at the next boot, or now with: systemctl start ${o.unit})`;
}

/** Removes a unit lxq wrote (disabled first when in systemd's directory). */
export async function uninstallUnit(o: UnitOptions): Promise<string> {
  const file = checkUnit(o);
  const mine = await ours(file);
  if (mine === undefined) return `${file} does not exist: nothing to do`;
  if (!mine) throw new InvalidArgument(`${file} was not written by lxq: not removed`);
  const systemd = path.dirname(file) === SYSTEM_UNIT_DIR;
  if (systemd) await run('systemctl', ['disable', o.unit]);
  await fs.rm(file);
  if (systemd) await run('systemctl', ['daemon-reload']);
  return `removed ${file}`;
}
