/**
 * `lxq system install|uninstall`: a systemd unit that runs `lxq autostart start` at boot and
 * `lxq autostart stop` at shutdown for one host directory (LXD's daemon does both at its own
 * start and stop), and one that runs `lxq system serve` (the snapshot scheduler). The units run
 * this same lxq (Node, its flags, this CLI script) with the same --host and --images. With the default unit directory systemd is told (daemon-reload, enable);
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

/** The scheduler's unit beside `unit`: lxq.service → lxq-snapshots.service. */
export const schedulerUnit = (unit: string): string => unit.replace(/\.service$/, '-snapshots.service');

/** This process's lxq (Node, its flags, this CLI script) with the host's options, then `verb`, as an Exec line. */
function execLine(o: UnitOptions, ...verb: string[]): string {
  const lxq = [process.execPath, ...process.execArgv, realpathSync(process.argv[1]), '--host', path.resolve(o.host), ...(o.images ? ['--images', path.resolve(o.images)] : [])];
  return [...lxq, ...verb].map(quote).join(' ');
}

/**
 * The units' texts: the boot unit (`autostart start` at boot, `autostart stop` at shutdown: a
 * oneshot, so that nothing but the machine's shutdown or the user's `systemctl stop` stops the
 * instances) and the scheduler's (`system serve`, restarted if it fails; its end stops nothing).
 */
export function unitTexts(o: UnitOptions): Record<string, string> {
  const host = path.resolve(o.host);
  return {
    [o.unit]: [
      MARK,
      '[Unit]',
      `Description=lxq: the instances of ${host} started at boot and stopped cleanly at shutdown (boot.* keys)`,
      'After=local-fs.target network.target',
      '',
      '[Service]',
      'Type=oneshot',
      'RemainAfterExit=yes',
      `ExecStart=${execLine(o, 'autostart', 'start')}`,
      `ExecStop=${execLine(o, 'autostart', 'stop')}`,
      // The instances' own processes (runners, QEMU) are not the service's to kill: ExecStop stops them.
      'KillMode=process',
      'TimeoutStartSec=infinity',
      'TimeoutStopSec=600',
      '',
      '[Install]',
      'WantedBy=multi-user.target',
      '',
    ].join('\n'),
    [schedulerUnit(o.unit)]: [
      MARK,
      '[Unit]',
      `Description=lxq: the snapshot schedules of ${host} (snapshots.* keys)`,
      `After=${o.unit}`,
      '',
      '[Service]',
      'Type=simple',
      `ExecStart=${execLine(o, 'system', 'serve')}`,
      'KillMode=process',
      'Restart=on-failure',
      '',
      '[Install]',
      'WantedBy=multi-user.target',
      '',
    ].join('\n'),
  };
}

async function ours(file: string): Promise<boolean | undefined> {
  const text = await fs.readFile(file, 'utf8').catch((e) => (e.code === 'ENOENT' ? undefined : Promise.reject(e)));
  return text === undefined ? undefined : text.startsWith(MARK + '\n');
}

/** Writes the units (replacing only ones lxq wrote); tells systemd when they are in systemd's directory. Returns what was done, for the user. */
export async function installUnit(o: UnitOptions): Promise<string> {
  const file = checkUnit(o);
  const texts = unitTexts(o);
  const files = Object.keys(texts).map((u) => path.join(path.dirname(file), u));
  for (const f of files) if ((await ours(f)) === false) throw new InvalidArgument(`${f} exists and was not written by lxq: not replaced`);
  await fs.mkdir(path.dirname(file), { recursive: true });
  for (const [u, text] of Object.entries(texts)) await writeFileAtomic(path.join(path.dirname(file), u), text, 0o644);
  if (path.dirname(file) !== SYSTEM_UNIT_DIR) return `wrote ${files.join(' and ')} (not in ${SYSTEM_UNIT_DIR}: systemd was not told)`;
  await run('systemctl', ['daemon-reload']);
  await run('systemctl', ['enable', ...Object.keys(texts)]);
  return `wrote ${files.join(' and ')}; enabled ${Object.keys(texts).join(' and ')} (started at the next boot, or now with systemctl start)`;
}

/** Removes the units lxq wrote (disabled first when in systemd's directory). */
export async function uninstallUnit(o: UnitOptions): Promise<string> {
  const file = checkUnit(o);
  const units = [o.unit, schedulerUnit(o.unit)];
  const files = units.map((u) => path.join(path.dirname(file), u));
  const mine = await Promise.all(files.map(ours));
  if (mine.every((m) => m === undefined)) return `${files.join(' and ')} do not exist: nothing to do`;
  mine.forEach((m, i) => {
    if (m === false) throw new InvalidArgument(`${files[i]} was not written by lxq: not removed`);
  });
  const present = units.filter((_, i) => mine[i]);
  const systemd = path.dirname(file) === SYSTEM_UNIT_DIR;
  if (systemd) await run('systemctl', ['disable', ...present]);
  for (const u of present) await fs.rm(path.join(path.dirname(file), u));
  if (systemd) await run('systemctl', ['daemon-reload']);
  return `removed ${present.map((u) => path.join(path.dirname(file), u)).join(' and ')}`;
}
