/**
 * The last guard of every generated file (the liblxc config, dnsmasq's hosts file and command
 * line, the nftables ruleset, QEMU's command line): whatever the checks before it let through,
 * no value can add a line, a key or an option there. Each writer calls these on what it writes;
 * input validators may call them too, for an earlier refusal with the same words.
 */
import { InvalidArgument } from './errors';

/** The name of a C0 control character or DEL, as the error message shows it. */
function describe(code: number): string {
  const named: Record<number, string> = { 0: 'NUL', 9: 'tab', 10: 'newline', 13: 'carriage return', 0x7f: 'DEL' };
  return `${named[code] ?? 'control character'} (U+${code.toString(16).toUpperCase().padStart(4, '0')})`;
}

/**
 * Throws InvalidArgument when `value` holds a C0 control character (U+0000-U+001F) or DEL:
 * `\n`, `\r` and `\0` always; a tab only unless `allowTab` (where the format takes it as
 * ordinary whitespace inside a value). `where` names the file and key, e.g.
 * `the liblxc config: "lxc.environment"`. Returns the value.
 *
 * @example
 * ```ts
 * refuseControlChars('the liblxc config: "lxc.environment"', 'A=1\nlxc.hook.pre-start = /bin/sh'); // throws
 * ```
 */
export function refuseControlChars(where: string, value: string, options: { allowTab?: boolean } = {}): string {
  for (let i = 0; i < value.length; i++) {
    const code = value.charCodeAt(i);
    if ((code < 0x20 && !(code === 9 && options.allowTab)) || code === 0x7f) {
      throw new InvalidArgument(`${where}: ${JSON.stringify(value)} holds a ${describe(code)} at offset ${i}; it would change what the generated file says`);
    }
  }
  return value;
}

/**
 * A value inside a QEMU option string (`key=value,key=value`): control characters refused, and
 * each `,` doubled, which is how QEMU takes a comma as part of the value rather than as the start
 * of another key.
 *
 * @example
 * ```ts
 * `file=${qemuOptionValue('-drive file', '/srv/a,b.qcow2')}` // "file=/srv/a,,b.qcow2"
 * ```
 */
export function qemuOptionValue(where: string, value: string): string {
  return refuseControlChars(`the QEMU command line: ${where}`, value).replace(/,/g, ',,');
}

/**
 * A field of a comma-separated line (dnsmasq's `dhcp-hostsfile`, a `--dhcp-range`): control
 * characters and `,` refused (dnsmasq has no escape for a comma).
 */
export function refuseInField(where: string, value: string): string {
  refuseControlChars(where, value);
  if (value.includes(',')) throw new InvalidArgument(`${where}: ${JSON.stringify(value)} holds a ","; it would add a field`);
  return value;
}
