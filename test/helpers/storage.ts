/** What storage tests look at on the host: its mount points and loop devices below a test's directory, released after a failure. */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';

export const sh = (cmd: string): string => execFileSync('sh', ['-c', cmd], { encoding: 'utf8' });

/** The host's mount points at or below `dir`. */
export function mountsUnder(dir: string): string[] {
  return readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .map((l) => l.split(' ')[4])
    .filter((p) => p !== undefined && (p === dir || p.startsWith(dir + '/')));
}

/** Loop devices whose file is below `dir`. */
export function loopsUnder(dir: string): string[] {
  return sh('losetup --list --noheadings --output NAME,BACK-FILE').split('\n').filter((l) => l.includes(dir));
}

/** Whatever a failed test left mounted or attached below `dir`, released (innermost mounts first). */
export function releaseUnder(dir: string): void {
  for (const p of mountsUnder(dir).sort((a, b) => b.length - a.length)) sh(`umount -l '${p}' || true`);
  for (const l of loopsUnder(dir)) sh(`losetup -d ${l.split(' ')[0]} 2>/dev/null || true`);
}
