/** Parsers of the command line's own forms: key=value, devices, `--wait FOR[=ARG]`, NAME/PATH, milliseconds. */
import { InvalidArgument } from '../core/errors';
import type { DevicesInput } from '../devices/declarations';
import type { WaitFor, WaitOptions } from '../instance/wait';

export function parseKeyValue(kv: string): [string, string] {
  const i = kv.indexOf('=');
  if (i <= 0) throw new InvalidArgument(`bad key=value "${kv}": expected e.g. limits.memory=256MiB`);
  return [kv.slice(0, i), kv.slice(i + 1)];
}

/** `key=value` words as an object. */
export const keyValues = (pairs: string[]): Record<string, string> => Object.fromEntries(pairs.map(parseKeyValue));

/** `keys` set to null: what `unset` asks of an update. */
export const unsetKeys = (keys: string[]): Record<string, null> => Object.fromEntries(keys.map((k) => [k, null]));

/** Commander's collector for a repeatable option. */
export const collect = (v: string, prev: string[]): string[] => [...prev, v];

/** `--wait FOR[=ARG]`: `systemd`, `port=5432`, `log=ready`, `exec=pg_isready -q` (split on spaces). */
export function parseWait(text: string, timeout: number | undefined): WaitOptions {
  const i = text.indexOf('=');
  const condition = (i < 0 ? text : text.slice(0, i)) as WaitFor;
  const arg = i < 0 ? undefined : text.slice(i + 1);
  const argument = arg === undefined ? {} : condition === 'port' ? { port: Number(arg) } : condition === 'log' ? { pattern: arg } : condition === 'exec' ? { command: arg.split(' ').filter(Boolean) } : { [condition]: arg };
  return { for: condition, ...argument, ...(timeout !== undefined ? { timeout } : {}) } as WaitOptions;
}

/** `-d NAME,type=disk,source=/x,path=/mnt`: a device's name, then its keys (LXD's `lxc config device add` in one word). */
export function parseDevice(spec: string): [string, Record<string, string>] {
  const [name, ...pairs] = spec.split(',');
  if (!name || name.includes('=') || pairs.length === 0) {
    throw new InvalidArgument(`bad device "${spec}": expected NAME,type=TYPE,key=value..., e.g. data,type=disk,source=/srv,path=/mnt`);
  }
  const keys = keyValues(pairs);
  if (!keys.type) throw new InvalidArgument(`bad device "${spec}": it needs a type=..., e.g. type=disk`);
  return [name, keys];
}

export const parseDevices = (specs: string[]): DevicesInput => Object.fromEntries(specs.map(parseDevice)) as unknown as DevicesInput;

/** `--timeout MS` of start/stop…: whole milliseconds. */
export function parseMilliseconds(v: string): number {
  if (!/^\d+$/.test(v)) throw new InvalidArgument(`--timeout must be a number of milliseconds, got "${v}"`);
  return Number(v);
}

/** `web1/etc/motd`: an instance's name and a path inside it. */
export function instancePath(spec: string): [string, string] {
  const i = spec.indexOf('/');
  if (i <= 0) throw new InvalidArgument(`bad instance path "${spec}": expected NAME/PATH, e.g. web1/etc/motd`);
  return [spec.slice(0, i), spec.slice(i)];
}
