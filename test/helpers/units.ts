/** Reading the systemd units `lxq system install` writes, as systemd reads them (tests never touch /etc/systemd). */
/** An Exec line's arguments as systemd splits them (double quotes, \\ escapes, %% and $$). */
export function execArgs(unit: string, key: string): string[] {
  const line = unit.split('\n').find((l) => l.startsWith(`${key}=`))!.slice(key.length + 1);
  const args = [...line.matchAll(/"((?:[^"\\]|\\.)*)"|(\S+)/g)].map((m) => (m[1] !== undefined ? m[1].replace(/\\(.)/g, '$1') : m[2]));
  return args.map((a) => a.replace(/%%/g, '%').replace(/\$\$/g, '$'));
}
